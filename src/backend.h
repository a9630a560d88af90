// Backend: the op table's implementation interface (internal). ops.cpp validates every
// call and then dispatches here; src/cpu holds the reference implementation, cuda/ the GPU
// one. An op a backend lacks throws NotSupported (never a silent fallback).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts {

// The first non-null entry of a candidate list (the lists of the mix ops may hold nulls for
// candidates known to be zero); null when every entry is. The front door refuses a list without
// one, so a backend may dereference the result.
inline const Tensor* first_present(const std::vector<const Tensor*>& xs) {
  for (const Tensor* x : xs)
    if (x) return x;
  return nullptr;
}

// Up to 8 32-bit words passed by value (set_words).
struct Words8 {
  uint32_t words[8];
  int n;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Copies between devices; `dst`/`src` are raw pointers on the named devices.
  virtual void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                          size_t bytes) = 0;
  virtual void synchronize() {}
  // Makes the backend's device current for this thread (CUDA: before every op, so contexts
  // on different GPUs can be used from one thread).
  virtual void activate() {}
  virtual void* stream() const { return nullptr; }
  virtual void set_allow_tf32(bool) {}
  virtual void set_own_depthwise_kernels(bool) {}
  virtual void set_own_pointwise_kernels(bool) {}
  virtual void set_own_pool_kernels(bool) {}
  virtual void set_own_norm_kernels(bool) {}

  virtual void fill(Tensor& t, float value) = 0;
  virtual void fill_i32(Tensor& t, int32_t value) = 0;
  // t's first w.n 32-bit words = w.words (passed by value: kernel arguments on CUDA).
  virtual void set_words(Tensor& t, const Words8& w) = 0;

  virtual void conv2d_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                          const Conv2dParams& p) = 0;
  virtual void conv2d_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                               const Tensor* x) = 0;
  virtual void conv2d_bwd_filter(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                                 const Conv2dParams& p) = 0;
  virtual void depthwise_group_fwd(const Tensor& x, const std::vector<const Tensor*>& ws,
                                   const std::vector<Conv2dParams>& ps,
                                   const std::vector<Tensor*>& ys) = 0;
  virtual void depthwise_group_bwd_data(const std::vector<const Tensor*>& dys,
                                        const std::vector<const Tensor*>& ws,
                                        const std::vector<Conv2dParams>& ps, const Tensor* x,
                                        const std::vector<const Tensor*>& priors, Tensor& dx) = 0;
  virtual void depthwise_group_bwd_filter(const Tensor& x, const std::vector<const Tensor*>& dys,
                                          const std::vector<Conv2dParams>& ps,
                                          const std::vector<Tensor*>& dws) = 0;

  virtual void batchnorm_fwd_train(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                   Tensor* running_mean, Tensor* running_var, Tensor& y,
                                   Tensor& save_mean, Tensor& save_invstd,
                                   const BatchNormParams& p) = 0;
  virtual void batchnorm_fwd_infer(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                   const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                                   float eps) = 0;
  virtual void batchnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                             const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                             Tensor* dgamma, Tensor* dbeta) = 0;
  virtual void batchnorm_moments(const Tensor& x, const Tensor& shift, Tensor& moments) = 0;
  virtual void batchnorm_moments_finish(const Tensor& moments, const Tensor& shift, double count,
                                        Tensor& mean, Tensor& var, Tensor& invstd,
                                        Tensor* running_mean, Tensor* running_var,
                                        const BatchNormParams& p) = 0;
  virtual void batchnorm_bwd_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                  const Tensor& invstd, Tensor& sums) = 0;
  virtual void batchnorm_bwd_apply(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                                   const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                                   double count, Tensor& dx) = 0;

  virtual void relu_fwd(const Tensor& x, Tensor& y) = 0;
  virtual void relu_bwd(const Tensor& dy, const Tensor& y, Tensor& dx) = 0;

  virtual void pool2d_fwd(const Tensor& x, Tensor& y, const Pool2dParams& p) = 0;
  virtual void pool2d_bwd(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                          const Pool2dParams& p) = 0;
  virtual void global_avgpool_fwd(const Tensor& x, Tensor& y) = 0;
  virtual void global_avgpool_bwd(const Tensor& dy, Tensor& dx) = 0;

  virtual void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) = 0;
  virtual void linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx) = 0;
  virtual void linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias) = 0;

  virtual void add(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  virtual void scale(const Tensor& x, float alpha, Tensor& y) = 0;
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  virtual void add_n(const std::vector<const Tensor*>& xs, Tensor& y) = 0;

  virtual void concat_channels(const std::vector<const Tensor*>& xs, Tensor& y) = 0;
  virtual void split_channels(const Tensor& y, const std::vector<Tensor*>& xs) = 0;
  virtual void channel_shuffle(const Tensor& x, int groups, Tensor& y) = 0;

  virtual void softmax_xent(const Tensor& logits, const Tensor& labels, Tensor& loss,
                            Tensor& dlogits, Tensor& correct) = 0;

  virtual void random_words(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift) = 0;
  virtual void random_uniform(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift,
                              float low, float high) = 0;

  virtual void crop2d_fwd(const Tensor& x, int top, int left, Tensor& y) = 0;
  virtual void crop2d_bwd(const Tensor& dy, int top, int left, Tensor& dx) = 0;
  virtual void scale_samples(const Tensor& x, const Tensor& scales, Tensor& y) = 0;
  virtual void bernoulli_scale(Tensor& out, float keep_prob, uint64_t seed, uint64_t offset,
                               const uint64_t* shift) = 0;
  virtual void augment(const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed,
                       uint64_t offset, const uint64_t* shift) = 0;
  virtual void gather(const Tensor& src, const Tensor& index, Tensor& dst) = 0;

  virtual void softmax(const Tensor& logits, Tensor& probs) = 0;
  virtual void softmax_many(const std::vector<const Tensor*>& logits,
                            const std::vector<Tensor*>& probs) = 0;
  virtual void mix_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y) = 0;
  virtual void mix_bwd(const Tensor& weights, const Tensor& dy,
                       const std::vector<Tensor*>& dxs) = 0;
  virtual void mix_scores(const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g) = 0;
  virtual void mix_bwd_scores(const Tensor& weights, const Tensor& dy,
                              const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& dxs,
                              Tensor& g) = 0;
  virtual void batchnorm_stats(const std::vector<const Tensor*>& xs,
                               const std::vector<bool>& normed, Tensor& mean, Tensor& invstd,
                               const std::vector<Tensor*>& running_means,
                               const std::vector<Tensor*>& running_vars,
                               const BatchNormParams& p) = 0;
  virtual void mix_norm_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs,
                            const std::vector<bool>& normed, const Tensor& mean,
                            const Tensor& invstd, Tensor& y) = 0;
  virtual void mix_norm_bwd(const Tensor& weights, const Tensor& dy,
                            const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                            const Tensor& mean, const Tensor& invstd,
                            const std::vector<Tensor*>& dxs, Tensor* g) = 0;
  virtual void arch_grad(const Tensor& alpha, const Tensor& g, const Tensor* ranking,
                         int restrict_k, Tensor& dalpha) = 0;
  virtual void arch_grad_many(const std::vector<const Tensor*>& alphas,
                              const std::vector<const Tensor*>& gs,
                              const std::vector<Tensor*>& dalphas) = 0;
  virtual void gumbel_rank(const Tensor& logits, const Tensor& offsets, uint64_t seed,
                           uint64_t offset, const uint64_t* shift, Tensor& ranking) = 0;
  virtual void gumbel_softmax(const Tensor& logits, uint64_t seed, uint64_t offset,
                              const uint64_t* shift, int64_t first, float tau, Tensor& soft) = 0;
  virtual void gumbel_softmax_bwd(const Tensor& logits, const Tensor& soft, const Tensor& dsoft,
                                  float tau, Tensor& dlogits) = 0;
  virtual void batch_sum(const Tensor& x, float scale, Tensor& out) = 0;
  virtual void ma_update_scores(const Tensor& dy_sum, const Tensor& mu, Tensor& m,
                                const Tensor& ranking, int k_eval, float lr, Tensor& g) = 0;
  virtual void masked_logsumexp(const Tensor& alpha, const Tensor& ranking, int k, Tensor& out) = 0;
  virtual void proxyless_rescale(Tensor& alpha, const Tensor& ranking, int k,
                                 const Tensor& lse_old) = 0;
  virtual void mark_ranked(const Tensor& ranking, int k, Tensor& mask) = 0;
  virtual void mask_logsumexp(const Tensor& alpha, const Tensor& mask, Tensor& out) = 0;
  virtual void mask_rescale(Tensor& alpha, const Tensor& mask, const Tensor& lse_old) = 0;

  virtual void sgd_step(const std::vector<OptimSlot>& slots, const SgdParams& p,
                        const Tensor* grad_scale, const Tensor* hyper) = 0;
  virtual void adam_step(const std::vector<OptimSlot>& slots, const AdamParams& p,
                         const Tensor* grad_scale, const Tensor* hyper) = 0;
  virtual void global_norm(const std::vector<const Tensor*>& xs, Tensor& out) = 0;
  virtual void clip_coefficient(const Tensor& norm, float max_norm, Tensor& coef) = 0;
  virtual void count_nonfinite(const std::vector<const Tensor*>& values, Tensor& state) = 0;
  virtual void metrics_add(const Tensor& loss, const Tensor& hits, float batch, Tensor& sums) = 0;
};

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<Allocator> allocator);

// ops::depthwise_group_bwd_data as its definition: each d_j into scratch from `allocator`, then
// add_n over the priors and the d_j; one term goes straight into dx. The CPU backend's
// implementation, and the CUDA backend's where its group kernel does not apply.
inline void depthwise_group_bwd_data_one_by_one(
    Backend& b, const std::shared_ptr<Allocator>& allocator, const std::vector<const Tensor*>& dys,
    const std::vector<const Tensor*>& ws, const std::vector<Conv2dParams>& ps, const Tensor* x,
    const std::vector<const Tensor*>& priors, Tensor& dx) {
  if (priors.empty() && ws.size() == 1) {
    b.conv2d_bwd_data(*dys[0], *ws[0], dx, ps[0], x);
    return;
  }
  Buffer scratch(allocator, ws.size() * dx.nbytes());
  std::vector<Tensor> parts;
  for (size_t j = 0; j < ws.size(); ++j) {
    parts.push_back(Tensor::wrap(static_cast<char*>(scratch.data()) + j * dx.nbytes(), dx.shape(),
                                 DType::F32, dx.device()));
    b.conv2d_bwd_data(*dys[j], *ws[j], parts.back(), ps[j], x);
  }
  std::vector<const Tensor*> terms(priors.begin(), priors.end());
  for (const Tensor& t : parts) terms.push_back(&t);
  b.add_n(terms, dx);
}

}  // namespace cudarts
