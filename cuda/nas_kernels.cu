// MixedOp launchers: softmax, gated mixing, mixing scores, architecture gradient, channel
// shuffle (kernels in mix_kernels.cuh), Gumbel ranking and soft sample, batch sum,
// moving-average scores, masked log-sum-exp and the ProxylessNAS rescale (sample_kernels.cuh).
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
#include "sample_kernels.cuh"

namespace cudarts::cuda {

namespace {

using namespace mix;
using namespace sample;

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

void CudaBackend::channel_shuffle(const Tensor& x, int groups, Tensor& y) {
  const int64_t total = x.numel();
  if (total == 0) return;
  channel_shuffle_kernel<<<grid_for(total), kBlock, 0, stream_>>>(
      x.data(), x.dim(0), x.dim(1), x.dim(2) * x.dim(3), groups, y.data());
  CUDARTS_LAUNCH_CHECK("channel_shuffle_kernel", "(x ", x.shape(), ", groups ", groups, ")");
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
