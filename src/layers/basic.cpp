// The built-in layers: forward keeps (in Mode::Train) exactly what backward needs.
#include <algorithm>
#include <cmath>
#include <limits>

#include "cudarts/comm.h"
#include "cudarts/error.h"
#include "cudarts/layers.h"
#include "cudarts/onnx.h"

namespace cudarts {

namespace {
// requires_grad of an optional parameter.
bool wants_grad(const Parameter* p) {
  return p != nullptr && p->requires_grad;
}

// Where an op that computes a parameter's gradient together with a sibling's (weight and bias,
// gamma and beta) accumulates it: the parameter's own gradient when `wanted`, otherwise a
// scratch tensor (`sink`) that is dropped. nullptr for an absent parameter.
Tensor* grad_target(Context& ctx, Parameter* p, bool wanted, Tensor& sink) {
  if (p == nullptr) return nullptr;
  if (wanted) return &p->grad;
  sink = Tensor::zeros(ctx, p->grad.shape());
  return &sink;
}

// Synchronised BatchNorm: the values per channel over all ranks (each passes as many images).
double sync_count(const Context& ctx, const Tensor& x) {
  return double(x.dim(0) * x.dim(2) * x.dim(3)) * double(ctx.communicator().size());
}
}  // namespace

// ---------------------------------------------------------------- Conv2d
Conv2d::Conv2d(Context& ctx, std::string name, int64_t in_channels, int64_t out_channels,
               int kernel, Conv2dParams params, bool bias)
    : Conv2d(ctx, std::move(name), in_channels, out_channels, KernelSize{kernel, kernel}, params,
             bias) {}

Conv2d::Conv2d(Context& ctx, std::string name, int64_t in_channels, int64_t out_channels,
               KernelSize kernel, Conv2dParams params, bool bias)
    : Layer(std::move(name)),
      in_channels_(in_channels),
      out_channels_(out_channels),
      params_(params) {
  CUDARTS_CHECK(in_channels > 0 && out_channels > 0 && kernel.h > 0 && kernel.w > 0, label(),
                ": in_channels ", in_channels, ", out_channels ", out_channels, " and kernel ",
                kernel.h, "x", kernel.w, " must be positive");
  CUDARTS_CHECK(
      params.groups >= 1 && in_channels % params.groups == 0 && out_channels % params.groups == 0,
      label(), ": groups ", params.groups, " must divide in_channels ", in_channels,
      " and out_channels ", out_channels);
  CUDARTS_CHECK(params.stride_h >= 1 && params.stride_w >= 1 && params.dilation_h >= 1 &&
                    params.dilation_w >= 1 && params.pad_h >= 0 && params.pad_w >= 0,
                label(), ": stride (", params.stride_h, ", ", params.stride_w, ") and dilation (",
                params.dilation_h, ", ", params.dilation_w, ") must be >= 1, padding (",
                params.pad_h, ", ", params.pad_w, ") >= 0");
  const Shape ws{out_channels, in_channels / params.groups, kernel.h, kernel.w};
  weight_ = &add_parameter(ctx, "weight", ws);
  const float bound = 1.0f / std::sqrt(float(ws[1] * ws[2] * ws[3]));
  init_uniform(ctx, weight_->value, -bound, bound);
  if (bias) {
    bias_ = &add_parameter(ctx, "bias", Shape{out_channels});
    init_uniform(ctx, bias_->value, -bound, bound);
  }
}

Shape Conv2d::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4 && x[1] == in_channels_, label(), ": input shape ", x,
                " does not match in_channels ", in_channels_, " (expected [N, ", in_channels_,
                ", H, W])");
  try {
    return ops::conv2d_output_shape(x, weight_->value.shape(), params_);
  } catch (const Error& e) {
    CUDARTS_FAIL(label(), ": ", e.what());
  }
}

bool Conv2d::depthwise() const {
  const Shape& w = weight_->value.shape();
  return params_.groups > 1 && params_.groups == in_channels_ && out_channels_ == in_channels_ &&
         w[1] == 1;
}

void Conv2d::keep_for_backward(const Tensor& x, bool mask_needed) {
  grad_weight_ = weight_->requires_grad;
  grad_bias_ = wants_grad(bias_);
  x_ = grad_weight_ || grad_bias_ || mask_needed ? x.share() : Tensor();
  x_shape_ = x.shape();
}

void Conv2d::parameter_gradients(Context& ctx, const Tensor& dy) {
  if (!grad_weight_ && !grad_bias_) return;
  Tensor sink;
  ops::conv2d_bwd_filter(ctx, x_, dy, *grad_target(ctx, weight_, grad_weight_, sink),
                         grad_bias_ ? &bias_->grad : nullptr, params_);
}

Tensor Conv2d::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  check_no_pending_gradients();
  Tensor y = Tensor::empty(ctx, output_shape(x.shape()));
  ops::conv2d_fwd(ctx, x, weight_->value, bias_ ? &bias_->value : nullptr, y, params_);
  // The input: for the filter gradient, and with a fused ReLU for its mask too.
  if (mode == Mode::Train) keep_for_backward(x, params_.relu_input);
  return y;
}

Tensor Conv2d::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, x_shape_);
  ops::conv2d_bwd_data(ctx, dy, weight_->value, dx, params_, params_.relu_input ? &x_ : nullptr);
  parameter_gradients(ctx, dy);
  return dx;
}

// The output was computed by the caller (pass.lead, shape checked by Layer); the input gradient
// is the caller's too, so the input is kept only for the parameter gradients, and not at all
// when those are the caller's as well (lead_grads).
Tensor Conv2d::forward_partial_impl(Context&, const Tensor& x, Mode mode, const PartialPass& pass) {
  check_no_pending_gradients();
  if (mode == Mode::Train) {
    keep_for_backward(x, false);
    defer_grads_ = pass.lead_grads;
    if (defer_grads_) x_ = Tensor();
  }
  return pass.lead->share();
}

Tensor Conv2d::backward_partial_impl(Context& ctx, const Tensor& dy) {
  if (defer_grads_)
    grads_pending_ = true;
  else
    parameter_gradients(ctx, dy);
  defer_grads_ = false;
  return dy.share();
}

void Conv2d::check_no_pending_gradients() const {
  CUDARTS_CHECK(!grads_pending_, label(),
                ": forward before the parameter gradients its last backward_partial left to the "
                "caller were computed (Conv2d::lead_parameter_gradients)");
}

void Conv2d::lead_parameter_gradients(Context& ctx, const Tensor& x,
                                      const std::vector<Conv2d*>& convs,
                                      const std::vector<const Tensor*>& dys) {
  CUDARTS_CHECK(dys.size() == convs.size(), "Conv2d::lead_parameter_gradients: ", convs.size(),
                " convolutions but ", dys.size(),
                " output gradients; expected one per convolution");
  // Every check before anything is added or marked done.
  for (size_t j = 0; j < convs.size(); ++j) {
    CUDARTS_CHECK(convs[j] != nullptr && dys[j] != nullptr,
                  "Conv2d::lead_parameter_gradients: ", "convolution or output gradient ", j,
                  " is null");
    const Conv2d& c = *convs[j];
    CUDARTS_CHECK(std::find(convs.begin(), convs.begin() + ptrdiff_t(j), convs[j]) ==
                      convs.begin() + ptrdiff_t(j),
                  c.label(), ": given twice to lead_parameter_gradients");
    CUDARTS_CHECK(c.grads_pending_, c.label(),
                  ": lead_parameter_gradients without a backward_partial that left them to the "
                  "caller (forward_partial with lead_grads) since the last forward");
    CUDARTS_CHECK(x.shape() == c.last_input_shape(), c.label(), ": lead_parameter_gradients got x ",
                  x.shape(), " but the forward's input had shape ", c.last_input_shape());
    CUDARTS_CHECK(dys[j]->shape() == c.output_shape(x.shape()), c.label(),
                  ": lead_parameter_gradients got an output gradient of shape ", dys[j]->shape(),
                  "; expected ", c.output_shape(x.shape()));
  }
  std::vector<const Tensor*> group_dys;
  std::vector<Conv2dParams> group_ps;
  std::vector<Tensor*> group_dws;
  for (size_t j = 0; j < convs.size(); ++j) {
    Conv2d& c = *convs[j];
    c.grads_pending_ = false;
    if (!c.grad_weight_ && !c.grad_bias_) continue;
    // The group reads x with one ReLU rule: the first grouped convolution's.
    if (c.depthwise() && !c.bias_ && c.grad_weight_ &&
        (group_ps.empty() || group_ps[0].relu_input == c.params_.relu_input)) {
      group_dys.push_back(dys[j]);
      group_ps.push_back(c.params_);
      group_dws.push_back(&c.weight_->grad);
      continue;
    }
    Tensor sink;
    ops::conv2d_bwd_filter(ctx, x, *dys[j], *grad_target(ctx, c.weight_, c.grad_weight_, sink),
                           c.grad_bias_ ? &c.bias_->grad : nullptr, c.params_);
  }
  if (!group_dws.empty()) ops::depthwise_group_bwd_filter(ctx, x, group_dys, group_ps, group_dws);
}

// ---------------------------------------------------------------- BatchNorm2d
BatchNorm2d::BatchNorm2d(Context& ctx, std::string name, int64_t channels, bool affine,
                         BatchNormParams params)
    : Layer(std::move(name)), channels_(channels), params_(params) {
  CUDARTS_CHECK(channels > 0, label(), ": channels ", channels, " must be positive");
  CUDARTS_CHECK(params.eps > 0.0f && params.momentum >= 0.0f && params.momentum <= 1.0f, label(),
                ": eps ", params.eps, " must be > 0 and momentum ", params.momentum, " in [0, 1]");
  if (affine) {
    gamma_ = &add_parameter(ctx, "weight", Shape{channels});
    beta_ = &add_parameter(ctx, "bias", Shape{channels});
    ops::fill(ctx, gamma_->value, 1.0f);
  }
  running_mean_ = Tensor::zeros(ctx, Shape{channels});
  running_var_ = Tensor::full(ctx, Shape{channels}, 1.0f);
  add_buffer("running_mean", &running_mean_);
  add_buffer("running_var", &running_var_);
}

Shape BatchNorm2d::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4 && x[1] == channels_, label(), ": input shape ", x,
                " does not match channels ", channels_, " (expected [N, ", channels_, ", H, W])");
  return x;
}

Tensor BatchNorm2d::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = Tensor::empty(ctx, x.shape());
  const Tensor* g = gamma_ ? &gamma_->value : nullptr;
  const Tensor* b = beta_ ? &beta_->value : nullptr;
  if (mode == Mode::Eval) {
    ops::batchnorm_fwd_infer(ctx, x, g, b, running_mean_, running_var_, y, params_.eps);
    return y;
  }
  Tensor mean = Tensor::empty(ctx, Shape{channels_});
  Tensor invstd = Tensor::empty(ctx, Shape{channels_});
  const bool update = mode == Mode::Train;
  if (synchronized_) {
    // Two passes, each reduced over the ranks: the mean, then the moments about it.
    Communicator& comm = ctx.communicator();
    const double count = sync_count(ctx, x);
    Tensor zero = Tensor::zeros(ctx, Shape{channels_}),
           mean0 = Tensor::empty(ctx, Shape{channels_});
    Tensor var = Tensor::empty(ctx, Shape{channels_});
    Tensor moments = Tensor::empty(ctx, Shape{2, channels_});
    ops::batchnorm_moments(ctx, x, zero, moments);
    comm.all_reduce(ctx, moments, ReduceOp::Sum);
    ops::batchnorm_moments_finish(ctx, moments, zero, count, mean0, var, invstd, nullptr, nullptr,
                                  params_);
    ops::batchnorm_moments(ctx, x, mean0, moments);
    comm.all_reduce(ctx, moments, ReduceOp::Sum);
    ops::batchnorm_moments_finish(ctx, moments, mean0, count, mean, var, invstd,
                                  update ? &running_mean_ : nullptr,
                                  update ? &running_var_ : nullptr, params_);
    ops::batchnorm_fwd_infer(ctx, x, g, b, mean, var, y, params_.eps);
  } else {
    ops::batchnorm_fwd_train(ctx, x, g, b, update ? &running_mean_ : nullptr,
                             update ? &running_var_ : nullptr, y, mean, invstd, params_);
  }
  if (mode == Mode::Train) {
    x_ = x.share();
    save_mean_ = std::move(mean);
    save_invstd_ = std::move(invstd);
    grad_gamma_ = wants_grad(gamma_);
    grad_beta_ = wants_grad(beta_);
  }
  return y;
}

Tensor BatchNorm2d::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, x_.shape());
  // batchnorm_bwd computes dgamma and dbeta together: both, or neither when neither is wanted.
  const bool affine_grads = grad_gamma_ || grad_beta_;
  Tensor sink_gamma, sink_beta;
  if (synchronized_) {
    Tensor sums = Tensor::empty(ctx, Shape{2, channels_});
    ops::batchnorm_bwd_sums(ctx, dy, x_, save_mean_, save_invstd_, sums);
    // The parameter gradients are this rank's share (the optimizer averages over the ranks).
    if (grad_gamma_) ops::axpy(ctx, 1.0f, sums.slice(1, 2).reshape(Shape{channels_}), gamma_->grad);
    if (grad_beta_) ops::axpy(ctx, 1.0f, sums.slice(0, 1).reshape(Shape{channels_}), beta_->grad);
    ctx.communicator().all_reduce(ctx, sums, ReduceOp::Sum);
    ops::batchnorm_bwd_apply(ctx, dy, x_, gamma_ ? &gamma_->value : nullptr, save_mean_,
                             save_invstd_, sums, sync_count(ctx, x_), dx);
    return dx;
  }
  ops::batchnorm_bwd(ctx, dy, x_, gamma_ ? &gamma_->value : nullptr, save_mean_, save_invstd_, dx,
                     affine_grads ? grad_target(ctx, gamma_, grad_gamma_, sink_gamma) : nullptr,
                     affine_grads ? grad_target(ctx, beta_, grad_beta_, sink_beta) : nullptr);
  return dx;
}

void BatchNorm2d::release_saved_impl() {
  x_ = Tensor();
  save_mean_ = Tensor();
  save_invstd_ = Tensor();
}

// ---------------------------------------------------------------- ReLU
ReLU::ReLU(std::string name) : Layer(std::move(name)) {}

Tensor ReLU::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = Tensor::empty(ctx, x.shape());
  ops::relu_fwd(ctx, x, y);
  if (mode == Mode::Train) y_ = y.share();
  return y;
}

Tensor ReLU::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, dy.shape());
  ops::relu_bwd(ctx, dy, y_, dx);
  return dx;
}

// ---------------------------------------------------------------- Pool2d
Pool2d::Pool2d(std::string name, Pool2dParams params) : Layer(std::move(name)), params_(params) {
  CUDARTS_CHECK(params.kernel_h >= 1 && params.kernel_w >= 1 && params.stride_h >= 1 &&
                    params.stride_w >= 1 && params.pad_h >= 0 && params.pad_w >= 0 &&
                    2 * params.pad_h <= params.kernel_h && 2 * params.pad_w <= params.kernel_w,
                label(), ": kernel ", params.kernel_h, "x", params.kernel_w, ", stride ",
                params.stride_h, "x", params.stride_w, ", padding ", params.pad_h, "x",
                params.pad_w, ": kernel and stride must be >= 1, padding in [0, kernel/2]");
}

const char* Pool2d::type() const {
  return params_.mode == PoolMode::Max ? "MaxPool2d" : "AvgPool2d";
}

Shape Pool2d::output_shape(const Shape& x) const {
  try {
    return ops::pool2d_output_shape(x, params_);
  } catch (const Error& e) {
    CUDARTS_FAIL(label(), ": ", e.what());
  }
}

Tensor Pool2d::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = Tensor::empty(ctx, output_shape(x.shape()));
  ops::pool2d_fwd(ctx, x, y, params_);
  if (mode == Mode::Train) {
    x_ = x.share();
    y_ = y.share();
  }
  return y;
}

Tensor Pool2d::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, x_.shape());
  ops::pool2d_bwd(ctx, x_, y_, dy, dx, params_);
  return dx;
}

void Pool2d::release_saved_impl() {
  x_ = Tensor();
  y_ = Tensor();
}

// ---------------------------------------------------------------- Linear
Linear::Linear(Context& ctx, std::string name, int64_t in_features, int64_t out_features, bool bias)
    : Layer(std::move(name)), in_features_(in_features), out_features_(out_features) {
  CUDARTS_CHECK(in_features > 0 && out_features > 0, label(), ": in_features ", in_features,
                " and out_features ", out_features, " must be positive");
  weight_ = &add_parameter(ctx, "weight", Shape{out_features, in_features});
  const float bound = 1.0f / std::sqrt(float(in_features));
  init_uniform(ctx, weight_->value, -bound, bound);
  if (bias) {
    bias_ = &add_parameter(ctx, "bias", Shape{out_features});
    init_uniform(ctx, bias_->value, -bound, bound);
  }
}

Shape Linear::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 2 && x[1] == in_features_, label(), ": input shape ", x,
                " does not match in_features ", in_features_, " (expected [N, ", in_features_,
                "])");
  return Shape{x[0], out_features_};
}

Tensor Linear::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = Tensor::empty(ctx, output_shape(x.shape()));
  ops::linear_fwd(ctx, x, weight_->value, bias_ ? &bias_->value : nullptr, y);
  if (mode == Mode::Train) {
    grad_weight_ = weight_->requires_grad;
    grad_bias_ = wants_grad(bias_);
    x_ = grad_weight_ || grad_bias_ ? x.share() : Tensor();
    x_shape_ = x.shape();
  }
  return y;
}

Tensor Linear::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, x_shape_);
  ops::linear_bwd_data(ctx, dy, weight_->value, dx);
  if (grad_weight_ || grad_bias_) {
    Tensor sink;
    ops::linear_bwd_weight(ctx, x_, dy, *grad_target(ctx, weight_, grad_weight_, sink),
                           grad_bias_ ? &bias_->grad : nullptr);
  }
  return dx;
}

// ---------------------------------------------------------------- Identity
Identity::Identity(std::string name) : Layer(std::move(name)) {}
Tensor Identity::forward_impl(Context&, const Tensor& x, Mode) {
  return x.share();
}
Tensor Identity::backward_impl(Context&, const Tensor& dy) {
  return dy.share();
}

// ---------------------------------------------------------------- Zero
Zero::Zero(std::string name, int stride) : Layer(std::move(name)), stride_(stride) {
  CUDARTS_CHECK(stride >= 1, label(), ": stride ", stride, " must be >= 1");
}

Shape Zero::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4, label(), ": input shape ", x, ", expected (N, C, H, W)");
  return Shape{x[0], x[1], (x[2] + stride_ - 1) / stride_, (x[3] + stride_ - 1) / stride_};
}

Tensor Zero::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  if (mode == Mode::Train) input_shape_ = x.shape();
  return Tensor::zeros(ctx, output_shape(x.shape()));
}

Tensor Zero::backward_impl(Context& ctx, const Tensor&) {
  return Tensor::zeros(ctx, input_shape_);
}

// ---------------------------------------------------------------- GlobalAvgPool
GlobalAvgPool::GlobalAvgPool(std::string name) : Layer(std::move(name)) {}

Shape GlobalAvgPool::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4, label(), ": input shape ", x, ", expected (N, C, H, W)");
  return Shape{x[0], x[1]};
}

Tensor GlobalAvgPool::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor y = Tensor::empty(ctx, output_shape(x.shape()));
  ops::global_avgpool_fwd(ctx, x, y);
  if (mode == Mode::Train) input_shape_ = x.shape();
  return y;
}

Tensor GlobalAvgPool::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dx = Tensor::empty(ctx, input_shape_);
  ops::global_avgpool_bwd(ctx, dy, dx);
  return dx;
}

// ---------------------------------------------------------------- Flatten
Flatten::Flatten(std::string name) : Layer(std::move(name)) {}

Shape Flatten::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() >= 1, label(), ": input shape ", x, " has no batch dimension");
  return Shape{x[0], x[0] ? x.numel() / x[0] : 0};
}

Tensor Flatten::forward_impl(Context&, const Tensor& x, Mode mode) {
  if (mode == Mode::Train) input_shape_ = x.shape();
  return x.reshape(output_shape(x.shape()));
}

Tensor Flatten::backward_impl(Context&, const Tensor& dy) {
  return dy.reshape(input_shape_);
}

// ---------------------------------------------------------------- ONNX forms (inference)
using onnx::Attribute;

std::string Conv2d::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  const Shape w = weight_->value.shape();
  std::vector<std::string> in{x, g.weight("weight", weight_->value)};
  if (bias_) in.push_back(g.weight("bias", bias_->value));
  if (params_.relu_input) in[0] = g.node("Relu", {x});  // the fused ReLU
  return g.node(
      "Conv", in,
      {Attribute::of("kernel_shape", {w[2], w[3]}),
       Attribute::of("strides", {params_.stride_h, params_.stride_w}),
       Attribute::of("pads", {params_.pad_h, params_.pad_w, params_.pad_h, params_.pad_w}),
       Attribute::of("dilations", {params_.dilation_h, params_.dilation_w}),
       Attribute::of("group", int64_t(params_.groups))});
}

std::string BatchNorm2d::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  const size_t c = size_t(channels_);
  const std::string scale = gamma_ ? g.weight("weight", gamma_->value)
                                   : g.constant("weight", {channels_}, std::vector<float>(c, 1.0f));
  const std::string shift = beta_ ? g.weight("bias", beta_->value)
                                  : g.constant("bias", {channels_}, std::vector<float>(c, 0.0f));
  const std::string mean = g.weight("running_mean", running_mean_);
  const std::string var = g.weight("running_var", running_var_);
  return g.node("BatchNormalization", {x, scale, shift, mean, var},
                {Attribute::of_float("epsilon", params_.eps)});
}

std::string ReLU::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  return g.node("Relu", {x});
}

std::string Pool2d::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  std::vector<Attribute> a{
      Attribute::of("kernel_shape", {params_.kernel_h, params_.kernel_w}),
      Attribute::of("strides", {params_.stride_h, params_.stride_w}),
      Attribute::of("pads", {params_.pad_h, params_.pad_w, params_.pad_h, params_.pad_w})};
  if (params_.mode == PoolMode::Max) return g.node("MaxPool", {x}, a);
  a.push_back(Attribute::of("count_include_pad", int64_t(0)));  // padding not counted
  return g.node("AveragePool", {x}, a);
}

std::string Linear::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  std::vector<std::string> in{x, g.weight("weight", weight_->value)};
  if (bias_) in.push_back(g.weight("bias", bias_->value));
  return g.node("Gemm", in, {Attribute::of("transB", int64_t(1))});  // x w^T + b
}

std::string Identity::to_onnx_impl(onnx::GraphBuilder&, const std::string& x) {
  return x;
}

std::string Zero::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  std::string shaped = x;
  if (stride_ > 1) {
    // Every stride-th row and column: ceil(H / stride) of them, the Zero layer's output size.
    const int64_t big = std::numeric_limits<int64_t>::max();
    shaped = g.node("Slice",
                    {x, g.constant_i64("starts", {0, 0}), g.constant_i64("ends", {big, big}),
                     g.constant_i64("axes", {2, 3}), g.constant_i64("steps", {stride_, stride_})});
  }
  return g.node("ConstantOfShape", {g.node("Shape", {shaped})},
                {Attribute::of_tensor("value", {0.0f})});
}

std::string GlobalAvgPool::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  return g.node("Flatten", {g.node("GlobalAveragePool", {x})}, {Attribute::of("axis", int64_t(1))});
}

std::string Flatten::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  return g.node("Flatten", {x}, {Attribute::of("axis", int64_t(1))});
}

}  // namespace cudarts
