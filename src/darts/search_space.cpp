// DARTS primitives, FactorizedReduce, DropPath, the search network and the discrete
// (genotype) network. Cells are Graphs with inputs "s0", "s1"; the networks chain them and sum
// the gradients of states that feed two cells.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "cudarts/darts.h"
#include "cudarts/error.h"
#include "cudarts/onnx.h"
#include "cudarts/ops.h"
#include "grad_sum.h"

namespace cudarts::darts {

const std::vector<std::string>& primitives() {
  static const std::vector<std::string> p = {"none",         "max_pool_3x3", "avg_pool_3x3",
                                             "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                                             "dil_conv_3x3", "dil_conv_5x5"};
  return p;
}

std::unique_ptr<Layer> relu_conv_bn(Context& ctx, const std::string& name, int64_t c_in,
                                    int64_t c_out, int kernel, int stride, int pad, bool affine,
                                    bool fuse_relu) {
  auto s = std::make_unique<Sequential>(name);
  // A 1x1 convolution takes the ReLU as it loads (the own pointwise kernels apply it for free);
  // other kernel sizes keep a ReLU layer (cuDNN would need a scratch pass in two directions).
  const bool fused = fuse_relu && kernel == 1;
  if (!fused) s->emplace<ReLU>("relu");
  Conv2dParams p = Conv2dParams::make(stride, pad);
  p.relu_input = fused;
  s->emplace<Conv2d>(ctx, "conv", c_in, c_out, kernel, p, false);
  s->emplace<BatchNorm2d>(ctx, "bn", c_out, affine);
  return s;
}

namespace {
// ReLU - depthwise k x k (stride, pad, dilation) - pointwise - BN, appended to `s`. The ReLU is
// fused into the depthwise convolution (Conv2dParams::relu_input): its output is never
// materialised, and the own depthwise kernels apply it as they load their input.
void add_dw_pw_bn(Context& ctx, Sequential& s, const std::string& suffix, int64_t c_in,
                  int64_t c_out, int kernel, int stride, int pad, int dilation, bool affine,
                  bool fuse_relu) {
  Conv2dParams dw = Conv2dParams::make(stride, pad, dilation, int(c_in));
  dw.relu_input = fuse_relu;
  if (!fuse_relu) s.emplace<ReLU>("relu" + suffix);
  s.emplace<Conv2d>(ctx, "dw" + suffix, c_in, c_in, kernel, dw, false);
  s.emplace<Conv2d>(ctx, "pw" + suffix, c_in, c_out, 1, Conv2dParams{}, false);
  s.emplace<BatchNorm2d>(ctx, "bn" + suffix, c_out, affine);
}

std::unique_ptr<Layer> pool_primitive(Context& ctx, const std::string& name, PoolMode mode,
                                      int64_t c, int stride, bool search) {
  std::unique_ptr<Layer> pool;
  if (mode == PoolMode::Max)
    pool = std::make_unique<MaxPool2d>(search ? "pool" : name, 3, stride, 1);
  else
    pool = std::make_unique<AvgPool2d>(search ? "pool" : name, 3, stride, 1);
  if (!search) return pool;
  auto s = std::make_unique<Sequential>(name);
  s->add(std::move(pool));
  s->emplace<BatchNorm2d>(ctx, "bn", c, false);
  return s;
}
}  // namespace

std::unique_ptr<Layer> make_primitive(Context& ctx, const std::string& primitive,
                                      const std::string& name, int64_t c, int stride, bool affine,
                                      bool search, bool fuse_relu) {
  if (primitive == "none") return std::make_unique<Zero>(name, stride);
  if (primitive == "max_pool_3x3")
    return pool_primitive(ctx, name, PoolMode::Max, c, stride, search);
  if (primitive == "avg_pool_3x3")
    return pool_primitive(ctx, name, PoolMode::Average, c, stride, search);
  if (primitive == "skip_connect") {
    if (stride == 1) return std::make_unique<Identity>(name);
    return std::make_unique<FactorizedReduce>(ctx, name, c, c, affine);
  }
  if (primitive == "sep_conv_3x3" || primitive == "sep_conv_5x5") {
    const int k = primitive == "sep_conv_3x3" ? 3 : 5;
    auto s = std::make_unique<Sequential>(name);
    add_dw_pw_bn(ctx, *s, "1", c, c, k, stride, k / 2, 1, affine, fuse_relu);
    add_dw_pw_bn(ctx, *s, "2", c, c, k, 1, k / 2, 1, affine, fuse_relu);
    return s;
  }
  if (primitive == "dil_conv_3x3" || primitive == "dil_conv_5x5") {
    const int k = primitive == "dil_conv_3x3" ? 3 : 5;
    auto s = std::make_unique<Sequential>(name);
    add_dw_pw_bn(ctx, *s, "", c, c, k, stride, k - 1, 2, affine, fuse_relu);
    return s;
  }
  CUDARTS_FAIL("unknown DARTS primitive '", primitive,
               "'; expected none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, "
               "sep_conv_5x5, dil_conv_3x3 or dil_conv_5x5");
}

// ---------------------------------------------------------------- FactorizedReduce
FactorizedReduce::FactorizedReduce(Context& ctx, std::string name, int64_t c_in, int64_t c_out,
                                   bool affine)
    : Layer(std::move(name)), c_in_(c_in), c_out_(c_out) {
  CUDARTS_CHECK(c_out % 2 == 0, label(), ": c_out ", c_out, " must be even");
  relu_ = std::make_unique<ReLU>("relu");
  conv1_ =
      std::make_unique<Conv2d>(ctx, "conv_1", c_in, c_out / 2, 1, Conv2dParams::make(2, 0), false);
  conv2_ =
      std::make_unique<Conv2d>(ctx, "conv_2", c_in, c_out / 2, 1, Conv2dParams::make(2, 0), false);
  bn_ = std::make_unique<BatchNorm2d>(ctx, "bn", c_out, affine);
}

std::vector<Layer*> FactorizedReduce::children() const {
  return {relu_.get(), conv1_.get(), conv2_.get(), bn_.get()};
}

Shape FactorizedReduce::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4 && x[1] == c_in_, label(), ": input shape ", x,
                " does not match c_in ", c_in_, " (expected [N, ", c_in_, ", H, W])");
  CUDARTS_CHECK(x[2] % 2 == 0 && x[3] % 2 == 0 && x[2] >= 2 && x[3] >= 2, label(), ": input shape ",
                x, " needs an even height and width (pad the images to an even size)");
  return Shape{x[0], c_out_, x[2] / 2, x[3] / 2};
}

Tensor FactorizedReduce::branches(Context& ctx, const Tensor& x, Mode mode) {
  Tensor r = relu_->forward(ctx, x, mode);
  Tensor a = conv1_->forward(ctx, r, mode);
  Tensor shifted = Tensor::empty(ctx, Shape{x.dim(0), x.dim(1), x.dim(2) - 1, x.dim(3) - 1});
  ops::crop2d_fwd(ctx, r, 1, 1, shifted);
  Tensor b = conv2_->forward(ctx, shifted, mode);
  Tensor cat = Tensor::empty(ctx, Shape{x.dim(0), c_out_, a.dim(2), a.dim(3)});
  ops::concat_channels(ctx, {&a, &b}, cat);
  if (mode == Mode::Train) relu_x_shape_ = r.shape();
  return cat;
}

Tensor FactorizedReduce::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  return bn_->forward(ctx, branches(ctx, x, mode), mode);
}

Tensor FactorizedReduce::forward_to_norm_impl(Context& ctx, const Tensor& x, Mode mode) {
  return bn_->forward_to_norm(ctx, branches(ctx, x, mode), mode);
}

BatchNorm2d* FactorizedReduce::trailing_norm() {
  return bn_->trailing_norm();
}

Tensor FactorizedReduce::backward_impl(Context& ctx, const Tensor& dy) {
  return branches_backward(ctx, bn_->backward(ctx, dy));
}

Tensor FactorizedReduce::backward_from_norm_impl(Context& ctx, const Tensor& dz) {
  return branches_backward(ctx, bn_->backward_from_norm(ctx, dz));
}

Tensor FactorizedReduce::branches_backward(Context& ctx, const Tensor& dcat) {
  const Shape half{dcat.dim(0), c_out_ / 2, dcat.dim(2), dcat.dim(3)};
  Tensor da = Tensor::empty(ctx, half), db = Tensor::empty(ctx, half);
  ops::split_channels(ctx, dcat, {&da, &db});
  Tensor dr = conv1_->backward(ctx, da);
  Tensor dshift = conv2_->backward(ctx, db);
  Tensor dr2 = Tensor::empty(ctx, relu_x_shape_);
  ops::crop2d_bwd(ctx, dshift, 1, 1, dr2);
  Tensor sum = Tensor::empty(ctx, relu_x_shape_);
  ops::add(ctx, dr, dr2, sum);
  return relu_->backward(ctx, sum);
}

std::string FactorizedReduce::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  const std::string r = relu_->to_onnx(g, x);
  const std::string a = conv1_->to_onnx(g, r);
  const int64_t big = std::numeric_limits<int64_t>::max();
  const std::string shifted =  // r[:, :, 1:, 1:]
      g.node("Slice", {r, g.constant_i64("starts", {1, 1}), g.constant_i64("ends", {big, big}),
                       g.constant_i64("axes", {2, 3})});
  const std::string b = conv2_->to_onnx(g, shifted);
  const std::string cat = g.node("Concat", {a, b}, {onnx::Attribute::of("axis", int64_t(1))});
  return bn_->to_onnx(g, cat);
}

// ---------------------------------------------------------------- DropPath
DropPath::DropPath(std::string name) : Layer(std::move(name)) {}

void DropPath::set_drop_prob(float p) {
  CUDARTS_CHECK(p >= 0.0f && p < 1.0f, label(), ": drop probability ", p, " must be in [0, 1)");
  drop_prob_ = p;
}

Tensor DropPath::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  dropped_ = mode == Mode::Train && drop_prob_ > 0.0f;
  if (!dropped_) return x.share();
  scales_ = Tensor::empty(ctx, Shape{x.dim(0)});
  ops::bernoulli_scale(ctx, scales_, 1.0f - drop_prob_, ctx.seed(),
                       ctx.reserve_rng(uint64_t(x.dim(0))));
  Tensor y = Tensor::empty(ctx, x.shape());
  ops::scale_samples(ctx, x, scales_, y);
  return y;
}

std::string DropPath::to_onnx_impl(onnx::GraphBuilder&, const std::string& x) {
  return x;  // the identity in inference
}

Tensor DropPath::backward_impl(Context& ctx, const Tensor& dy) {
  if (!dropped_) return dy.share();
  Tensor dx = Tensor::empty(ctx, dy.shape());
  ops::scale_samples(ctx, dy, scales_, dx);
  return dx;
}

// ---------------------------------------------------------------- PartialChannels
PartialChannels::PartialChannels(std::string name, std::unique_ptr<Layer> inner, int64_t channels,
                                 int k, int stride)
    : Layer(std::move(name)), inner_(std::move(inner)), channels_(channels), k_(k) {
  CUDARTS_CHECK(inner_ != nullptr, label(), ": null inner layer");
  CUDARTS_CHECK(k >= 1 && channels % k == 0 && channels / k >= 1, label(), ": ", channels,
                " channels are not divisible into k = ", k, " parts");
  CUDARTS_CHECK(stride == 1 || stride == 2, label(), ": stride ", stride, " must be 1 or 2");
  if (stride == 2) pool_ = std::make_unique<MaxPool2d>("bypass_pool", 2, 2);
}

std::vector<Layer*> PartialChannels::children() const {
  std::vector<Layer*> out{inner_.get()};
  if (pool_) out.push_back(pool_.get());
  return out;
}

Shape PartialChannels::output_shape(const Shape& x) const {
  CUDARTS_CHECK(x.ndim() == 4 && x[1] == channels_, label(), ": input shape ", x,
                " does not match channels ", channels_, " (expected [N, ", channels_, ", H, W])");
  const Shape part = inner_->output_shape(Shape{x[0], channels_ / k_, x[2], x[3]});
  const Shape rest = pool_
                         ? pool_->output_shape(Shape{x[0], channels_ - channels_ / k_, x[2], x[3]})
                         : Shape{x[0], channels_ - channels_ / k_, x[2], x[3]};
  CUDARTS_CHECK(
      part.ndim() == 4 && part[1] == channels_ / k_ && part[2] == rest[2] && part[3] == rest[3],
      label(), ": the inner layer gives ", part, " but the bypass ", rest);
  return Shape{x[0], channels_, part[2], part[3]};
}

Tensor PartialChannels::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  const int64_t part = channels_ / k_;
  Tensor xs = Tensor::empty(ctx, Shape{x.dim(0), part, x.dim(2), x.dim(3)});
  Tensor xr = Tensor::empty(ctx, Shape{x.dim(0), channels_ - part, x.dim(2), x.dim(3)});
  ops::split_channels(ctx, x, {&xs, &xr});
  Tensor ys = inner_->forward(ctx, xs, mode);
  Tensor yr = pool_ ? pool_->forward(ctx, xr, mode) : std::move(xr);
  Tensor cat = Tensor::empty(ctx, Shape{x.dim(0), channels_, ys.dim(2), ys.dim(3)});
  ops::concat_channels(ctx, {&ys, &yr}, cat);
  Tensor y = Tensor::empty(ctx, cat.shape());
  ops::channel_shuffle(ctx, cat, k_, y);
  if (mode == Mode::Train) x_shape_ = x.shape();
  return y;
}

Tensor PartialChannels::backward_impl(Context& ctx, const Tensor& dy) {
  const int64_t part = channels_ / k_;
  Tensor dcat = Tensor::empty(ctx, dy.shape());
  ops::channel_shuffle(ctx, dy, int(channels_ / k_), dcat);  // the inverse shuffle
  Tensor dys = Tensor::empty(ctx, Shape{dy.dim(0), part, dy.dim(2), dy.dim(3)});
  Tensor dyr = Tensor::empty(ctx, Shape{dy.dim(0), channels_ - part, dy.dim(2), dy.dim(3)});
  ops::split_channels(ctx, dcat, {&dys, &dyr});
  Tensor dxs = inner_->backward(ctx, dys);
  Tensor dxr = pool_ ? pool_->backward(ctx, dyr) : std::move(dyr);
  Tensor dx = Tensor::empty(ctx, x_shape_);
  ops::concat_channels(ctx, {&dxs, &dxr}, dx);
  return dx;
}

// ---------------------------------------------------------------- EdgeWeight
EdgeWeight::EdgeWeight(std::string name, std::unique_ptr<Layer> inner, Parameter& beta, int index)
    : Layer(std::move(name)), inner_(std::move(inner)), beta_(beta), index_(index) {
  CUDARTS_CHECK(inner_ != nullptr, label(), ": null inner layer");
  CUDARTS_CHECK(beta.value.ndim() == 1 && index >= 0 && index < beta.value.numel(), label(),
                ": edge index ", index, " outside the node's ", beta.value.numel(), " edges");
}

Tensor EdgeWeight::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor w = Tensor::empty(ctx, beta_.value.shape());
  ops::softmax(ctx, beta_.value, w);
  Tensor out = inner_->forward(ctx, x, mode);
  Tensor y = Tensor::empty(ctx, out.shape());
  const Tensor wi = w.slice(index_, index_ + 1);
  ops::mix_fwd(ctx, wi, {&out}, y);
  if (mode == Mode::Train) {
    grad_beta_ = beta_.requires_grad;
    if (grad_beta_) out_ = std::move(out);  // kept only for beta's score
    weights_ = std::move(w);
  }
  return y;
}

Tensor EdgeWeight::backward_impl(Context& ctx, const Tensor& dy) {
  if (grad_beta_) {
    Tensor g = Tensor::zeros(ctx, beta_.value.shape());
    Tensor gi = g.slice(index_, index_ + 1);
    ops::mix_scores(ctx, dy, {&out_}, gi);
    out_ = Tensor();
    ops::arch_grad(ctx, beta_.value, g, nullptr, 0, beta_.grad);
  }
  Tensor d = Tensor::empty(ctx, dy.shape());
  const Tensor wi = weights_.slice(index_, index_ + 1);
  ops::mix_fwd(ctx, wi, {&dy}, d);
  return inner_->backward(ctx, d);
}

void EdgeWeight::release_saved_impl() {
  weights_ = Tensor();
  out_ = Tensor();
}

// ---------------------------------------------------------------- networks
namespace {
bool reduction_at(int i, int cells) {
  return i == cells / 3 || i == 2 * cells / 3;
}

std::unique_ptr<Sequential> make_stem(Context& ctx, int64_t in, int64_t out) {
  auto stem = std::make_unique<Sequential>("stem");
  stem->emplace<Conv2d>(ctx, "conv", in, out, 3, Conv2dParams::make(1, 1), false);
  stem->emplace<BatchNorm2d>(ctx, "bn", out, true);
  return stem;
}

// The shape after the stem and the chained cells (each cell reads the two previous states).
Shape cells_output_shape(const Sequential& stem, const std::vector<std::unique_ptr<Graph>>& cells,
                         const Shape& x) {
  const Shape s = stem.output_shape(x);
  Shape s0 = s, s1 = s;
  for (auto& c : cells) {
    Shape out = c->output_shape_of({s0, s1});
    s0 = s1;
    s1 = out;
  }
  return s1;
}

// A cell Graph with inputs s0, s1 and its two preprocessing nodes pre0 (FactorizedReduce after
// a reduction cell, else ReLU-Conv1x1-BN) and pre1.
std::unique_ptr<Graph> make_cell(Context& ctx, int index, int64_t c_pp, int64_t c_p, int64_t c,
                                 bool reduction_prev, bool affine, bool fuse_relu) {
  auto cell =
      std::make_unique<Graph>("cell" + std::to_string(index), std::vector<std::string>{"s0", "s1"});
  if (reduction_prev)
    cell->add(std::make_unique<FactorizedReduce>(ctx, "pre0", c_pp, c, affine), "s0");
  else
    cell->add(relu_conv_bn(ctx, "pre0", c_pp, c, 1, 1, 0, affine, fuse_relu), "s0");
  cell->add(relu_conv_bn(ctx, "pre1", c_p, c, 1, 1, 0, affine, fuse_relu), "s1");
  return cell;
}

// GDAS's fixed reduction cell (GDAS-FRC; Dong and Yang, CVPR 2019): after the two
// preprocessing nodes, each input goes through ReLU - 1x3 conv (stride 1x2) - 3x1 conv
// (stride 2x1), both grouped in 8 - BN - ReLU - 1x1 conv - BN, and through a 3x3 max pooling
// (stride 2) - BN; the cell outputs the four concatenated (4 C channels). Drop-path (the
// discrete network) on each of the four; appended to *drop_paths when given.
std::unique_ptr<Graph> make_fixed_reduction_cell(Context& ctx, int index, int64_t c_pp, int64_t c_p,
                                                 int64_t c, bool reduction_prev, bool affine,
                                                 std::vector<DropPath*>* drop_paths) {
  CUDARTS_CHECK(c % 8 == 0, "GDAS's fixed reduction cell ", index, ": ", c,
                " channels, expected a multiple of 8 (its convolutions have 8 groups)");
  auto cell = make_cell(ctx, index, c_pp, c_p, c, reduction_prev, affine, true);
  std::vector<std::string> outs;
  for (int side = 0; side < 2; ++side) {
    const std::string in = side == 0 ? "pre0" : "pre1", k = std::to_string(side);
    auto conv = std::make_unique<Sequential>("conv" + k);
    conv->emplace<ReLU>("relu1");
    conv->emplace<Conv2d>(ctx, "conv_1x3", c, c, KernelSize{1, 3},
                          Conv2dParams{1, 2, 0, 1, 1, 1, 8}, false);
    conv->emplace<Conv2d>(ctx, "conv_3x1", c, c, KernelSize{3, 1},
                          Conv2dParams{2, 1, 1, 0, 1, 1, 8}, false);
    conv->emplace<BatchNorm2d>(ctx, "bn1", c, affine);
    conv->emplace<ReLU>("relu2");
    conv->emplace<Conv2d>(ctx, "conv_1x1", c, c, 1, Conv2dParams{}, false);
    conv->emplace<BatchNorm2d>(ctx, "bn2", c, affine);
    cell->add(std::move(conv), in);
    auto pool = std::make_unique<Sequential>("pool" + k);
    pool->emplace<MaxPool2d>("pool", 3, 2, 1);
    pool->emplace<BatchNorm2d>(ctx, "bn", c, affine);
    cell->add(std::move(pool), in);
  }
  for (const char* branch : {"conv0", "conv1", "pool0", "pool1"}) {
    if (!drop_paths) {
      outs.push_back(branch);
      continue;
    }
    auto& dp = static_cast<DropPath&>(
        cell->add(std::make_unique<DropPath>(std::string("drop_") + branch), branch));
    drop_paths->push_back(&dp);
    outs.push_back(dp.name());
  }
  cell->add_concat("out", outs);
  cell->set_output("out");
  return cell;
}

// Runs the cells over (s0, s1) pairs; returns the last state. `after_cell(i, state)` sees
// every cell output.
template <class F>
Tensor run_cells(Context& ctx, std::vector<std::unique_ptr<Graph>>& cells, Tensor stem, Mode mode,
                 F after_cell) {
  Tensor s0 = stem.share(), s1 = std::move(stem);
  for (size_t i = 0; i < cells.size(); ++i) {
    Tensor out = cells[i]->forward_many(ctx, {&s0, &s1}, mode);
    s0 = std::move(s1);
    s1 = std::move(out);
    after_cell(int(i), s1);
  }
  return s1;
}

// Backward through the cells. grads[k] accumulates the gradient of state k (states 0 and 1 are
// the stem output); `extra(i, grads)` may add to grads before cell i runs backward.
template <class F>
Tensor backward_cells(Context& ctx, std::vector<std::unique_ptr<Graph>>& cells, Tensor dlast,
                      F extra) {
  const size_t n = cells.size();
  std::vector<GradSum> grads(n + 2);
  grads[n + 1].add(ctx, std::move(dlast));
  for (size_t k = n; k-- > 0;) {
    extra(int(k), grads[k + 2]);
    std::vector<Tensor> d = cells[k]->backward_many(ctx, grads[k + 2].take());
    grads[k].add(ctx, std::move(d[0]));
    grads[k + 1].add(ctx, std::move(d[1]));
  }
  grads[0].add(ctx, grads[1].take());
  return grads[0].take();
}
}  // namespace

SearchNetwork::SearchNetwork(Context& ctx, std::string name, const SearchConfig& config)
    : Layer(std::move(name)), config_(config) {
  CUDARTS_CHECK(config.cells >= 1 && config.steps >= 1 && config.multiplier >= 1 &&
                    config.multiplier <= config.steps && config.channels >= 1 &&
                    config.stem_multiplier >= 1,
                label(), ": cells ", config.cells, ", steps ", config.steps, ", multiplier ",
                config.multiplier, " and channels ", config.channels,
                " must be positive (multiplier <= steps)");
  const int pc = config.partial_channels;
  CUDARTS_CHECK(pc >= 1, label(), ": partial_channels ", pc, " must be >= 1 (1: off)");
  CUDARTS_CHECK(pc == 1 || (config.channels % pc == 0 && (config.channels / pc) % 2 == 0), label(),
                ": partial_channels ", pc, " must divide the channels ", config.channels,
                " into an even number of channels per part (skip_connect's FactorizedReduce)");
  if (config.edge_normalization)  // per node a beta over its node + 2 incoming edges
    for (bool reduction : {false, true})
      for (int node = 0; node < config.steps; ++node) {
        Parameter& b = add_parameter(
            ctx, std::string(reduction ? "beta_reduce" : "beta_normal") + std::to_string(node),
            Shape{node + 2}, ParamKind::Architecture);
        init_normal(ctx, b.value, 0.0f, 1e-3f);
        (reduction ? betas_reduce_ : betas_normal_).push_back(&b);
      }
  int64_t c_curr = config.stem_multiplier * config.channels;
  stem_ = make_stem(ctx, config.in_channels, c_curr);
  int64_t c_pp = c_curr, c_p = c_curr;
  c_curr = config.channels;
  bool reduction_prev = false;
  CUDARTS_CHECK(!config.fixed_reduction || config.multiplier == 4, label(),
                ": the fixed reduction cell outputs 4 C channels; multiplier ", config.multiplier,
                " must be 4 with it");
  for (int i = 0; i < config.cells; ++i) {
    const bool reduction = reduction_at(i, config.cells);
    if (reduction) c_curr *= 2;
    if (reduction && config.fixed_reduction) {
      cells_.push_back(
          make_fixed_reduction_cell(ctx, i, c_pp, c_p, c_curr, reduction_prev, false, nullptr));
      reduction_prev = true;
      c_pp = c_p;
      c_p = 4 * c_curr;
      continue;
    }
    auto cell = make_cell(ctx, i, c_pp, c_p, c_curr, reduction_prev, false, config.fuse_relu);
    std::vector<std::string> states{"pre0", "pre1"};
    int k = 0;
    for (int node = 0; node < config.steps; ++node) {
      std::vector<std::string> edges;
      for (int j = 0; j < node + 2; ++j, ++k) {
        const int stride = reduction && j < 2 ? 2 : 1;
        std::vector<std::unique_ptr<Layer>> cands;
        for (const std::string& p : primitives())
          cands.push_back(
              make_primitive(ctx, p, p, c_curr / pc, stride, false, true, config.fuse_relu));
        MixedOpConfig mc = config.mixed;
        mc.alpha_group = std::string(reduction ? "reduce" : "normal") + ".edge" + std::to_string(k);
        const std::string edge = "edge" + std::to_string(k);
        // The wrappers, innermost first; the outermost one carries the edge's name.
        const bool wrapped = pc > 1 || config.edge_normalization || config.auxiliary_skip;
        std::unique_ptr<Layer> layer =
            make_mixed_op(ctx, wrapped ? "mix" : edge, std::move(cands), mc);
        if (pc > 1)
          layer = std::make_unique<PartialChannels>(
              config.edge_normalization || config.auxiliary_skip ? "partial" : edge,
              std::move(layer), c_curr, pc, stride);
        if (config.edge_normalization)
          layer = std::make_unique<EdgeWeight>(
              config.auxiliary_skip ? "weighted" : edge, std::move(layer),
              *(reduction ? betas_reduce_ : betas_normal_)[size_t(node)], j);
        if (config.auxiliary_skip) {
          auto aux = std::make_unique<AuxiliarySkip>(ctx, edge, std::move(layer), c_curr, stride);
          aux_skips_.push_back(aux.get());
          layer = std::move(aux);
        }
        cell->add(std::move(layer), states[size_t(j)]);
        edges.push_back(edge);
      }
      cell->add_sum("node" + std::to_string(node), edges);
      states.push_back("node" + std::to_string(node));
    }
    cell->add_concat("out",
                     std::vector<std::string>(states.end() - config.multiplier, states.end()));
    cell->set_output("out");
    cells_.push_back(std::move(cell));
    reduction_prev = reduction;
    c_pp = c_p;
    c_p = config.multiplier * c_curr;
  }
  gap_ = std::make_unique<GlobalAvgPool>("gap");
  classifier_ = std::make_unique<Linear>(ctx, "classifier", c_p, config.num_classes);
}

void SearchNetwork::set_auxiliary_skip_weight(float w) {
  CUDARTS_CHECK(config_.auxiliary_skip, label(),
                ": set_auxiliary_skip_weight needs a network built with auxiliary_skip");
  for (AuxiliarySkip* a : aux_skips_) a->set_weight(w);
}

std::vector<float> SearchNetwork::edge_weights(bool reduction) {
  std::vector<float> w;
  const auto& betas = reduction ? betas_reduce_ : betas_normal_;
  for (int node = 0; node < config_.steps; ++node) {
    if (betas.empty()) {
      w.insert(w.end(), size_t(node + 2), 1.0f);
      continue;
    }
    const std::vector<float> b = betas[size_t(node)]->value.to_vector();
    const float mx = *std::max_element(b.begin(), b.end());
    double s = 0.0;
    for (float v : b) s += std::exp(double(v) - mx);
    for (float v : b) w.push_back(float(std::exp(double(v) - mx) / s));
  }
  return w;
}

bool SearchNetwork::is_reduction(int cell) const {
  return reduction_at(cell, config_.cells);
}

int SearchNetwork::num_edges() const {
  return config_.steps * (config_.steps + 3) / 2;
}

std::vector<SearchNetwork::EdgeSite> SearchNetwork::edge_sites(const Shape& x) {
  CUDARTS_CHECK(x.ndim() == 4 && x[1] == config_.in_channels, label(), ": input shape ", x,
                ", expected [N, ", config_.in_channels, ", H, W]");
  std::vector<EdgeSite> sites;
  int64_t h = x[2], w = x[3], c = config_.channels;
  for (int i = 0; i < config_.cells; ++i) {
    const bool reduction = is_reduction(i);
    if (reduction) c *= 2;
    const bool fixed = reduction && config_.fixed_reduction;
    std::map<std::string, Layer*> edges;
    for (Layer* l : cells_[size_t(i)]->children()) edges[l->name()] = l;
    for (int node = 0, k = 0; node < config_.steps && !fixed; ++node)
      for (int j = 0; j < node + 2; ++j, ++k) {
        Layer* m = edges.at("edge" + std::to_string(k));
        while (!dynamic_cast<MixedOp*>(m)) {
          CUDARTS_CHECK(!m->children().empty(), label(), ": edge ", k, " holds no MixedOp");
          m = m->children()[0];
        }
        const bool halved = reduction && j >= 2;  // after the stride-2 edges of the inputs
        sites.push_back(
            {i, k, reduction, static_cast<MixedOp*>(m),
             Shape{x[0], c / config_.partial_channels, halved ? h / 2 : h, halved ? w / 2 : w}});
      }
    if (reduction) h /= 2, w /= 2;
  }
  return sites;
}

MixedOp& SearchNetwork::edge(bool reduction, int k) {
  CUDARTS_CHECK(k >= 0 && k < num_edges(), label(), ": edge ", k, " out of range [0, ", num_edges(),
                ")");
  for (int i = 0; i < config_.cells; ++i) {
    if (is_reduction(i) != reduction) continue;
    for (Layer* l : cells_[size_t(i)]->children()) {
      if (l->name() != "edge" + std::to_string(k)) continue;
      for (Layer* m = l;;) {  // the MixedOp inside the edge's wrappers (if any)
        if (auto* op = dynamic_cast<MixedOp*>(m)) return *op;
        CUDARTS_CHECK(!m->children().empty(), label(), ": edge ", k, " holds no MixedOp");
        m = m->children()[0];
      }
    }
  }
  CUDARTS_FAIL(label(), ": no ", reduction ? "reduction" : "normal", " cell in a network of ",
               config_.cells, " cells");
}

std::vector<Layer*> SearchNetwork::children() const {
  std::vector<Layer*> out{stem_.get()};
  for (auto& c : cells_) out.push_back(c.get());
  out.push_back(gap_.get());
  out.push_back(classifier_.get());
  return out;
}

Shape SearchNetwork::output_shape(const Shape& x) const {
  return classifier_->output_shape(gap_->output_shape(cells_output_shape(*stem_, cells_, x)));
}

Tensor SearchNetwork::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor last =
      run_cells(ctx, cells_, stem_->forward(ctx, x, mode), mode, [](int, const Tensor&) {});
  return classifier_->forward(ctx, gap_->forward(ctx, last, mode), mode);
}

Tensor SearchNetwork::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor d = gap_->backward(ctx, classifier_->backward(ctx, dy));
  Tensor ds = backward_cells(ctx, cells_, std::move(d), [](int, GradSum&) {});
  return stem_->backward(ctx, ds);
}

void SearchNetwork::release_saved_impl() {}

// ---------------------------------------------------------------- EvalNetwork
EvalNetwork::EvalNetwork(Context& ctx, std::string name, const Genotype& genotype,
                         const EvalConfig& config)
    : RetrainNetwork(std::move(name)), config_(config) {
  CUDARTS_CHECK(config.cells >= 1 && config.channels >= 1, label(), ": cells ", config.cells,
                " and channels ", config.channels, " must be positive");
  const bool frc = genotype.reduce_cell == "gdas_frc";
  CUDARTS_CHECK(
      !genotype.normal.empty() && genotype.normal.size() % 2 == 0 &&
          (frc ? genotype.reduce.empty() : genotype.reduce.size() == genotype.normal.size()),
      label(), ": the genotype needs two (op, input) pairs per node in both cells (",
      genotype.normal.size(), " normal, ", genotype.reduce.size(), " reduce",
      frc ? ", reduce_cell gdas_frc: none expected" : "", ")");
  CUDARTS_CHECK(genotype.reduce_cell.empty() || frc, label(), ": reduce_cell '",
                genotype.reduce_cell, "', expected '' or 'gdas_frc'");
  int64_t c_curr = 3 * config.channels;
  stem_ = make_stem(ctx, config.in_channels, c_curr);
  int64_t c_pp = c_curr, c_p = c_curr, c_aux = 0;
  c_curr = config.channels;
  bool reduction_prev = false;
  for (int i = 0; i < config.cells; ++i) {
    const bool reduction = reduction_at(i, config.cells);
    if (reduction) c_curr *= 2;
    if (reduction && frc) {
      cells_.push_back(
          make_fixed_reduction_cell(ctx, i, c_pp, c_p, c_curr, reduction_prev, true, &drop_paths_));
      reduction_prev = true;
      c_pp = c_p;
      c_p = 4 * c_curr;
      if (i == 2 * config.cells / 3) {
        aux_cell_ = i;
        c_aux = c_p;
      }
      continue;
    }
    const auto& genes = reduction ? genotype.reduce : genotype.normal;
    const auto& concat = reduction ? genotype.reduce_concat : genotype.normal_concat;
    auto cell = make_cell(ctx, i, c_pp, c_p, c_curr, reduction_prev, true, true);
    std::vector<std::string> states{"pre0", "pre1"};
    for (size_t node = 0; node < genes.size() / 2; ++node) {
      std::vector<std::string> inputs;
      for (size_t t = 0; t < 2; ++t) {
        const auto& [op, idx] = genes[2 * node + t];
        CUDARTS_CHECK(idx >= 0 && idx < int(states.size()), label(), ": gene ", 2 * node + t,
                      " reads state ", idx, " but node ", node, " can read states 0..",
                      states.size() - 1);
        const int stride = reduction && idx < 2 ? 2 : 1;
        const std::string name = "op" + std::to_string(2 * node + t);
        Layer& l = cell->add(make_primitive(ctx, op, name, c_curr, stride, true, false),
                             states[size_t(idx)]);
        if (dynamic_cast<Identity*>(&l) == nullptr) {
          auto& dp = static_cast<DropPath&>(
              cell->add(std::make_unique<DropPath>("drop" + std::to_string(2 * node + t)), name));
          drop_paths_.push_back(&dp);
          inputs.push_back(dp.name());
        } else {
          inputs.push_back(name);
        }
      }
      cell->add_sum("node" + std::to_string(node), inputs);
      states.push_back("node" + std::to_string(node));
    }
    std::vector<std::string> out;
    for (int c : concat) {
      CUDARTS_CHECK(c >= 0 && c < int(states.size()), label(), ": concat index ", c, " outside 0..",
                    states.size() - 1);
      out.push_back(states[size_t(c)]);
    }
    cell->add_concat("out", out);
    cell->set_output("out");
    cells_.push_back(std::move(cell));
    reduction_prev = reduction;
    c_pp = c_p;
    c_p = int64_t(concat.size()) * c_curr;
    if (i == 2 * config.cells / 3) {
      aux_cell_ = i;
      c_aux = c_p;
    }
  }
  if (config.auxiliary && aux_cell_ >= 0) {
    aux_head_ = std::make_unique<Sequential>("auxiliary");
    aux_head_->emplace<ReLU>("relu0");
    aux_head_->emplace<AvgPool2d>("pool", 5, 3, 0);
    aux_head_->emplace<Conv2d>(ctx, "conv1", c_aux, 128, 1, Conv2dParams{}, false);
    aux_head_->emplace<BatchNorm2d>(ctx, "bn1", 128);
    aux_head_->emplace<ReLU>("relu1");
    aux_head_->emplace<Conv2d>(ctx, "conv2", 128, 768, 2, Conv2dParams{}, false);
    aux_head_->emplace<BatchNorm2d>(ctx, "bn2", 768);
    aux_head_->emplace<ReLU>("relu2");
    aux_head_->emplace<Flatten>("flatten");
    aux_head_->emplace<Linear>(ctx, "classifier", 768, config.num_classes);
  }
  gap_ = std::make_unique<GlobalAvgPool>("gap");
  classifier_ = std::make_unique<Linear>(ctx, "classifier", c_p, config.num_classes);
}

std::vector<Layer*> EvalNetwork::children() const {
  std::vector<Layer*> out{stem_.get()};
  for (auto& c : cells_) out.push_back(c.get());
  if (aux_head_) out.push_back(aux_head_.get());
  out.push_back(gap_.get());
  out.push_back(classifier_.get());
  return out;
}

void EvalNetwork::set_drop_path_prob(float p) {
  for (DropPath* d : drop_paths_) d->set_drop_prob(p);
}

Shape EvalNetwork::output_shape(const Shape& x) const {
  return classifier_->output_shape(gap_->output_shape(cells_output_shape(*stem_, cells_, x)));
}

Tensor EvalNetwork::run(Context& ctx, const Tensor& x, Mode mode, Tensor* aux) {
  aux_used_ = false;
  Tensor last =
      run_cells(ctx, cells_, stem_->forward(ctx, x, mode), mode, [&](int i, const Tensor& s) {
        if (aux && aux_head_ && i == aux_cell_) {
          *aux = aux_head_->forward(ctx, s, mode);
          aux_used_ = mode == Mode::Train;
        }
      });
  return classifier_->forward(ctx, gap_->forward(ctx, last, mode), mode);
}

Tensor EvalNetwork::run_backward(Context& ctx, const Tensor& dy, const Tensor* daux) {
  Tensor d = gap_->backward(ctx, classifier_->backward(ctx, dy));
  Tensor ds = backward_cells(ctx, cells_, std::move(d), [&](int i, GradSum& g) {
    if (aux_used_ && i == aux_cell_) {
      CUDARTS_CHECK(daux && daux->defined(), label(),
                    ": the auxiliary head ran in forward but "
                    "backward got no auxiliary gradient");
      g.add(ctx, aux_head_->backward(ctx, *daux));
    }
  });
  return stem_->backward(ctx, ds);
}

std::pair<Tensor, Tensor> EvalNetwork::forward_train(Context& ctx, const Tensor& x) {
  Tensor aux;
  Tensor logits = run(ctx, x, Mode::Train, &aux);
  return {std::move(logits), std::move(aux)};
}

void EvalNetwork::backward_train(Context& ctx, const Tensor& dlogits, const Tensor& daux) {
  run_backward(ctx, dlogits, daux.defined() ? &daux : nullptr);  // input gradient unused
}

Tensor EvalNetwork::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  return run(ctx, x, mode, nullptr);
}

Tensor EvalNetwork::backward_impl(Context& ctx, const Tensor& dy) {
  return run_backward(ctx, dy, nullptr);
}

std::string EvalNetwork::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  // The inference path of run(): the auxiliary head only serves training.
  const std::string stem = stem_->to_onnx(g, x);
  std::string s0 = stem, s1 = stem;
  for (auto& cell : cells_) {
    std::string out = cell->to_onnx_many(g, {s0, s1});
    s0 = std::move(s1);
    s1 = std::move(out);
  }
  return classifier_->to_onnx(g, gap_->to_onnx(g, s1));
}

void EvalNetwork::release_saved_impl() {
  aux_used_ = false;
}

}  // namespace cudarts::darts
