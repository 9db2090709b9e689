/* Launch helpers shared by the .cu files of src/cuda: the block size, the
 * grid for n elements, the stream cast and the launch status.  Every
 * kernel here is a grid-stride loop (GRID_LOOP), so capping the grid loses
 * nothing. */
#ifndef CS_CUDA_LAUNCH_CUH
#define CS_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/cuda_internal.h"

namespace cs_launch {

const int kThreads = 256;

inline unsigned blocks_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20; /* the grid-stride loops cover the rest */
    return (unsigned)b;
}

inline cudaStream_t S(cs_cuda_stream s) { return (cudaStream_t)s; }

inline int launched() { return (int)cudaGetLastError(); }

} // namespace cs_launch

#define GRID_LOOP(i, n)                                                                  \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);            \
         i += (int64_t)gridDim.x * blockDim.x)

#endif
