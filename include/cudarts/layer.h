// Layer: the unit of a network, with a forward pass and a hand-written backward pass.
// Contract: forward(x, Mode::Train) keeps what backward needs inside the layer;
// backward(dy) returns dx (=) and accumulates parameter gradients (+=), then drops
// the kept activations. A layer instance is used once per forward (no weight sharing
// between two call sites).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/context.h"
#include "cudarts/tensor.h"

namespace cudarts {

namespace onnx {
class GraphBuilder;
}
class BatchNorm2d;
class Conv2d;

// Train: batch statistics, running statistics updated, activations kept for backward.
// Eval:  running statistics, nothing kept.
// Probe: batch statistics, running statistics untouched, nothing kept (used to score
//        candidate ops of Binary MixedOps without changing them).
enum class Mode { Train, Eval, Probe };
const char* mode_name(Mode m);

enum class ParamKind { Operational, Architecture };

struct Parameter {
  std::string name;  // local name within its layer, e.g. "weight"
  Tensor value;
  Tensor grad;  // same shape and device as value; accumulated by backward
  ParamKind kind = ParamKind::Operational;
  // Read by each Train forward: when false, that forward keeps nothing that only this
  // parameter's gradient needs and its backward leaves `grad` untouched (no work spent on it).
  // A first-order architecture step freezes the weights, the weight step the alphas.
  bool requires_grad = true;
  // Counts the changes of `value` made through cudarts (optimizer steps, architecture and
  // checkpoint loads); shared by the parameters that view one storage (shared alphas). What
  // caches a function of the value (a MixedOp's derived ops) compares it. After writing
  // `value` yourself, call mark_changed().
  std::shared_ptr<uint64_t> version = std::make_shared<uint64_t>(0);
  void mark_changed() { ++*version; }
};

// A forward that leaves out one or both ends of a layer's computation, which a
// ContinuousMixedOp then does for all its candidates at once (docs/DESIGN.md section 6):
// to_norm stops before the trailing norm (Layer::trailing_norm); lead gives the output of the
// leading convolution (Layer::leading_conv), computed by the caller from this layer's input, so
// the layer starts after it; with lead_grads the caller also computes that convolution's
// parameter gradients (Conv2d::lead_parameter_gradients, for several convolutions of one input
// at once), so backward_partial leaves them out.
struct PartialPass {
  bool to_norm = false;
  const Tensor* lead = nullptr;
  bool lead_grads = false;
};

using NamedParameter = std::pair<std::string, Parameter*>;
using NamedBuffer = std::pair<std::string, Tensor*>;

class Layer {
 public:
  explicit Layer(std::string name);
  virtual ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  virtual const char* type() const = 0;

  // Validates x against this layer (device, shape), then runs the forward pass.
  Tensor forward(Context& ctx, const Tensor& x, Mode mode);
  // Needs a preceding forward in Mode::Train; dy must have that forward's output shape.
  Tensor backward(Context& ctx, const Tensor& dy);
  // Output shape for an input shape; throws an Error naming this layer when x does not fit.
  virtual Shape output_shape(const Shape& x) const = 0;

  virtual std::vector<Layer*> children() const { return {}; }
  // True when the output is exactly zero whatever the input (Zero): a ContinuousMixedOp leaves
  // such a candidate out of its sum, its scores and its backward (no work is spent on it).
  virtual bool output_is_zero() const { return false; }
  // The BatchNorm2d this layer's output comes from when it is affine-free and unsynchronised:
  // the output is then a per-channel normalisation of an inner value z (a Sequential or a
  // FactorizedReduce ending in one, or the BatchNorm2d itself); nullptr otherwise. A
  // ContinuousMixedOp runs such candidates up to z (forward_to_norm), normalises and mixes them
  // all in one pass and gives each its gradient with respect to z (backward_from_norm), so no
  // normalised output is materialised (ops::mix_norm_fwd, docs/DESIGN.md section 6).
  virtual BatchNorm2d* trailing_norm() { return nullptr; }
  // forward without the trailing norm: returns z, the norm's input (the output's shape); in
  // Train keeps what backward_from_norm needs. The norm's statistics, running or batch, are the
  // caller's: nothing here reads or updates them.
  Tensor forward_to_norm(Context& ctx, const Tensor& x, Mode mode);
  // The backward of forward_to_norm: dz (the gradient with respect to z) -> dx.
  Tensor backward_from_norm(Context& ctx, const Tensor& dz);
  // The depthwise Conv2d this layer's computation starts with (the Conv2d itself, or a
  // Sequential's first layer's leading_conv), nullptr otherwise. A ContinuousMixedOp computes the
  // leading convolutions of such candidates in one op (ops::depthwise_group_fwd: the edge's
  // input read once) and their input gradient together with the other candidates' in another
  // (ops::depthwise_group_bwd_data).
  virtual Conv2d* leading_conv() { return nullptr; }
  // forward with the parts in `pass` left out (pass.lead: the leading convolution's output for
  // input x; checked against its shape). Train keeps what backward_partial needs.
  Tensor forward_partial(Context& ctx, const Tensor& x, Mode mode, const PartialPass& pass);
  // The backward of forward_partial: the gradient with respect to what that forward returned ->
  // with lead, the gradient with respect to the leading convolution's output (that
  // convolution's parameter gradients accumulated unless lead_grads left them to the caller;
  // its input gradient is the caller's), else dx.
  Tensor backward_partial(Context& ctx, const Tensor& dz);
  // This layer's and all descendants' parameters and buffers, with dotted paths.
  std::vector<NamedParameter> named_parameters();
  std::vector<Parameter*> parameters();
  std::vector<NamedBuffer> named_buffers();
  const std::vector<std::unique_ptr<Parameter>>& own_parameters() const { return params_; }
  void zero_grad(Context& ctx);
  // True while activations from a Train forward are held for backward.
  bool awaiting_backward() const { return awaiting_backward_; }
  // Drops activations kept for backward (this layer and its descendants).
  void release_saved();
  // Appends this layer's inference-mode ONNX nodes, reading the value named x, inside a scope
  // named after the layer; returns the output value's name (cudarts/onnx.h). NotSupported
  // naming this layer when it has no ONNX form.
  std::string to_onnx(onnx::GraphBuilder& g, const std::string& x);

 protected:
  virtual Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) = 0;
  virtual Tensor backward_impl(Context& ctx, const Tensor& dy) = 0;
  virtual void release_saved_impl() {}
  // The two halves of a layer with a trailing norm (the default fails: no trailing norm).
  virtual Tensor forward_to_norm_impl(Context& ctx, const Tensor& x, Mode mode);
  virtual Tensor backward_from_norm_impl(Context& ctx, const Tensor& dz);
  // The partial passes in general (the default: to_norm alone, through the two above).
  virtual Tensor forward_partial_impl(Context& ctx, const Tensor& x, Mode mode,
                                      const PartialPass& pass);
  virtual Tensor backward_partial_impl(Context& ctx, const Tensor& dz);
  // The parts the held forward left out (for backward_partial_impl): it stopped before the
  // trailing norm / it started after the leading convolution.
  bool held_to_norm() const { return to_norm_; }
  bool held_lead() const { return from_lead_; }
  // The default: no ONNX form (search layers).
  virtual std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x);

  Parameter& add_parameter(Context& ctx, const std::string& name, const Shape& shape,
                           ParamKind kind = ParamKind::Operational);
  void add_buffer(const std::string& name, Tensor* buffer);
  // "Conv2d 'stem.conv'" for messages.
  std::string label() const;
  // The input shape of the last forward.
  const Shape& last_input_shape() const { return input_shape_; }

 private:
  Tensor run_forward(Context& ctx, const Tensor& x, Mode mode, const PartialPass& pass);
  // `strict`: the held forward must be exactly `expected` (backward, backward_from_norm);
  // otherwise any partial forward (backward_partial).
  Tensor run_backward(Context& ctx, const Tensor& dy, const PartialPass& expected, bool strict);
  void collect(const std::string& prefix, std::vector<NamedParameter>* params,
               std::vector<NamedBuffer>* buffers);

  std::string name_;
  std::vector<std::unique_ptr<Parameter>> params_;
  std::vector<NamedBuffer> buffers_;
  bool awaiting_backward_ = false;
  bool to_norm_ = false;    // the held forward stopped before the trailing norm
  bool from_lead_ = false;  // the held forward started after the leading convolution
  Shape input_shape_, output_shape_, lead_shape_;
  std::string range_forward_, range_backward_;  // NVTX labels, built once
};

// Parameter initialisation, drawn on the host from ctx's Philox stream and uploaded, so a
// seed gives the same initial weights on every device.
void init_uniform(Context& ctx, Tensor& t, float low, float high);
void init_normal(Context& ctx, Tensor& t, float mean, float stddev);
// Host draws used by the initialisers (exposed for tests).
std::vector<float> draw_uniform(uint64_t seed, uint64_t offset, int64_t n, float low, float high);
std::vector<float> draw_normal(uint64_t seed, uint64_t offset, int64_t n, float mean, float stddev);

}  // namespace cudarts
