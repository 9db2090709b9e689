/* The six cuBLAS functions the CUDA backend calls, through a table filled
 * on first use (cublas_lazy.c explains why).  Host C only. */
#ifndef CS_CUBLAS_LAZY_H
#define CS_CUBLAS_LAZY_H

#include "camserve/common.h"

#include <cublas_v2.h>

typedef struct cs_cublas_api {
    int ok;
    cublasStatus_t (*create)(cublasHandle_t *h);
    cublasStatus_t (*destroy)(cublasHandle_t h);
    cublasStatus_t (*set_stream)(cublasHandle_t h, cudaStream_t s);
    cublasStatus_t (*set_workspace)(cublasHandle_t h, void *ws, size_t bytes);
    const char *(*status_string)(cublasStatus_t s);
    cublasStatus_t (*gemm_ex)(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                              int k, const void *alpha, const void *a, cudaDataType at, int lda,
                              const void *b, cudaDataType bt, int ldb, const void *beta, void *c,
                              cudaDataType ct, int ldc, cublasComputeType_t comp, cublasGemmAlgo_t algo);
} cs_cublas_api;

/* The table, loading libcublas the first time; NULL with err set when it
 * cannot be loaded.  Thread-safe. */
const cs_cublas_api *cs_cublas(cs_error *err);
/* cublasGetStatusString, or a placeholder when cuBLAS is not loaded. */
const char *cs_cublas_status(cublasStatus_t s);

#endif
