// Deterministic reductions shared by the CUDA kernels: a block sum in double (CUB) and a
// second pass that sums per-block partials row by row. Same input, same bits, every run:
// no atomics, and the order depends only on the sizes.
#pragma once
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "check.h"
#include "reduce_sizes.h"

namespace cudarts::cuda {

// Sum over the 32 lanes of a warp; every lane gets the same bits (butterfly of commutative adds).
// For the warp-per-row kernels, which need the result in every lane.
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a block of kReduceBlock threads with CUB's BlockReduce (warp reductions, then the
// warp totals in order: the order depends only on the block size, so the bits do not change
// from run to run); the result is returned to every thread. Every thread of the block must
// call it (it synchronises).
__device__ __forceinline__ double block_sum(double v) {
  using Reduce = cub::BlockReduce<double, kReduceBlock, cub::BLOCK_REDUCE_WARP_REDUCTIONS>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ double total;
  const double sum = Reduce(storage).Sum(v);  // valid in thread 0
  if (threadIdx.x == 0) total = sum;
  __syncthreads();
  const double result = total;
  __syncthreads();  // storage and total may be reused by the next call
  return result;
}

// Second pass: out[r] = float(scale * sum_c partials[r * cols + c]) for r < rows, or
// float(sqrt(sum)) when take_sqrt. One block per row, fixed order. Queued on `stream`.
void launch_sum_partials(const double* partials, int64_t rows, int64_t cols, double scale,
                         bool take_sqrt, float* out, cudaStream_t stream);

}  // namespace cudarts::cuda
