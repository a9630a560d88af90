// The CPU reference backend (internal): plain loops, OpenMP over the batch, OpenBLAS GEMM.
// It defines the semantics every other backend is tested against, so it stays simple.
// Workspace comes from the context's allocator, so its statistics include scratch memory.
#pragma once
#include <memory>

#include "backend.h"

namespace cudarts::cpu {

// Row-major C (m x n) = alpha op(A) op(B) + beta C: OpenBLAS when built with it, else the
// built-in loops (src/cpu/gemm.cpp).
void sgemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
           const float* b, int ldb, float beta, float* c, int ldc);
// Makes each sgemm call run on the calling thread (OpenMP parallelises over the batch).
void gemm_single_threaded();

// Cores shared by several ops (src/cpu/cpu_nas.cpp), so a fused op's twin computes what the
// unfused ops compute, bit for bit: <a, b> in double; y = w x; out = sum_k weights[k] xs[k]
// over the non-null xs (float, candidate order; mix_fwd).
double dot(const float* a, const float* b, int64_t n);
void scale_into(float w, const float* x, int64_t n, float* y);
void mix_accumulate(const std::vector<const float*>& xs, const float* weights, int64_t n,
                    float* out);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(std::shared_ptr<Allocator> allocator);
  const char* name() const override { return "cpu"; }

  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                  size_t bytes) override;
  void fill(Tensor& t, float value) override;
  void fill_i32(Tensor& t, int32_t value) override;
  void set_words(Tensor& t, const Words8& w) override;

  void conv2d_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                  const Conv2dParams& p) override;
  void conv2d_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                       const Tensor* x) override;
  void conv2d_bwd_filter(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                         const Conv2dParams& p) override;
  void depthwise_group_fwd(const Tensor& x, const std::vector<const Tensor*>& ws,
                           const std::vector<Conv2dParams>& ps,
                           const std::vector<Tensor*>& ys) override;
  void depthwise_group_bwd_data(const std::vector<const Tensor*>& dys,
                                const std::vector<const Tensor*>& ws,
                                const std::vector<Conv2dParams>& ps, const Tensor* x,
                                const std::vector<const Tensor*>& priors, Tensor& dx) override;
  void depthwise_group_bwd_filter(const Tensor& x, const std::vector<const Tensor*>& dys,
                                  const std::vector<Conv2dParams>& ps,
                                  const std::vector<Tensor*>& dws) override;

  void batchnorm_fwd_train(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                           Tensor* running_mean, Tensor* running_var, Tensor& y, Tensor& save_mean,
                           Tensor& save_invstd, const BatchNormParams& p) override;
  void batchnorm_fwd_infer(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                           const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                           float eps) override;
  void batchnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                     const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                     Tensor* dbeta) override;
  void batchnorm_moments(const Tensor& x, const Tensor& shift, Tensor& moments) override;
  void batchnorm_moments_finish(const Tensor& moments, const Tensor& shift, double count,
                                Tensor& mean, Tensor& var, Tensor& invstd, Tensor* running_mean,
                                Tensor* running_var, const BatchNormParams& p) override;
  void batchnorm_bwd_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                          const Tensor& invstd, Tensor& sums) override;
  void batchnorm_bwd_apply(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                           const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                           double count, Tensor& dx) override;

  void relu_fwd(const Tensor& x, Tensor& y) override;
  void relu_bwd(const Tensor& dy, const Tensor& y, Tensor& dx) override;

  void pool2d_fwd(const Tensor& x, Tensor& y, const Pool2dParams& p) override;
  void pool2d_bwd(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                  const Pool2dParams& p) override;
  void global_avgpool_fwd(const Tensor& x, Tensor& y) override;
  void global_avgpool_bwd(const Tensor& dy, Tensor& dx) override;

  void linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) override;
  void linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx) override;
  void linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias) override;

  void add(const Tensor& a, const Tensor& b, Tensor& y) override;
  void scale(const Tensor& x, float alpha, Tensor& y) override;
  void axpy(float alpha, const Tensor& x, Tensor& y) override;
  void add_n(const std::vector<const Tensor*>& xs, Tensor& y) override;

  void concat_channels(const std::vector<const Tensor*>& xs, Tensor& y) override;
  void split_channels(const Tensor& y, const std::vector<Tensor*>& xs) override;
  void channel_shuffle(const Tensor& x, int groups, Tensor& y) override;

  void softmax_xent(const Tensor& logits, const Tensor& labels, Tensor& loss, Tensor& dlogits,
                    Tensor& correct) override;

  void random_words(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift) override;
  void random_uniform(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift, float low,
                      float high) override;

  void crop2d_fwd(const Tensor& x, int top, int left, Tensor& y) override;
  void crop2d_bwd(const Tensor& dy, int top, int left, Tensor& dx) override;
  void scale_samples(const Tensor& x, const Tensor& scales, Tensor& y) override;
  void bernoulli_scale(Tensor& out, float keep_prob, uint64_t seed, uint64_t offset,
                       const uint64_t* shift) override;
  void augment(const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed, uint64_t offset,
               const uint64_t* shift) override;
  void gather(const Tensor& src, const Tensor& index, Tensor& dst) override;

  void softmax(const Tensor& logits, Tensor& probs) override;
  void softmax_many(const std::vector<const Tensor*>& logits,
                    const std::vector<Tensor*>& probs) override;
  void mix_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y) override;
  void mix_bwd(const Tensor& weights, const Tensor& dy, const std::vector<Tensor*>& dxs) override;
  void mix_scores(const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g) override;
  void mix_bwd_scores(const Tensor& weights, const Tensor& dy, const std::vector<const Tensor*>& xs,
                      const std::vector<Tensor*>& dxs, Tensor& g) override;
  void batchnorm_stats(const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                       Tensor& mean, Tensor& invstd, const std::vector<Tensor*>& running_means,
                       const std::vector<Tensor*>& running_vars, const BatchNormParams& p) override;
  void mix_norm_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs,
                    const std::vector<bool>& normed, const Tensor& mean, const Tensor& invstd,
                    Tensor& y) override;
  void mix_norm_bwd(const Tensor& weights, const Tensor& dy, const std::vector<const Tensor*>& xs,
                    const std::vector<bool>& normed, const Tensor& mean, const Tensor& invstd,
                    const std::vector<Tensor*>& dxs, Tensor* g) override;
  void arch_grad(const Tensor& alpha, const Tensor& g, const Tensor* ranking, int restrict_k,
                 Tensor& dalpha) override;
  void arch_grad_many(const std::vector<const Tensor*>& alphas,
                      const std::vector<const Tensor*>& gs,
                      const std::vector<Tensor*>& dalphas) override;
  void gumbel_rank(const Tensor& logits, const Tensor& offsets, uint64_t seed, uint64_t offset,
                   const uint64_t* shift, Tensor& ranking) override;
  void gumbel_softmax(const Tensor& logits, uint64_t seed, uint64_t offset, const uint64_t* shift,
                      int64_t first, float tau, Tensor& soft) override;
  void gumbel_softmax_bwd(const Tensor& logits, const Tensor& soft, const Tensor& dsoft, float tau,
                          Tensor& dlogits) override;
  void batch_sum(const Tensor& x, float scale, Tensor& out) override;
  void ma_update_scores(const Tensor& dy_sum, const Tensor& mu, Tensor& m, const Tensor& ranking,
                        int k_eval, float lr, Tensor& g) override;
  void masked_logsumexp(const Tensor& alpha, const Tensor& ranking, int k, Tensor& out) override;
  void proxyless_rescale(Tensor& alpha, const Tensor& ranking, int k,
                         const Tensor& lse_old) override;
  void mark_ranked(const Tensor& ranking, int k, Tensor& mask) override;
  void mask_logsumexp(const Tensor& alpha, const Tensor& mask, Tensor& out) override;
  void mask_rescale(Tensor& alpha, const Tensor& mask, const Tensor& lse_old) override;

  void sgd_step(const std::vector<OptimSlot>& slots, const SgdParams& p, const Tensor* grad_scale,
                const Tensor* hyper) override;
  void adam_step(const std::vector<OptimSlot>& slots, const AdamParams& p, const Tensor* grad_scale,
                 const Tensor* hyper) override;
  void global_norm(const std::vector<const Tensor*>& xs, Tensor& out) override;
  void clip_coefficient(const Tensor& norm, float max_norm, Tensor& coef) override;
  void count_nonfinite(const std::vector<const Tensor*>& values, Tensor& state) override;
  void metrics_add(const Tensor& loss, const Tensor& hits, float batch, Tensor& sums) override;

 private:
  void conv2d_bwd_data_unmasked(const Tensor& dy, const Tensor& w, Tensor& dx,
                                const Conv2dParams& prm);
  std::shared_ptr<Allocator> allocator_;
};

}  // namespace cudarts::cpu
