/* include/camserve/cuda.h: is there a usable GPU?  Compiled in every build
 * (cmake/cuda.cmake); without CS_HAVE_CUDA the answers say so, and the GPU
 * image path (gpuprep.h, src/cuda/gpuprep.c) answers CS_EUNSUPPORTED. */
#include "camserve/cuda.h"
#include "camserve/gpuprep.h"

#include <stdio.h>

#ifdef CS_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

int cs_cuda_built(void) { return 1; }

cs_status cs_cuda_device_count(int *count, cs_error *err) {
    *count = 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: clear it for later calls */
        return cs_errorf(err, CS_EBACKEND, "no usable CUDA device: %s", cudaGetErrorString(e));
    }
    *count = n;
    return CS_OK;
}

cs_status cs_cuda_device_describe(int device, char *buf, size_t len, cs_error *err) {
    struct cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return cs_errorf(err, CS_EBACKEND, "CUDA device %d: %s", device, cudaGetErrorString(e));
    }
    snprintf(buf, len, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return CS_OK;
}

void cs_cuda_versions(char *buf, size_t len) {
    int rt = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
    snprintf(buf, len, "CUDA runtime %d, cuDNN %zu, cuBLAS built %d", rt, cudnnGetVersion(),
             CUBLAS_VERSION);
}

#else

int cs_cuda_built(void) { return 0; }

cs_status cs_cuda_device_count(int *count, cs_error *err) {
    *count = 0;
    return cs_errorf(err, CS_EUNSUPPORTED, "camserve was built without CUDA support");
}

cs_status cs_cuda_device_describe(int device, char *buf, size_t len, cs_error *err) {
    (void)device;
    if (len) buf[0] = 0;
    return cs_errorf(err, CS_EUNSUPPORTED, "camserve was built without CUDA support");
}

void cs_cuda_versions(char *buf, size_t len) { snprintf(buf, len, "built without CUDA"); }

/* include/camserve/gpuprep.h without CUDA */
cs_status cs_gpuprep_open(int device, cs_gpuprep **out, cs_error *err) {
    (void)device;
    *out = NULL;
    return cs_errorf(err, CS_EUNSUPPORTED, "camserve was built without CUDA support");
}

void cs_gpuprep_close(cs_gpuprep *g) { (void)g; }

cs_status cs_gpuprep_run(cs_gpuprep *g, const void *jpeg, size_t len, const cs_img_limits *lim,
                         const cs_preproc *p, cs_gpuprep_out *out, cs_error *err) {
    (void)g, (void)jpeg, (void)len, (void)lim, (void)p, (void)out;
    return cs_errorf(err, CS_EUNSUPPORTED, "camserve was built without CUDA support");
}

#endif
