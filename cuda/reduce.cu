// Second pass of the deterministic reductions (see reduce.cuh): per-row sums of partials.
// Contract: out (rows) is written (=); partials (rows, cols) are read in a fixed order.
#include <cmath>

#include "reduce.cuh"

namespace cudarts::cuda {

namespace {

// out[row] = scale * sum(partials[row, :]) (or its square root); one block per row.
__global__ void sum_partials_kernel(const double* partials, int64_t cols, double scale,
                                    bool take_sqrt, float* out) {
  const double* row = partials + blockIdx.x * cols;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += kReduceBlock) acc += row[c];
  const double total = block_sum(acc);
  if (threadIdx.x == 0)
    out[blockIdx.x] = static_cast<float>(take_sqrt ? sqrt(total) : scale * total);
}

}  // namespace

void launch_sum_partials(const double* partials, int64_t rows, int64_t cols, double scale,
                         bool take_sqrt, float* out, cudaStream_t stream) {
  if (rows == 0) return;
  CUDARTS_CHECK(rows <= 0x7fffffff, "sum_partials: ", rows, " rows do not fit one grid");
  sum_partials_kernel<<<static_cast<unsigned>(rows), kReduceBlock, 0, stream>>>(
      partials, cols, scale, take_sqrt, out);
  CUDARTS_LAUNCH_CHECK("sum_partials_kernel", "(", rows, " rows x ", cols, " partials)");
}

}  // namespace cudarts::cuda
