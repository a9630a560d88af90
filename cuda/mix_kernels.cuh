// The MixedOp mixing kernels (internal; launchers in nas_kernels.cu): the weighted sum, its
// backward to every candidate, the left-to-right sum of many tensors, the scores' first pass and
// the backward fused with it, and the softmax and architecture gradient of many MixedOps at once
// (the serial per-row code that softmax_kernel and arch_grad_kernel share), and PC-DARTS's
// channel shuffle. Included by nas_kernels.cu and by tests/test_mix_emulation.cpp, which runs them
// as host code under an emulation of blocks and barriers (CUDARTS_KERNEL_EMULATION: it supplies
// block_sum); internal linkage.
#pragma once
#include <cmath>
#include <cstdint>

#include "reduce_sizes.h"
#ifndef CUDARTS_KERNEL_EMULATION
#include "reduce.cuh"
#endif

namespace cudarts::cuda::mix {
namespace {

constexpr int kMaxMixInputs = 64;  // candidates of one mix_fwd / mix_scores call
// The candidate tensors of one MixedOp, passed by value in the kernel parameters; a null
// entry is an exact zero (not read).
struct MixInputs {
  const float* x[kMaxMixInputs];
};
struct MixOutputs {
  float* x[kMaxMixInputs];
};

// y[i] = sum_k w[k] xs[k][i] over the non-null xs, float accumulation in candidate order
// (CPU: mix_fwd).
__global__ void mix_fwd_kernel(const float* weights, const __grid_constant__ MixInputs xs, int k,
                               int64_t n, float* y) {
  __shared__ float w[kMaxMixInputs];
  if (int(threadIdx.x) < k) w[threadIdx.x] = weights[threadIdx.x];
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j)
      if (xs.x[j]) acc += w[j] * xs.x[j][i];
    y[i] = acc;
  }
}

// dxs[k][i] = w[k] dy[i] for the non-null dxs: dy read once (CPU: mix_bwd).
__global__ void mix_bwd_kernel(const float* weights, const float* dy,
                               const __grid_constant__ MixOutputs dxs, int k, int64_t n) {
  __shared__ float w[kMaxMixInputs];
  if (int(threadIdx.x) < k) w[threadIdx.x] = weights[threadIdx.x];
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = dy[i];
    for (int j = 0; j < k; ++j)
      if (dxs.x[j]) dxs.x[j][i] = w[j] * g;
  }
}

// y[i] = ((xs[0][i] + xs[1][i]) + xs[2][i]) + ..., left to right (CPU: add_n). y may be xs[0]
// (the continuation of a sum of more than kMaxMixInputs terms).
__global__ void add_n_kernel(const __grid_constant__ MixInputs xs, int k, int64_t n, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    float acc = xs.x[0][i];
    for (int j = 1; j < k; ++j) acc += xs.x[j][i];
    y[i] = acc;
  }
}

// partials[k, b] = block b's share of <dy, xs[k]> in double; grid (B, K) (CPU: mix_scores).
__global__ void mix_scores_partials_kernel(const float* dy, const __grid_constant__ MixInputs xs,
                                           int64_t n, double* partials) {
  const float* x = xs.x[blockIdx.y];
  double acc = 0.0;
  if (x)  // a null candidate (an exact zero) scores 0
    for (int64_t i = blockIdx.x * int64_t(kReduceBlock) + threadIdx.x; i < n;
         i += int64_t(gridDim.x) * kReduceBlock)
      acc += double(dy[i]) * x[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.y * int64_t(gridDim.x) + blockIdx.x] = total;
}

// mix_bwd and the first pass of mix_scores in one read of dy: dxs[k][i] = w[k] dy[i], and
// partials[k, b] = block b's share of <dy, xs[k]> in double. The elements of block b and their
// order are mix_scores_partials_kernel's (same grid-stride loop over the same number of
// blocks), so the scores have its bits. k <= kMaxFusedScores (accumulators in registers).
constexpr int kMaxFusedScores = 8;
__global__ void mix_bwd_scores_kernel(const float* weights, const float* dy,
                                      const __grid_constant__ MixInputs xs,
                                      const __grid_constant__ MixOutputs dxs, int k, int64_t n,
                                      double* partials) {
  __shared__ float w[kMaxMixInputs];
  if (int(threadIdx.x) < k) w[threadIdx.x] = weights[threadIdx.x];
  __syncthreads();
  double acc[kMaxFusedScores];
#pragma unroll
  for (int j = 0; j < kMaxFusedScores; ++j) acc[j] = 0.0;
  for (int64_t i = blockIdx.x * int64_t(kReduceBlock) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kReduceBlock) {
    const float g = dy[i];
#pragma unroll
    for (int j = 0; j < kMaxFusedScores; ++j) {
      if (j >= k) break;
      if (dxs.x[j]) dxs.x[j][i] = w[j] * g;
      if (xs.x[j]) acc[j] += double(g) * xs.x[j][i];
    }
  }
#pragma unroll
  for (int j = 0; j < kMaxFusedScores; ++j) {
    if (j >= k) break;  // k is the same in every thread: every thread calls block_sum
    const double total = block_sum(acc[j]);
    if (threadIdx.x == 0) partials[j * int64_t(gridDim.x) + blockIdx.x] = total;
  }
}

// True when ranking[0 .. count) all lie in [0, k).
__device__ bool ranking_valid(const int32_t* ranking, int64_t count, int64_t k) {
  for (int64_t j = 0; j < count; ++j)
    if (ranking[j] < 0 || ranking[j] >= k) return false;
  return true;
}

// probs = softmax(logits) (k), in double, serially (CPU: softmax / softmax_over).
__device__ void softmax_row(const float* logits, int64_t k, float* probs) {
  double mx = -double(INFINITY);
  for (int64_t i = 0; i < k; ++i) mx = mx < double(logits[i]) ? double(logits[i]) : mx;
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += exp(double(logits[i]) - mx);
  for (int64_t i = 0; i < k; ++i) probs[i] = static_cast<float>(exp(double(logits[i]) - mx) / s);
}

// dalpha[m] += p_m (g_m - <p, g>) over the members m (ranking[0 .. count), valid, or
// 0 .. count), p = softmax of alpha over the members; serially, in member order (CPU:
// arch_grad).
__device__ void arch_grad_row(const float* alpha, const float* g, const int32_t* ranking,
                              int64_t count, float* dalpha) {
  auto member = [&](int64_t j) -> int64_t { return ranking ? ranking[j] : j; };
  double mx = -double(INFINITY);
  for (int64_t j = 0; j < count; ++j) {
    const double a = alpha[member(j)];
    mx = mx < a ? a : mx;
  }
  double s = 0.0;
  for (int64_t j = 0; j < count; ++j) s += exp(double(alpha[member(j)]) - mx);
  double pg = 0.0;
  for (int64_t j = 0; j < count; ++j) pg += exp(double(alpha[member(j)]) - mx) / s * g[member(j)];
  for (int64_t j = 0; j < count; ++j) {
    const double p = exp(double(alpha[member(j)]) - mx) / s;
    dalpha[member(j)] += static_cast<float>(p * (g[member(j)] - pg));
  }
}

// Rows of the batched small ops, by value in the kernel parameters.
constexpr int kMaxRows = 128;
struct SoftmaxRows {
  const float* logits[kMaxRows];
  float* probs[kMaxRows];
  int k[kMaxRows];
};
struct ArchGradRows {
  const float* alpha[kMaxRows];
  const float* g[kMaxRows];
  float* dalpha[kMaxRows];
  int k[kMaxRows];
  int lane[kMaxRows];  // rows with the same dalpha have the same lane
};

// One thread per row (CPU: softmax_many).
__global__ void softmax_many_kernel(const __grid_constant__ SoftmaxRows rows, int count) {
  const int r = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (r < count) softmax_row(rows.logits[r], rows.k[r], rows.probs[r]);
}

// One thread per lane, applying the lane's rows in row order (CPU: arch_grad_many).
__global__ void arch_grad_many_kernel(const __grid_constant__ ArchGradRows rows, int count,
                                      int lanes) {
  const int lane = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (lane >= lanes) return;
  for (int r = 0; r < count; ++r)
    if (rows.lane[r] == lane)
      arch_grad_row(rows.alpha[r], rows.g[r], nullptr, rows.k[r], rows.dalpha[r]);
}

// PC-DARTS's channel shuffle: y channel i * groups + j = x channel j * per + i, per = C / groups;
// one thread per element (CPU: channel_shuffle).
__global__ void channel_shuffle_kernel(const float* x, int64_t n, int64_t c, int64_t hw,
                                       int64_t groups, float* y) {
  const int64_t per = c / groups, total = n * c * hw;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = e % hw, oc = (e / hw) % c, s = e / (hw * c);
    const int64_t i = oc / groups, j = oc % groups;
    y[e] = x[(s * c + j * per + i) * hw + p];
  }
}

}  // namespace
}  // namespace cudarts::cuda::mix
