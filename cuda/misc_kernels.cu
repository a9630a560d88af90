// Global average pooling, channel concat / split and the softmax cross-entropy loss.
// Contract (ops.h): every output is written (=). Reductions are deterministic (fixed order,
// double accumulation, no atomics). CPU twins in src/cpu/cpu_backend.cpp.
// softmax_xent: a label outside [0, K) (which the CPU reference rejects with an exception)
// cannot be reported from the device without a host read; it makes the loss NaN and the
// dlogits row of that sample NaN, and never reads out of bounds.
#include <math_constants.h>

#include <algorithm>
#include <cmath>

#include "cuda_backend.h"
#include "reduce.cuh"

namespace cudarts::cuda {

namespace {

constexpr int kBlock = 256;
constexpr int kRowsPerBlock = kBlock / kWarp;  // warp-per-row kernels

int grid_for(int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 65535 * 8));
}

int row_grid(int64_t rows) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  CUDARTS_CHECK(blocks <= 0x7fffffff, "cuda backend: ", rows, " rows do not fit one grid");
  return static_cast<int>(std::max<int64_t>(blocks, 1));
}

// y[r] = mean of x[r, 0 .. hw) in double; one warp per (n, c) row (CPU: global_avgpool_fwd).
__global__ void row_mean_kernel(const float* x, int64_t rows, int64_t hw, float* y) {
  const int64_t r = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp;
  if (r >= rows) return;  // whole warps leave together
  const int lane = threadIdx.x % kWarp;
  double s = 0.0;
  for (int64_t j = lane; j < hw; j += kWarp) s += x[r * hw + j];
  s = warp_sum(s);
  if (lane == 0) y[r] = static_cast<float>(s / static_cast<double>(hw));
}

// dx[r, j] = dy[r] / hw (CPU: global_avgpool_bwd, with inv computed in float the same way).
__global__ void spread_mean_kernel(const float* dy, int64_t rows, int64_t hw, float inv,
                                   float* dx) {
  const int64_t n = rows * hw;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i / hw] * inv;
}

// Per row of logits (K): first argmax, log-sum-exp in double, the row's loss and hit, and
// dlogits = (softmax - onehot) / N. One warp per row (CPU: the row loop of softmax_xent).
__global__ void softmax_xent_rows_kernel(const float* logits, const int32_t* labels, int64_t n,
                                         int64_t k, float* dlogits, double* row_loss,
                                         double* row_hit) {
  const int64_t r = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / kWarp;
  if (r >= n) return;  // whole warps leave together
  const int lane = threadIdx.x % kWarp;
  const float* z = logits + r * k;

  // First maximum: the larger value wins, equal values go to the lower index (-1: no element).
  int64_t arg = lane < k ? lane : -1;
  for (int64_t j = lane + kWarp; j < k; j += kWarp)
    if (z[j] > z[arg]) arg = j;
  for (int o = kWarp / 2; o > 0; o >>= 1) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, arg, o);
    if (other >= 0 && (arg < 0 || z[other] > z[arg] || (z[other] == z[arg] && other < arg)))
      arg = other;
  }
  arg = __shfl_sync(0xffffffffu, arg, 0);
  const double m = z[arg];

  double s = 0.0;
  for (int64_t j = lane; j < k; j += kWarp) s += exp(double(z[j]) - m);
  s = __shfl_sync(0xffffffffu, warp_sum(s), 0);

  const int32_t label = labels[r];
  const bool valid = label >= 0 && label < k;
  for (int64_t j = lane; j < k; j += kWarp) {
    const double prob = exp(double(z[j]) - m) / s;
    dlogits[r * k + j] =
        valid ? static_cast<float>((prob - (j == label ? 1.0 : 0.0)) / double(n)) : CUDART_NAN_F;
  }
  if (lane == 0) {
    row_loss[r] = valid ? m + log(s) - double(z[label]) : CUDART_NAN;
    row_hit[r] = valid && arg == label ? 1.0 : 0.0;
  }
}

// loss = sum(row_loss) / N, correct = sum(row_hit), in a fixed order; one block.
__global__ void softmax_xent_total_kernel(const double* row_loss, const double* row_hit, int64_t n,
                                          float* loss, float* correct) {
  double l = 0.0, h = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceBlock) {
    l += row_loss[i];
    h += row_hit[i];
  }
  l = block_sum(l);
  h = block_sum(h);
  if (threadIdx.x == 0) {
    loss[0] = static_cast<float>(l / double(n));
    correct[0] = static_cast<float>(h);
  }
}

// Copies channel blocks between a whole (N, C, H, W) tensor and its parts (N, C_k, H, W):
// one strided 2-D copy per part, N rows of C_k * HW floats with pitches C * HW and C_k * HW.
template <class Part>
void move_channels(const std::vector<Part*>& parts, float* whole, int64_t n, int64_t c, int64_t hw,
                   bool to_whole, cudaStream_t stream, const char* op) {
  int64_t c0 = 0;
  for (Part* t : parts) {
    const int64_t ck = t->dim(1);
    const size_t width = size_t(ck * hw) * sizeof(float),
                 whole_pitch = size_t(c * hw) * sizeof(float);
    float* w = whole + c0 * hw;
    c0 += ck;
    if (width == 0 || n == 0) continue;
    if (to_whole)
      CUDARTS_CUDA_CHECK(cudaMemcpy2DAsync(w, whole_pitch, t->data(), width, width, size_t(n),
                                           cudaMemcpyDeviceToDevice, stream),
                         "(", op, ": part ", t->shape(), " at channel ", c0 - ck, " of ", c, ")");
    else
      CUDARTS_CUDA_CHECK(cudaMemcpy2DAsync(t->data(), width, w, whole_pitch, width, size_t(n),
                                           cudaMemcpyDeviceToDevice, stream),
                         "(", op, ": part ", t->shape(), " at channel ", c0 - ck, " of ", c, ")");
  }
}

}  // namespace

void CudaBackend::global_avgpool_fwd(const Tensor& x, Tensor& y) {
  const int64_t rows = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  if (rows == 0) return;
  row_mean_kernel<<<row_grid(rows), kBlock, 0, stream_>>>(x.data(), rows, hw, y.data());
  CUDARTS_LAUNCH_CHECK("row_mean_kernel", "(x ", x.shape(), ")");
}

void CudaBackend::global_avgpool_bwd(const Tensor& dy, Tensor& dx) {
  const int64_t rows = dx.dim(0) * dx.dim(1), hw = dx.dim(2) * dx.dim(3);
  if (rows * hw == 0) return;
  const float inv = 1.0f / static_cast<float>(hw);
  spread_mean_kernel<<<grid_for(rows * hw), kBlock, 0, stream_>>>(dy.data(), rows, hw, inv,
                                                                  dx.data());
  CUDARTS_LAUNCH_CHECK("spread_mean_kernel", "(dx ", dx.shape(), ")");
}

void CudaBackend::concat_channels(const std::vector<const Tensor*>& xs, Tensor& y) {
  move_channels(xs, y.data(), y.dim(0), y.dim(1), y.dim(2) * y.dim(3), true, stream_,
                "concat_channels");
}

void CudaBackend::split_channels(const Tensor& y, const std::vector<Tensor*>& xs) {
  move_channels(xs, y.data(), y.dim(0), y.dim(1), y.dim(2) * y.dim(3), false, stream_,
                "split_channels");
}

void CudaBackend::softmax_xent(const Tensor& logits, const Tensor& labels, Tensor& loss,
                               Tensor& dlogits, Tensor& correct) {
  const int64_t n = logits.dim(0), k = logits.dim(1);  // both > 0 (ops.cpp)
  Buffer scratch(allocator_, size_t(2 * n) * sizeof(double));
  double* row_loss = static_cast<double*>(scratch.data());
  double* row_hit = row_loss + n;
  softmax_xent_rows_kernel<<<row_grid(n), kBlock, 0, stream_>>>(
      logits.data(), labels.data_i32(), n, k, dlogits.data(), row_loss, row_hit);
  CUDARTS_LAUNCH_CHECK("softmax_xent_rows_kernel", "(logits ", logits.shape(), ")");
  softmax_xent_total_kernel<<<1, kReduceBlock, 0, stream_>>>(row_loss, row_hit, n, loss.data(),
                                                             correct.data());
  CUDARTS_LAUNCH_CHECK("softmax_xent_total_kernel", "(", n, " rows)");
}

}  // namespace cudarts::cuda
