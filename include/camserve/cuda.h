/* camserve CUDA backend: what a caller may ask about GPUs directly.
 *
 * Models and sessions are put on a GPU through the engine
 * (cs_model_options.device = "cuda:N", engine.h); this header only answers
 * whether that can work here.  In a build without CUDA every function
 * exists and reports that.  All functions are thread-safe. */
#ifndef CAMSERVE_CUDA_H
#define CAMSERVE_CUDA_H

#include "camserve/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when camserve was compiled with the CUDA backend, else 0. */
int cs_cuda_built(void);

/* Number of usable CUDA devices.  Fails (CS_EUNSUPPORTED) in a build
 * without CUDA and (CS_EBACKEND, with the CUDA runtime's message) where the
 * driver or the device cannot be used. */
cs_status cs_cuda_device_count(int *count, cs_error *err);

/* The device's name ("NVIDIA H100 80GB HBM3"), its compute capability and
 * memory, into buf (NUL-terminated, truncated to len). */
cs_status cs_cuda_device_describe(int device, char *buf, size_t len, cs_error *err);

/* Versions the binary was built against and runs with, for reports:
 * "CUDA runtime 13000, cuDNN 91300, cuBLAS 130000" (0 where unknown). */
void cs_cuda_versions(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
