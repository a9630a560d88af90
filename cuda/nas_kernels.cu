// MixedOp kernels: softmax, gated mixing, mixing scores, architecture gradient, Gumbel ranking,
// batch sum, moving-average scores, masked log-sum-exp and the ProxylessNAS rescale.
// Contract (ops.h): outputs written (=) except dalpha (+=) and the in-place m / alpha.
// CPU twins in src/cpu/cpu_nas.cpp; reductions are deterministic (double, fixed order).
// Invalid device-side indices, which the CPU reference rejects with an exception, cannot be
// reported without a host read: a ranking entry outside [0, K) makes the op's outputs NaN
// (g, dalpha, out; m is then left as it was; proxyless_rescale sets all of alpha to NaN).
// gumbel_rank positions not covered by ascending offsets from 0 to total get -1 (empty
// segments, which the CPU rejects, are accepted as empty). Nothing is read or written out of
// bounds.
#include <math_constants.h>

#include <algorithm>
#include <cmath>

#include "cuda_backend.h"
#include "cudarts/philox.h"
#include "mix_kernels.cuh"
#include "reduce.cuh"

namespace cudarts::cuda {

namespace {

using namespace mix;

constexpr int kBlock = 256;
constexpr int kSerialThreads = 1;  // kernels over a few K-vectors run in one thread, in order

int grid_for(int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 65535 * 8));
}

template <class List, class T>
List mix_list(const std::vector<T*>& xs, const char* op) {
  if (xs.size() > size_t(kMaxMixInputs))
    throw NotSupported(detail::cat("cuda backend: ", op, " takes at most ", kMaxMixInputs,
                                   " candidates, got ", xs.size()));
  List in{};
  for (size_t k = 0; k < xs.size(); ++k) in.x[k] = xs[k] ? xs[k]->data() : nullptr;
  return in;
}
MixInputs mix_inputs(const std::vector<const Tensor*>& xs, const char* op) {
  return mix_list<MixInputs>(xs, op);
}

// probs = softmax(logits) in double, one thread (CPU: softmax / softmax_over).
__global__ void softmax_kernel(const float* logits, int64_t k, float* probs) {
  softmax_row(logits, k, probs);
}

// dalpha[m] += p_m (g_m - <p, g>) over the members m (ranking[0 .. count) or 0 .. count), with
// p = softmax of alpha over the members; one thread, in member order (CPU: arch_grad).
__global__ void arch_grad_kernel(const float* alpha, const float* g, const int32_t* ranking,
                                 int64_t count, int64_t k, float* dalpha) {
  if (ranking && !ranking_valid(ranking, count, k)) {
    for (int64_t i = 0; i < k; ++i) dalpha[i] = CUDART_NAN_F;
    return;
  }
  arch_grad_row(alpha, g, ranking, count, dalpha);
}

// logit + Gumbel noise for element j, exactly as the CPU (u in double, double logs). A NaN key
// sorts as -inf, so the ranking stays a permutation. Not inlined: every comparison of the
// ranking must see the very same bits for the same element, whoever computes it.
__device__ __noinline__ double gumbel_key(const float* logits, int64_t j, uint64_t seed,
                                          uint64_t offset) {
  const double u = philox_uniform(philox_word(seed, offset, 0, uint64_t(j)));
  const double key = double(logits[j]) - log(-log(u));
  return isnan(key) ? -CUDART_INF : key;
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
  double mx = -CUDART_INF;
  for (int64_t i = 0; i < k; ++i) mx = mx < double(logits[i]) ? double(logits[i]) : mx;
  double s = 0.0;
  for (int64_t i = 0; i < k; ++i) s += exp(double(logits[i]) - mx);
  const double lse = mx + log(s);
  double zmax = -CUDART_INF;
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
  double mx = -CUDART_INF;
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
    partials[row * int64_t(gridDim.x) + blockIdx.x] = valid ? total : CUDART_NAN;
}

// log sum_{i in E} exp alpha[i] in double, E = ranking[0 .. count) (CPU: logsumexp_over).
__device__ double masked_lse(const float* alpha, const int32_t* ranking, int count) {
  double mx = -CUDART_INF;
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
                                            : CUDART_NAN_F;
}

// alpha[i] += lse_old - masked_lse(alpha) for i in E; one thread (CPU: proxyless_rescale).
__global__ void proxyless_rescale_kernel(float* alpha, const int32_t* ranking, int count, int64_t k,
                                         const float* lse_old) {
  if (!ranking_valid(ranking, count, k)) {
    for (int64_t i = 0; i < k; ++i) alpha[i] = CUDART_NAN_F;
    return;
  }
  const double shift = double(lse_old[0]) - masked_lse(alpha, ranking, count);
  for (int j = 0; j < count; ++j) alpha[ranking[j]] = static_cast<float>(alpha[ranking[j]] + shift);
}

// mask[ranking[j]] = 1 for j < count; one thread (CPU: mark_ranked). An invalid ranking
// poisons the whole mask (NaN: in the set, and the rescale then gives NaN).
__global__ void mark_ranked_kernel(const int32_t* ranking, int count, int64_t k, float* mask) {
  if (!ranking_valid(ranking, count, k)) {
    for (int64_t i = 0; i < k; ++i) mask[i] = CUDART_NAN_F;
    return;
  }
  for (int j = 0; j < count; ++j) mask[ranking[j]] = 1.0f;
}

// log sum_{mask != 0} exp alpha in double, -inf for an empty set (CPU: logsumexp_over).
__device__ double mask_lse(const float* alpha, const float* mask, int64_t k) {
  double mx = -CUDART_INF;
  for (int64_t i = 0; i < k; ++i)
    if (mask[i] != 0.0f) mx = mx < double(alpha[i]) ? double(alpha[i]) : mx;
  if (mx == -CUDART_INF) return mx;
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
  if (lse == -CUDART_INF) return;
  const double shift = double(lse_old[0]) - lse;
  for (int64_t i = 0; i < k; ++i)
    if (mask[i] != 0.0f) alpha[i] = static_cast<float>(alpha[i] + shift);
}

}  // namespace

void CudaBackend::softmax(const Tensor& logits, Tensor& probs) {
  softmax_kernel<<<1, kSerialThreads, 0, stream_>>>(logits.data(), logits.numel(), probs.data());
  CUDARTS_LAUNCH_CHECK("softmax_kernel", "(logits ", logits.shape(), ")");
}

void CudaBackend::mix_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y) {
  const MixInputs in = mix_inputs(xs, "mix_fwd");
  const int64_t n = y.numel();
  if (n == 0) return;
  mix_fwd_kernel<<<grid_for(n), kBlock, 0, stream_>>>(weights.data(), in, int(xs.size()), n,
                                                      y.data());
  CUDARTS_LAUNCH_CHECK("mix_fwd_kernel", "(", xs.size(), " x ", y.shape(), ")");
}

void CudaBackend::mix_bwd(const Tensor& weights, const Tensor& dy,
                          const std::vector<Tensor*>& dxs) {
  const MixOutputs out = mix_list<MixOutputs>(dxs, "mix_bwd");
  const int64_t n = dy.numel();
  if (n == 0) return;
  mix_bwd_kernel<<<grid_for(n), kBlock, 0, stream_>>>(weights.data(), dy.data(), out,
                                                      int(dxs.size()), n);
  CUDARTS_LAUNCH_CHECK("mix_bwd_kernel", "(", dxs.size(), " x ", dy.shape(), ")");
}

// More than kMaxMixInputs terms: the first kMaxMixInputs, then y plus the next
// kMaxMixInputs - 1, and so on; the same left-to-right order.
void CudaBackend::add_n(const std::vector<const Tensor*>& xs, Tensor& y) {
  const int64_t n = y.numel();
  if (n == 0) return;
  size_t done = 0;
  while (done < xs.size()) {
    std::vector<const Tensor*> part;
    if (done > 0) part.push_back(&y);
    while (part.size() < size_t(kMaxMixInputs) && done < xs.size()) part.push_back(xs[done++]);
    const MixInputs in = mix_inputs(part, "add_n");
    add_n_kernel<<<grid_for(n), kBlock, 0, stream_>>>(in, int(part.size()), n, y.data());
    CUDARTS_LAUNCH_CHECK("add_n_kernel", "(", part.size(), " x ", y.shape(), ")");
  }
}

void CudaBackend::mix_scores(const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g) {
  const MixInputs in = mix_inputs(xs, "mix_scores");
  const int64_t n = dy.numel(), k = int64_t(xs.size()), blocks = partial_count(n);
  Buffer partials(allocator_, size_t(k * blocks) * sizeof(double));
  double* p = static_cast<double*>(partials.data());
  mix_scores_partials_kernel<<<dim3(unsigned(blocks), unsigned(k)), kReduceBlock, 0, stream_>>>(
      dy.data(), in, n, p);
  CUDARTS_LAUNCH_CHECK("mix_scores_partials_kernel", "(", k, " x ", dy.shape(), ")");
  launch_sum_partials(p, k, blocks, 1.0, false, g.data(), stream_);
}

// More than kMaxFusedScores candidates: the two ops one after the other (the same results).
void CudaBackend::mix_bwd_scores(const Tensor& weights, const Tensor& dy,
                                 const std::vector<const Tensor*>& xs,
                                 const std::vector<Tensor*>& dxs, Tensor& g) {
  const int64_t n = dy.numel(), k = int64_t(xs.size());
  if (k > kMaxFusedScores || n == 0) {
    mix_bwd(weights, dy, dxs);
    mix_scores(dy, xs, g);
    return;
  }
  const MixInputs in = mix_inputs(xs, "mix_bwd_scores");
  const MixOutputs out = mix_list<MixOutputs>(dxs, "mix_bwd_scores");
  const int64_t blocks = partial_count(n);
  Buffer partials(allocator_, size_t(k * blocks) * sizeof(double));
  double* p = static_cast<double*>(partials.data());
  mix_bwd_scores_kernel<<<unsigned(blocks), kReduceBlock, 0, stream_>>>(weights.data(), dy.data(),
                                                                        in, out, int(k), n, p);
  CUDARTS_LAUNCH_CHECK("mix_bwd_scores_kernel", "(", k, " x ", dy.shape(), ")");
  launch_sum_partials(p, k, blocks, 1.0, false, g.data(), stream_);
}

void CudaBackend::arch_grad(const Tensor& alpha, const Tensor& g, const Tensor* ranking,
                            int restrict_k, Tensor& dalpha) {
  const int64_t k = alpha.numel();
  const int64_t count = ranking ? restrict_k : k;
  arch_grad_kernel<<<1, kSerialThreads, 0, stream_>>>(
      alpha.data(), g.data(), ranking ? ranking->data_i32() : nullptr, count, k, dalpha.data());
  CUDARTS_LAUNCH_CHECK("arch_grad_kernel", "(alpha ", alpha.shape(), ", restrict_k ", restrict_k,
                       ")");
}

// Rows in launches of kMaxRows, one thread per row, in list order.
void CudaBackend::softmax_many(const std::vector<const Tensor*>& logits,
                               const std::vector<Tensor*>& probs) {
  for (size_t first = 0; first < logits.size(); first += size_t(kMaxRows)) {
    const size_t count = std::min(logits.size() - first, size_t(kMaxRows));
    SoftmaxRows rows{};
    for (size_t r = 0; r < count; ++r) {
      rows.logits[r] = logits[first + r]->data();
      rows.probs[r] = probs[first + r]->data();
      rows.k[r] = int(logits[first + r]->numel());
    }
    softmax_many_kernel<<<1, kMaxRows, 0, stream_>>>(rows, int(count));
    CUDARTS_LAUNCH_CHECK("softmax_many_kernel", "(", count, " rows)");
  }
}

// Rows in launches of kMaxRows; within a launch one thread per distinct dalpha (a lane) applies
// its rows in list order, and later launches follow earlier ones on the stream: the list order
// holds for every shared dalpha.
void CudaBackend::arch_grad_many(const std::vector<const Tensor*>& alphas,
                                 const std::vector<const Tensor*>& gs,
                                 const std::vector<Tensor*>& dalphas) {
  for (size_t first = 0; first < alphas.size(); first += size_t(kMaxRows)) {
    const size_t count = std::min(alphas.size() - first, size_t(kMaxRows));
    ArchGradRows rows{};
    std::vector<const void*> lanes;
    for (size_t r = 0; r < count; ++r) {
      Tensor& d = *dalphas[first + r];
      const auto it = std::find(lanes.begin(), lanes.end(), d.raw());
      rows.lane[r] = int(it - lanes.begin());
      if (it == lanes.end()) lanes.push_back(d.raw());
      rows.alpha[r] = alphas[first + r]->data();
      rows.g[r] = gs[first + r]->data();
      rows.dalpha[r] = d.data();
      rows.k[r] = int(d.numel());
    }
    arch_grad_many_kernel<<<1, kMaxRows, 0, stream_>>>(rows, int(count), int(lanes.size()));
    CUDARTS_LAUNCH_CHECK("arch_grad_many_kernel", "(", count, " rows)");
  }
}

void CudaBackend::gumbel_rank(const Tensor& logits, const Tensor& offsets, uint64_t seed,
                              uint64_t offset, const uint64_t* shift, Tensor& ranking) {
  const int64_t total = logits.numel(), segments = offsets.numel() - 1;
  if (total == 0) return;
  gumbel_rank_kernel<<<grid_for(total), kBlock, 0, stream_>>>(
      logits.data(), offsets.data_i32(), segments, total, seed, offset, shift, ranking.data_i32());
  CUDARTS_LAUNCH_CHECK("gumbel_rank_kernel", "(logits ", logits.shape(), ", ", segments,
                       " segments)");
}

void CudaBackend::gumbel_softmax(const Tensor& logits, uint64_t seed, uint64_t offset,
                                 const uint64_t* shift, int64_t first, float tau, Tensor& soft) {
  gumbel_softmax_kernel<<<1, kSerialThreads, 0, stream_>>>(logits.data(), logits.numel(), seed,
                                                           offset, shift, first, tau, soft.data());
  CUDARTS_LAUNCH_CHECK("gumbel_softmax_kernel", "(logits ", logits.shape(), ", tau ", tau, ")");
}

void CudaBackend::gumbel_softmax_bwd(const Tensor& logits, const Tensor& soft, const Tensor& dsoft,
                                     float tau, Tensor& dlogits) {
  gumbel_softmax_bwd_kernel<<<1, kSerialThreads, 0, stream_>>>(
      logits.data(), soft.data(), dsoft.data(), logits.numel(), tau, dlogits.data());
  CUDARTS_LAUNCH_CHECK("gumbel_softmax_bwd_kernel", "(logits ", logits.shape(), ")");
}

void CudaBackend::batch_sum(const Tensor& x, float scale, Tensor& out) {
  const int64_t n = x.dim(0), s = out.numel();
  if (s == 0) return;
  batch_sum_kernel<<<grid_for(s), kBlock, 0, stream_>>>(x.data(), n, s, scale, out.data());
  CUDARTS_LAUNCH_CHECK("batch_sum_kernel", "(x ", x.shape(), ")");
}

void CudaBackend::ma_update_scores(const Tensor& dy_sum, const Tensor& mu, Tensor& m,
                                   const Tensor& ranking, int k_eval, float lr, Tensor& g) {
  const int64_t k = m.dim(0), s = dy_sum.numel(), blocks = partial_count(s);
  if (k > 65535)
    throw NotSupported(
        detail::cat("cuda backend: ma_update_scores with ", k, " candidates (at most 65535)"));
  Buffer partials(allocator_, size_t(k * blocks) * sizeof(double));
  double* p = static_cast<double*>(partials.data());
  ma_update_partials_kernel<<<dim3(unsigned(blocks), unsigned(k)), kReduceBlock, 0, stream_>>>(
      dy_sum.data(), mu.data(), m.data(), ranking.data_i32(), k_eval, k, s, lr, p);
  CUDARTS_LAUNCH_CHECK("ma_update_partials_kernel", "(m ", m.shape(), ", k_eval ", k_eval, ")");
  launch_sum_partials(p, k, blocks, 1.0, false, g.data(), stream_);
}

void CudaBackend::masked_logsumexp(const Tensor& alpha, const Tensor& ranking, int k, Tensor& out) {
  masked_logsumexp_kernel<<<1, kSerialThreads, 0, stream_>>>(alpha.data(), ranking.data_i32(), k,
                                                             alpha.numel(), out.data());
  CUDARTS_LAUNCH_CHECK("masked_logsumexp_kernel", "(alpha ", alpha.shape(), ", k ", k, ")");
}

void CudaBackend::mark_ranked(const Tensor& ranking, int k, Tensor& mask) {
  mark_ranked_kernel<<<1, kSerialThreads, 0, stream_>>>(ranking.data_i32(), k, mask.numel(),
                                                        mask.data());
  CUDARTS_LAUNCH_CHECK("mark_ranked_kernel", "(mask ", mask.shape(), ", k ", k, ")");
}

void CudaBackend::mask_logsumexp(const Tensor& alpha, const Tensor& mask, Tensor& out) {
  mask_logsumexp_kernel<<<1, kSerialThreads, 0, stream_>>>(alpha.data(), mask.data(), alpha.numel(),
                                                           out.data());
  CUDARTS_LAUNCH_CHECK("mask_logsumexp_kernel", "(alpha ", alpha.shape(), ")");
}

void CudaBackend::mask_rescale(Tensor& alpha, const Tensor& mask, const Tensor& lse_old) {
  mask_rescale_kernel<<<1, kSerialThreads, 0, stream_>>>(alpha.data(), mask.data(), alpha.numel(),
                                                         lse_old.data());
  CUDARTS_LAUNCH_CHECK("mask_rescale_kernel", "(alpha ", alpha.shape(), ")");
}

void CudaBackend::proxyless_rescale(Tensor& alpha, const Tensor& ranking, int k,
                                    const Tensor& lse_old) {
  proxyless_rescale_kernel<<<1, kSerialThreads, 0, stream_>>>(alpha.data(), ranking.data_i32(), k,
                                                              alpha.numel(), lse_old.data());
  CUDARTS_LAUNCH_CHECK("proxyless_rescale_kernel", "(alpha ", alpha.shape(), ", k ", k, ")");
}

}  // namespace cudarts::cuda
