// The CUDA backend (internal): one stream and its cuBLAS/cuDNN handles per context.
// Every op is queued on the stream; nothing here synchronises the device except
// synchronize() itself and reads the API defines as host reads.
#pragma once
#include <array>
#include <map>
#include <memory>
#include <optional>

#include "backend.h"
#include "check.h"

namespace cudarts::cuda {

// Cached cuDNN descriptors (defined in cudnn_ops.cu).
struct ConvDescs;
struct CachedTensorDesc;
struct CachedPoolDesc;

class CudaAllocator final : public Allocator {
 public:
  explicit CudaAllocator(int device);
  ~CudaAllocator() override;

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* ptr) noexcept override;
};

class CudaBackend final : public Backend {
 public:
  // options: ContextOptions' TF32 switch, own-kernel switches and stream (the caller's
  // cudaStream_t, not owned, or nullptr for an own stream).
  CudaBackend(int device, const ContextOptions& options, std::shared_ptr<Allocator> allocator);
  ~CudaBackend() override;
  const char* name() const override { return "cuda"; }

  void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                  size_t bytes) override;
  void synchronize() override;
  void activate() override;
  void* stream() const override { return stream_; }
  void set_allow_tf32(bool allow) override;
  void set_own_depthwise_kernels(bool own) override { own_depthwise_ = own; }
  void set_own_pointwise_kernels(bool own) override { own_pointwise_ = own; }
  void set_own_pool_kernels(bool own) override { own_pool_ = own; }
  void set_own_norm_kernels(bool own) override { own_norm_ = own; }

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

  cudaStream_t cuda_stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }
  cudnnHandle_t cudnn() const { return cudnn_; }

  // A cuDNN convolution algorithm chosen once per shape (cudnn_ops.cu).
  struct ConvPlan {
    int algo = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t of the plan's direction
    cudnnMathType_t math_type = CUDNN_FMA_MATH;
    size_t workspace_bytes = 0;
  };
  // (direction, x (4), w (4), stride (2), pad (2), dilation (2), groups, allow_tf32)
  using ConvKey = std::array<int64_t, 17>;

 private:
  void conv2d_bwd_data_cudnn(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p);
  Tensor conv_input(const Tensor& x, const Conv2dParams& p, std::optional<Buffer>& scratch);
  // cuDNN descriptors, made on first use of a shape and kept (cudnn_ops.cu).
  const ConvDescs& conv_descs(const Shape& xs, const Shape& ws, const Shape& ys,
                              const Conv2dParams& p);
  cudnnTensorDescriptor_t nchw_desc(const Shape& s, const char* what);
  cudnnPoolingDescriptor_t pool_desc(const Pool2dParams& p);
  // At least `bytes` of cuDNN workspace on the device; grows, never shrinks.
  void* workspace(size_t bytes);
  // Device block: C ones at 0, C zeros at the next 256-byte boundary (cudnn_ops.cu,
  // second_half), the scale/bias cuDNN needs when BN has no affine parameters.
  const float* bn_ones_zeros(int64_t channels);
  // One-candidate views for affine-free BatchNorm on the normalised-mix kernels (cudnn_ops.cu).
  static Tensor one_row(const Tensor& t);
  Tensor unit_weight();

  int device_;
  bool allow_tf32_;
  bool own_depthwise_;  // depthwise convolutions on depthwise.cu's kernels where they cover them
  bool own_pointwise_;  // 1x1 convolutions on pointwise.cu's kernels where they cover them
  bool own_pool_;       // pooling on pool.cu's kernels where they cover it
  bool own_norm_;       // affine-free BatchNorm on norm_mix.cu's kernels
  std::shared_ptr<Allocator> allocator_;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = true;
  cublasHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  // Declared after allocator_, so they return their memory before it goes.
  std::map<ConvKey, ConvPlan> conv_plans_;
  std::map<ConvKey, std::shared_ptr<ConvDescs>> conv_descs_;
  std::map<std::array<int64_t, 4>, std::shared_ptr<CachedTensorDesc>> tensor_descs_;
  std::map<std::array<int, 7>, std::shared_ptr<CachedPoolDesc>> pool_descs_;
  std::optional<Buffer> workspace_;
  std::vector<Buffer> retired_workspaces_;  // outgrown while a captured graph may use them
  std::optional<Buffer> cublas_workspace_;  // fixed, so cuBLAS never allocates (graph capture)
  std::map<int64_t, Buffer> bn_ones_zeros_;
};

}  // namespace cudarts::cuda
