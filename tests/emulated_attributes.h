// The CUDA attribute macros for kernels compiled as host code under tests/cuda_emulation.h
// (include after it: it includes cuda_runtime.h, which defines them): kernels and device
// functions become plain functions, a block's __shared__ arrays one static copy that the
// block's fibers share, and CUDARTS_KERNEL_EMULATION tells the kernel headers to take
// cuda_emulation.h's block_sum instead of reduce.cuh's.
#undef __global__
#undef __device__
#undef __shared__
#undef __grid_constant__
#define __global__
#define __device__
#define __shared__ static
#define __grid_constant__
#define CUDARTS_KERNEL_EMULATION

// The device math functions the kernels call unqualified, as the host library has them.
#include <cmath>
using std::isfinite;
using std::isnan;
