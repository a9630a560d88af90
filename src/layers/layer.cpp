// Layer base: validation around forward/backward, parameter and buffer bookkeeping,
// host-side parameter initialisation from the context's Philox stream.
#include "cudarts/layer.h"

#include <cmath>

#include "cudarts/error.h"
#include "cudarts/layers.h"
#include "cudarts/onnx.h"
#include "cudarts/ops.h"
#include "cudarts/philox.h"
#include "nvtx.h"

namespace cudarts {

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Train:
      return "train";
    case Mode::Eval:
      return "eval";
    case Mode::Probe:
      return "probe";
  }
  return "?";
}

Layer::Layer(std::string name) : name_(std::move(name)) {
  CUDARTS_CHECK(!name_.empty(), "a layer needs a non-empty name");
  CUDARTS_CHECK(name_.find('.') == std::string::npos, "layer name '", name_,
                "' contains '.', which separates path components");
}

Layer::~Layer() = default;

std::string Layer::label() const {
  return detail::cat(type(), " '", name_, "'");
}

namespace {
std::string forward_name(bool to_norm, bool lead) {
  if (to_norm && lead) return "forward_partial (after the leading convolution, to the norm)";
  if (lead) return "forward_partial (after the leading convolution)";
  return to_norm ? "forward_to_norm" : "forward";
}
}  // namespace

Tensor Layer::run_forward(Context& ctx, const Tensor& x, Mode mode, const PartialPass& pass) {
  CUDARTS_CHECK(x.defined(), label(), ": ", forward_name(pass.to_norm, pass.lead != nullptr),
                " got an undefined input");
  CUDARTS_CHECK(x.device() == ctx.device(), label(), ": input is ", x.describe(),
                " but the context is on ", ctx.device().str());
  const Shape out = output_shape(x.shape());
  CUDARTS_CHECK(!pass.to_norm || trailing_norm() != nullptr, label(),
                ": forward_to_norm on a layer without a trailing affine-free BatchNorm2d");
  CUDARTS_CHECK(!pass.lead_grads || pass.lead, label(),
                ": forward_partial with lead_grads but without the leading convolution's output");
  Shape lead_shape;
  if (pass.lead) {
    Conv2d* lead = leading_conv();
    CUDARTS_CHECK(lead != nullptr, label(),
                  ": forward_partial with a leading convolution's output, but this layer does not "
                  "start with a depthwise Conv2d");
    CUDARTS_CHECK(pass.lead->defined() && pass.lead->device() == ctx.device(), label(),
                  ": the leading convolution's output is ", pass.lead->describe(),
                  "; expected a tensor on ", ctx.device().str());
    lead_shape = lead->output_shape(x.shape());
    CUDARTS_CHECK(pass.lead->shape() == lead_shape, label(),
                  ": the leading convolution's output has shape ", pass.lead->shape(),
                  " but that convolution gives ", lead_shape, " for input ", x.shape());
  }
  if (range_forward_.empty()) {
    range_forward_ = label() + " forward";
    range_backward_ = label() + " backward";
  }
  NvtxRange nvtx(range_forward_.c_str());
  const bool partial = pass.to_norm || pass.lead;
  Tensor y = partial ? forward_partial_impl(ctx, x, mode, pass) : forward_impl(ctx, x, mode);
  CUDARTS_CHECK(y.shape() == out, label(), ": produced shape ", y.shape(), " but declared ", out);
  if (mode == Mode::Train) {
    awaiting_backward_ = true;
    to_norm_ = pass.to_norm;
    from_lead_ = pass.lead != nullptr;
    input_shape_ = x.shape();
    output_shape_ = out;
    lead_shape_ = lead_shape;
  }
  return y;
}

Tensor Layer::run_backward(Context& ctx, const Tensor& dy, const PartialPass& expected,
                           bool strict) {
  CUDARTS_CHECK(awaiting_backward_, label(),
                ": backward called without a preceding forward in Train mode");
  const bool partial = to_norm_ || from_lead_;
  if (strict)
    CUDARTS_CHECK(to_norm_ == expected.to_norm && !from_lead_ && !expected.lead, label(), ": ",
                  expected.to_norm ? "backward_from_norm" : "backward", " after ",
                  forward_name(to_norm_, from_lead_), "; the backward must match the forward (",
                  partial ? (from_lead_ ? "backward_partial" : "backward_from_norm") : "backward",
                  ")");
  else
    CUDARTS_CHECK(partial, label(), ": backward_partial after a full forward (use backward)");
  CUDARTS_CHECK(dy.defined() && dy.device() == ctx.device(), label(), ": gradient is ",
                dy.describe(), " but the context is on ", ctx.device().str());
  CUDARTS_CHECK(dy.shape() == output_shape_, label(), ": gradient dy has shape ", dy.shape(),
                " but the forward output had shape ", output_shape_);
  NvtxRange nvtx(range_backward_.c_str());
  Tensor dx = partial ? backward_partial_impl(ctx, dy) : backward_impl(ctx, dy);
  const Shape& want = from_lead_ ? lead_shape_ : input_shape_;
  const bool lead = from_lead_;
  awaiting_backward_ = false;
  to_norm_ = false;
  from_lead_ = false;
  release_saved_impl();
  CUDARTS_CHECK(dx.shape() == want, label(), ": backward produced shape ", dx.shape(), " for ",
                lead ? "the leading convolution's output" : "an input", " of shape ", want);
  return dx;
}

Tensor Layer::forward(Context& ctx, const Tensor& x, Mode mode) {
  return run_forward(ctx, x, mode, {});
}

Tensor Layer::backward(Context& ctx, const Tensor& dy) {
  return run_backward(ctx, dy, {}, true);
}

Tensor Layer::forward_to_norm(Context& ctx, const Tensor& x, Mode mode) {
  return run_forward(ctx, x, mode, {true, nullptr});
}

Tensor Layer::backward_from_norm(Context& ctx, const Tensor& dz) {
  return run_backward(ctx, dz, {true, nullptr}, true);
}

Tensor Layer::forward_partial(Context& ctx, const Tensor& x, Mode mode, const PartialPass& pass) {
  return run_forward(ctx, x, mode, pass);
}

Tensor Layer::backward_partial(Context& ctx, const Tensor& dz) {
  return run_backward(ctx, dz, {}, false);
}

Tensor Layer::forward_to_norm_impl(Context&, const Tensor&, Mode) {
  CUDARTS_FAIL(label(), ": no trailing norm to stop at");
}

Tensor Layer::backward_from_norm_impl(Context&, const Tensor&) {
  CUDARTS_FAIL(label(), ": no trailing norm to start from");
}

Tensor Layer::forward_partial_impl(Context& ctx, const Tensor& x, Mode mode,
                                   const PartialPass& pass) {
  CUDARTS_CHECK(!pass.lead, label(), ": no leading convolution to start after");
  return forward_to_norm_impl(ctx, x, mode);
}

Tensor Layer::backward_partial_impl(Context& ctx, const Tensor& dz) {
  return backward_from_norm_impl(ctx, dz);
}

std::string Layer::to_onnx(onnx::GraphBuilder& g, const std::string& x) {
  onnx::GraphBuilder::Scope scope(g, name_);
  return to_onnx_impl(g, x);
}

std::string Layer::to_onnx_impl(onnx::GraphBuilder&, const std::string&) {
  throw NotSupported(detail::cat(
      "ONNX export: ", label(),
      " has no ONNX form (search layers do not export: derive the architecture and export "
      "the retraining network)"));
}

void Layer::release_saved() {
  awaiting_backward_ = false;
  to_norm_ = false;
  release_saved_impl();
  for (Layer* c : children()) c->release_saved();
}

Parameter& Layer::add_parameter(Context& ctx, const std::string& name, const Shape& shape,
                                ParamKind kind) {
  for (auto& p : params_)
    CUDARTS_CHECK(p->name != name, label(), ": parameter '", name, "' added twice");
  auto p = std::make_unique<Parameter>();
  p->name = name;
  p->value = Tensor::zeros(ctx, shape);
  p->grad = Tensor::zeros(ctx, shape);
  p->kind = kind;
  params_.push_back(std::move(p));
  return *params_.back();
}

void Layer::add_buffer(const std::string& name, Tensor* buffer) {
  buffers_.emplace_back(name, buffer);
}

void Layer::collect(const std::string& prefix, std::vector<NamedParameter>* params,
                    std::vector<NamedBuffer>* buffers) {
  const std::string path = prefix.empty() ? name_ : prefix + "." + name_;
  if (params)
    for (auto& p : params_) params->emplace_back(path + "." + p->name, p.get());
  if (buffers)
    for (auto& [n, t] : buffers_) buffers->emplace_back(path + "." + n, t);
  for (Layer* c : children()) c->collect(path, params, buffers);
}

std::vector<NamedParameter> Layer::named_parameters() {
  std::vector<NamedParameter> out;
  collect("", &out, nullptr);
  return out;
}

std::vector<Parameter*> Layer::parameters() {
  std::vector<Parameter*> out;
  for (auto& [n, p] : named_parameters()) out.push_back(p);
  return out;
}

std::vector<NamedBuffer> Layer::named_buffers() {
  std::vector<NamedBuffer> out;
  collect("", nullptr, &out);
  return out;
}

void Layer::zero_grad(Context& ctx) {
  for (Parameter* p : parameters()) ops::fill(ctx, p->grad, 0.0f);
}

std::vector<float> draw_uniform(uint64_t seed, uint64_t offset, int64_t n, float low, float high) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = low + (high - low) * philox_uniform(philox_word(seed, offset, 0, uint64_t(i)));
  return v;
}

std::vector<float> draw_normal(uint64_t seed, uint64_t offset, int64_t n, float mean,
                               float stddev) {
  std::vector<float> v(static_cast<size_t>(n));
  const double two_pi = 6.283185307179586476925286766559;
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = philox_uniform(philox_word(seed, offset, 0, uint64_t(i)));
    const double u2 = philox_uniform(philox_word(seed, offset, 0, uint64_t(i + 1)));
    const double r = std::sqrt(-2.0 * std::log(u1));
    v[i] = static_cast<float>(mean + stddev * r * std::cos(two_pi * u2));
    if (i + 1 < n) v[i + 1] = static_cast<float>(mean + stddev * r * std::sin(two_pi * u2));
  }
  return v;
}

void init_uniform(Context& ctx, Tensor& t, float low, float high) {
  const uint64_t offset = ctx.reserve_rng(uint64_t(t.numel()));
  Tensor src =
      Tensor::from_vector(ctx, t.shape(), draw_uniform(ctx.seed(), offset, t.numel(), low, high));
  ops::copy(ctx, src, t);
}

void init_normal(Context& ctx, Tensor& t, float mean, float stddev) {
  const uint64_t offset = ctx.reserve_rng(uint64_t(t.numel() + 1));
  Tensor src =
      Tensor::from_vector(ctx, t.shape(), draw_normal(ctx.seed(), offset, t.numel(), mean, stddev));
  ops::copy(ctx, src, t);
}

}  // namespace cudarts
