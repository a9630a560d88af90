// The built-in layers. Each keeps in Mode::Train exactly what its backward needs.
#pragma once
#include "cudarts/layer.h"
#include "cudarts/ops.h"

namespace cudarts {

// A kernel of kh rows and kw columns.
struct KernelSize {
  int h = 1, w = 1;
};

// Convolution, NCHW. Weights (out, in/groups, kh, kw) ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
class Conv2d final : public Layer {
 public:
  Conv2d(Context& ctx, std::string name, int64_t in_channels, int64_t out_channels, int kernel,
         Conv2dParams params = {}, bool bias = true);
  Conv2d(Context& ctx, std::string name, int64_t in_channels, int64_t out_channels,
         KernelSize kernel, Conv2dParams params = {}, bool bias = true);
  const char* type() const override { return "Conv2d"; }
  Shape output_shape(const Shape& x) const override;
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }
  const Conv2dParams& params() const { return params_; }
  // True for a depthwise convolution (groups = in = out channels, weight (C, 1, kh, kw)).
  bool depthwise() const;
  // This layer when depthwise: a caller may compute its output (forward_partial with lead) and
  // its input gradient (backward_partial then gives dy back, the parameter gradients done, or
  // with lead_grads left to the caller).
  Conv2d* leading_conv() override { return depthwise() ? this : nullptr; }
  // The parameter gradients that backward_partial left to the caller (forward_partial with
  // lead_grads) for convolutions of one input x (what their forward_partial got); dys[j] is
  // convs[j]'s output gradient (what its backward_partial returned). The depthwise ones without
  // bias (with the first one's ReLU rule) in one ops::depthwise_group_bwd_filter (the bits of
  // one by one), the others one by one;
  // a convolution whose parameters were frozen at its forward has none. Every convolution must
  // have had such a backward_partial since its last forward, and each gradient is added once.
  static void lead_parameter_gradients(Context& ctx, const Tensor& x,
                                       const std::vector<Conv2d*>& convs,
                                       const std::vector<const Tensor*>& dys);

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  Tensor forward_partial_impl(Context& ctx, const Tensor& x, Mode mode,
                              const PartialPass& pass) override;
  Tensor backward_partial_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override { x_ = Tensor(); }

 private:
  int64_t in_channels_, out_channels_;
  Conv2dParams params_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor x_;  // kept only when a parameter gradient is wanted
  Shape x_shape_;
  bool grad_weight_ = false, grad_bias_ = false;  // requires_grad at the last Train forward
  bool defer_grads_ = false;  // the last forward_partial left the parameter gradients to the caller
  bool grads_pending_ =
      false;  // ... and its backward_partial ran: lead_parameter_gradients owes them
  // The bookkeeping of a Train forward (which gradients, what is kept).
  void keep_for_backward(const Tensor& x, bool mask_needed);
  // The parameter gradients from the kept input and dy.
  void parameter_gradients(Context& ctx, const Tensor& dy);
  void check_no_pending_gradients() const;
};

// Batch normalisation over (N, H, W). affine = false: no gamma/beta (DARTS search cells).
class BatchNorm2d final : public Layer {
 public:
  BatchNorm2d(Context& ctx, std::string name, int64_t channels, bool affine = true,
              BatchNormParams params = {});
  const char* type() const override { return "BatchNorm2d"; }
  Shape output_shape(const Shape& x) const override;
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }
  Parameter* gamma() { return gamma_; }
  Parameter* beta() { return beta_; }
  // Synchronised BatchNorm: training statistics over the batches of every rank of the context's
  // communicator (cudarts/comm.h; every rank must pass the same number of images), two
  // reductions in forward, one in backward. One process: the same statistics as unsynchronised.
  void set_synchronized(bool on) { synchronized_ = on; }
  bool synchronized() const { return synchronized_; }
  const BatchNormParams& params() const { return params_; }
  // This layer when affine-free and unsynchronised (z = x: forward_to_norm is the identity).
  BatchNorm2d* trailing_norm() override { return gamma_ || synchronized_ ? nullptr : this; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  Tensor forward_to_norm_impl(Context&, const Tensor& x, Mode) override { return x.share(); }
  Tensor backward_from_norm_impl(Context&, const Tensor& dz) override { return dz.share(); }
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override;

 private:
  int64_t channels_;
  BatchNormParams params_;
  Parameter* gamma_ = nullptr;
  Parameter* beta_ = nullptr;
  Tensor running_mean_, running_var_;
  Tensor x_, save_mean_, save_invstd_;
  bool grad_gamma_ = false, grad_beta_ = false;  // requires_grad at the last Train forward
  bool synchronized_ = false;
};

class ReLU final : public Layer {
 public:
  explicit ReLU(std::string name);
  const char* type() const override { return "ReLU"; }
  Shape output_shape(const Shape& x) const override { return x; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override { y_ = Tensor(); }

 private:
  Tensor y_;
};

// Max or average pooling (average excludes padding from the count).
class Pool2d : public Layer {
 public:
  Pool2d(std::string name, Pool2dParams params);
  const char* type() const override;
  Shape output_shape(const Shape& x) const override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override;

 private:
  Pool2dParams params_;
  Tensor x_, y_;
};

class MaxPool2d final : public Pool2d {
 public:
  MaxPool2d(std::string name, int kernel, int stride, int pad = 0)
      : Pool2d(std::move(name), Pool2dParams::make(PoolMode::Max, kernel, stride, pad)) {}
};

class AvgPool2d final : public Pool2d {
 public:
  AvgPool2d(std::string name, int kernel, int stride, int pad = 0)
      : Pool2d(std::move(name), Pool2dParams::make(PoolMode::Average, kernel, stride, pad)) {}
};

// y = x w^T + b on (N, in) inputs. Weights and bias ~ U(-1/sqrt(in), 1/sqrt(in)).
class Linear final : public Layer {
 public:
  Linear(Context& ctx, std::string name, int64_t in_features, int64_t out_features,
         bool bias = true);
  const char* type() const override { return "Linear"; }
  Shape output_shape(const Shape& x) const override;
  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override { x_ = Tensor(); }

 private:
  int64_t in_features_, out_features_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Tensor x_;  // kept only when a parameter gradient is wanted
  Shape x_shape_;
  bool grad_weight_ = false, grad_bias_ = false;  // requires_grad at the last Train forward
};

class Identity final : public Layer {
 public:
  explicit Identity(std::string name);
  const char* type() const override { return "Identity"; }
  Shape output_shape(const Shape& x) const override { return x; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
};

// The DARTS 'none' op: zeros of shape (N, C, ceil(H/stride), ceil(W/stride)).
class Zero final : public Layer {
 public:
  Zero(std::string name, int stride = 1);
  const char* type() const override { return "Zero"; }
  bool output_is_zero() const override { return true; }
  Shape output_shape(const Shape& x) const override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;

 private:
  int stride_;
  Shape input_shape_;
};

// (N, C, H, W) -> (N, C)
class GlobalAvgPool final : public Layer {
 public:
  explicit GlobalAvgPool(std::string name);
  const char* type() const override { return "GlobalAvgPool"; }
  Shape output_shape(const Shape& x) const override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;

 private:
  Shape input_shape_;
};

// (N, ...) -> (N, rest), sharing storage.
class Flatten final : public Layer {
 public:
  explicit Flatten(std::string name);
  const char* type() const override { return "Flatten"; }
  Shape output_shape(const Shape& x) const override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;

 private:
  Shape input_shape_;
};

}  // namespace cudarts
