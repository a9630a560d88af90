// The sampled methods' kernels (internal; launchers in nas_kernels.cu): Gumbel ranking and GDAS's
// soft sample with its backward, the batch sum and moving-average scores (MovingAverage), the
// masked log-sum-exp and the ProxylessNAS rescale over a ranking or a mask. Included by
// nas_kernels.cu and by tests/test_sample_emulation.cpp, which runs them as host code under an
// emulation of blocks and barriers (CUDARTS_KERNEL_EMULATION: it supplies block_sum); internal
// linkage. Contract and the device-side handling of invalid rankings: nas_kernels.cu's header.
#pragma once
#include <cmath>
#include <cstdint>

#include "cudarts/philox.h"
#include "mix_kernels.cuh"
#include "reduce_sizes.h"
#ifndef CUDARTS_KERNEL_EMULATION
#include "reduce.cuh"
#endif

// nvcc's __noinline__ (host compilers have no such keyword; the emulation needs none).
#ifdef __CUDACC__
#define CUDARTS_NOINLINE __noinline__
#else
#define CUDARTS_NOINLINE
#endif

namespace cudarts::cuda::sample {
namespace {

using mix::ranking_valid;

// logit + Gumbel noise for element j, exactly as the CPU (u in double, double logs). A NaN key
// sorts as -inf, so the ranking stays a permutation. Not inlined: every comparison of the
// ranking must see the very same bits for the same element, whoever computes it.
__device__ CUDARTS_NOINLINE double gumbel_key(const float* logits, int64_t j, uint64_t seed,
                                              uint64_t offset) {
  const double u = philox_uniform(philox_word(seed, offset, 0, uint64_t(j)));
  const double key = double(logits[j]) - log(-log(u));
  return isnan(key) ? -double(INFINITY) : key;
}

// ranking[b + r] = j - b, where r is the rank of element j in its segment [b, e) by key
// descending, ties to the lower index: the result of the CPU's stable sort (CPU: gumbel_rank).
// One thread per element; each counts the segment's elements ranked before it.
__global__ void gumbel_rank_kernel(const float* logits, const int32_t* offsets, int64_t segments,
                                   int64_t total, uint64_t seed, uint64_t offset,
                                   const uint64_t* shift, int32_t* ranking) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total;
       j += int64_t(gridDim.x) * blockDim.x) {
    int64_t lo = 0, hi = segments;  // the segment of j: the last s with offsets[s] <= j
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (offsets[mid] <= j)
        lo = mid;
      else
        hi = mid;
    }
    const int64_t b = offsets[lo], e = offsets[lo + 1];
    if (b < 0 || b > j || j >= e || e > total) {
      ranking[j] = -1;
      continue;
    }
    const double kj = gumbel_key(logits, j, seed, offset);
    int64_t rank = 0;
    for (int64_t i = b; i < e; ++i) {
      if (i == j) continue;
      const double ki = gumbel_key(logits, i, seed, offset);
      if (ki > kj || (ki == kj && i < j)) ++rank;
    }
    ranking[b + rank] = static_cast<int32_t>(j - b);
  }
}

// soft = softmax((log_softmax(logits) + G) / tau), G from Philox words first + i; one thread,
// in double, z recomputed in each pass rather than stored (CPU: gumbel_softmax).
__device__ double gumbel_z(const float* logits, int64_t i, double lse, uint64_t seed,
                           uint64_t offset, int64_t first, float tau) {
  const double u = philox_uniform(philox_word(seed, offset, 0, uint64_t(first + i)));
  return (double(logits[i]) - lse - log(-log(u))) / double(tau);
}

__global__ void gumbel_softmax_kernel(const float* logits, int64_t k, uint64_t seed,
                                      uint64_t offset, const uint64_t* shift, int64_t first,
                                      float tau, float* soft) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  double mx = -double(INFINITY);
  for (int64_t i = 0; i < k; ++i) mx = mx < double(logits[i]) ? double(logits[i]) : mx;
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += exp(double(logits[i]) - mx);
  const double lse = mx + log(s);
  double zmax = -double(INFINITY);
  for (int64_t i = 0; i < k; ++i) {
    const double z = gumbel_z(logits, i, lse, seed, offset, first, tau);
    zmax = zmax < z ? z : zmax;
  }
  double zs = 0.0;
  for (int64_t i = 0; i < k; ++i)
    zs += exp(gumbel_z(logits, i, lse, seed, offset, first, tau) - zmax);
  for (int64_t i = 0; i < k; ++i)
    soft[i] =
        static_cast<float>(exp(gumbel_z(logits, i, lse, seed, offset, first, tau) - zmax) / zs);
}

// dlogits += the gradient through the soft sample; one thread, in double
// (CPU: gumbel_softmax_bwd).
__global__ void gumbel_softmax_bwd_kernel(const float* logits, const float* soft,
                                          const float* dsoft, int64_t k, float tau,
                                          float* dlogits) {
  double sg = 0.0;
  for (int64_t i = 0; i < k; ++i) sg += double(soft[i]) * dsoft[i];
  double vsum = 0.0;
  for (int64_t i = 0; i < k; ++i) vsum += double(soft[i]) * (double(dsoft[i]) - sg) / double(tau);
  double mx = -double(INFINITY);
  for (int64_t i = 0; i < k; ++i) mx = mx < double(logits[i]) ? double(logits[i]) : mx;
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += exp(double(logits[i]) - mx);
  for (int64_t i = 0; i < k; ++i) {
    const double v = double(soft[i]) * (double(dsoft[i]) - sg) / double(tau);
    const double p = exp(double(logits[i]) - mx) / s;
    dlogits[i] = static_cast<float>(dlogits[i] + (v - p * vsum));
  }
}

// out[j] = scale * sum_i x[i, j] in double, samples in order; one thread per j (CPU: batch_sum).
__global__ void batch_sum_kernel(const float* x, int64_t n, int64_t s, float scale, float* out) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < s;
       j += int64_t(gridDim.x) * blockDim.x) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) acc += x[i * s + j];
    out[j] = static_cast<float>(scale * acc);
  }
}

// Row k of m (K, S): if k is in E = ranking[0 .. k_eval), m[k] += lr (mu[k] - m[k]) and the
// estimate is mu[k], else the estimate is m[k]; partials[k, b] = block b's share of
// <dy_sum, estimate_k> in double. Grid (B, K) (CPU: ma_update_scores).
__global__ void ma_update_partials_kernel(const float* dy_sum, const float* mu, float* m,
                                          const int32_t* ranking, int k_eval, int64_t k, int64_t s,
                                          float lr, double* partials) {
  const int64_t row = blockIdx.y;
  const bool valid = ranking_valid(ranking, k_eval, k);
  bool in_eval = false;
  for (int j = 0; j < k_eval; ++j) in_eval = in_eval || ranking[j] == row;
  double acc = 0.0;
  if (valid) {
    float* mk = m + row * s;
    const float* uk = mu + row * s;
    for (int64_t j = blockIdx.x * int64_t(kReduceBlock) + threadIdx.x; j < s;
         j += int64_t(gridDim.x) * kReduceBlock) {
      float estimate;
      if (in_eval) {
        estimate = uk[j];
        mk[j] += lr * (estimate - mk[j]);
      } else {
        estimate = mk[j];
      }
      acc += double(dy_sum[j]) * estimate;
    }
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0)
    partials[row * int64_t(gridDim.x) + blockIdx.x] = valid ? total : double(NAN);
}

// log sum_{i in E} exp alpha[i] in double, E = ranking[0 .. count) (CPU: logsumexp_over).
__device__ double masked_lse(const float* alpha, const int32_t* ranking, int count) {
  double mx = -double(INFINITY);
  for (int j = 0; j < count; ++j) {
    const double a = alpha[ranking[j]];
    mx = mx < a ? a : mx;
  }
  double s = 0.0;
  for (int j = 0; j < count; ++j) s += exp(double(alpha[ranking[j]]) - mx);
  return mx + log(s);
}

// out = masked log-sum-exp; one thread (CPU: masked_logsumexp).
__global__ void masked_logsumexp_kernel(const float* alpha, const int32_t* ranking, int count,
                                        int64_t k, float* out) {
  out[0] = ranking_valid(ranking, count, k) ? static_cast<float>(masked_lse(alpha, ranking, count))
                                            : float(NAN);
}

// alpha[i] += lse_old - masked_lse(alpha) for i in E; one thread (CPU: proxyless_rescale).
__global__ void proxyless_rescale_kernel(float* alpha, const int32_t* ranking, int count, int64_t k,
                                         const float* lse_old) {
  if (!ranking_valid(ranking, count, k)) {
    for (int64_t i = 0; i < k; ++i) alpha[i] = float(NAN);
    return;
  }
  const double shift = double(lse_old[0]) - masked_lse(alpha, ranking, count);
  for (int j = 0; j < count; ++j) alpha[ranking[j]] = static_cast<float>(alpha[ranking[j]] + shift);
}

// mask[ranking[j]] = 1 for j < count; one thread (CPU: mark_ranked). An invalid ranking
// poisons the whole mask (NaN: in the set, and the rescale then gives NaN).
__global__ void mark_ranked_kernel(const int32_t* ranking, int count, int64_t k, float* mask) {
  if (!ranking_valid(ranking, count, k)) {
    for (int64_t i = 0; i < k; ++i) mask[i] = float(NAN);
    return;
  }
  for (int j = 0; j < count; ++j) mask[ranking[j]] = 1.0f;
}

// log sum_{mask != 0} exp alpha in double, -inf for an empty set (CPU: logsumexp_over).
__device__ double mask_lse(const float* alpha, const float* mask, int64_t k) {
  double mx = -double(INFINITY);
  for (int64_t i = 0; i < k; ++i)
    if (mask[i] != 0.0f) mx = mx < double(alpha[i]) ? double(alpha[i]) : mx;
  if (mx == -double(INFINITY)) return mx;
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i)
    if (mask[i] != 0.0f) s += exp(double(alpha[i]) - mx);
  return mx + log(s);
}

// out = log-sum-exp over the mask; one thread (CPU: mask_logsumexp).
__global__ void mask_logsumexp_kernel(const float* alpha, const float* mask, int64_t k,
                                      float* out) {
  out[0] = static_cast<float>(mask_lse(alpha, mask, k));
}

// alpha[i] += lse_old - mask_lse(alpha) where mask[i] != 0; one thread (CPU: mask_rescale).
__global__ void mask_rescale_kernel(float* alpha, const float* mask, int64_t k,
                                    const float* lse_old) {
  const double lse = mask_lse(alpha, mask, k);
  if (lse == -double(INFINITY)) return;
  const double shift = double(lse_old[0]) - lse;
  for (int64_t i = 0; i < k; ++i)
    if (mask[i] != 0.0f) alpha[i] = static_cast<float>(alpha[i] + shift);
}

}  // namespace
}  // namespace cudarts::cuda::sample
