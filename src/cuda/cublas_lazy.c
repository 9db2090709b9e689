/* cuBLAS, loaded on first use.
 *
 * libcublas pulls in libcublasLt, which carries ~350,000 relocations: linked
 * at build time, the dynamic loader spent ~110 ms on them at every start of
 * the binary -- every CLI call, every `serve` restart -- GPU or not.  The
 * backend uses six cuBLAS functions; it calls them through the table below,
 * filled by dlopen() when the first CUDA session is made, so a CPU run never
 * maps cuBLAS at all.
 *
 * The references to the real functions are weak: a program that defines
 * them itself (tests/unit/test_cuda_emul.c emulates cuBLAS on the CPU) gets
 * its own definitions, and a program that does not (every real binary:
 * cuBLAS is not linked) sees NULL and loads the library. */
#include "cuda/cublas_lazy.h"

#include <string.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#pragma weak cublasCreate_v2
#pragma weak cublasDestroy_v2
#pragma weak cublasSetStream_v2
#pragma weak cublasSetWorkspace_v2
#pragma weak cublasGetStatusString
#pragma weak cublasGemmEx

#define CS_STR_(x) #x
#define CS_STR(x) CS_STR_(x)

static cs_cublas_api g_api;
static char g_why[512];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* dlsym returns an object pointer; POSIX guarantees it converts to a
 * function pointer, ISO C does not say so: go through memcpy. */
static int sym(void *lib, const char *name, void *fnptr, size_t size) {
    void *p = dlsym(lib, name);
    if (!p) return 0;
    memcpy(fnptr, &p, size);
    return 1;
}

static void load(void) {
    if (cublasGemmEx) { /* defined in this program */
        g_api.create = cublasCreate_v2;
        g_api.destroy = cublasDestroy_v2;
        g_api.set_stream = cublasSetStream_v2;
        g_api.set_workspace = cublasSetWorkspace_v2;
        g_api.status_string = cublasGetStatusString;
        g_api.gemm_ex = cublasGemmEx;
        g_api.ok = 1;
        return;
    }
    /* the major version the backend was compiled against, then any */
    static const char *const names[] = {"libcublas.so." CS_STR(CUBLAS_VER_MAJOR), "libcublas.so"};
    void *lib = NULL;
    const char *e = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!lib) e = dlerror();
    }
    if (!lib) {
        snprintf(g_why, sizeof g_why, "cannot load cuBLAS (%s): %s", names[0], e ? e : "?");
        return;
    }
    int ok = sym(lib, "cublasCreate_v2", &g_api.create, sizeof g_api.create) &&
             sym(lib, "cublasDestroy_v2", &g_api.destroy, sizeof g_api.destroy) &&
             sym(lib, "cublasSetStream_v2", &g_api.set_stream, sizeof g_api.set_stream) &&
             sym(lib, "cublasSetWorkspace_v2", &g_api.set_workspace, sizeof g_api.set_workspace) &&
             sym(lib, "cublasGetStatusString", &g_api.status_string, sizeof g_api.status_string) &&
             sym(lib, "cublasGemmEx", &g_api.gemm_ex, sizeof g_api.gemm_ex);
    if (!ok) {
        snprintf(g_why, sizeof g_why, "%s lacks a function camserve needs", names[0]);
        dlclose(lib);
        return;
    }
    g_api.ok = 1; /* the library stays loaded for the life of the process */
}

const cs_cublas_api *cs_cublas(cs_error *err) {
    pthread_once(&g_once, load);
    if (g_api.ok) return &g_api;
    cs_errorf(err, CS_EBACKEND, "%s", g_why);
    return NULL;
}

const char *cs_cublas_status(cublasStatus_t s) {
    pthread_once(&g_once, load);
    return g_api.ok ? g_api.status_string(s) : "cuBLAS not loaded";
}
