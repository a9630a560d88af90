// The op table's front door: validate every argument, then dispatch to the context's
// backend. All shape/device/dtype errors of the op level are raised here, naming the op,
// the argument and the shapes.
#include "cudarts/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend.h"
#include "capture.h"
#include "dispatch.h"
#include "kernel_rules.h"
#include "nvtx.h"
#include "op_list.h"

namespace cudarts::ops {

namespace {

void check_tensor(Context& ctx, const char* op, const char* name, const Tensor& t,
                  DType dtype = DType::F32) {
  CUDARTS_CHECK(t.defined(), op, ": argument '", name, "' is an undefined tensor");
  CUDARTS_CHECK(t.device() == ctx.device(), op, ": argument '", name, "' is ", t.describe(),
                " but the context is on ", ctx.device().str(),
                " (tensors must be on the context's device; use Tensor::to)");
  CUDARTS_CHECK(t.dtype() == dtype, op, ": argument '", name, "' is ", t.describe(), ", expected ",
                dtype_name(dtype));
}

void check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  CUDARTS_CHECK(t.shape() == expected, op, ": argument '", name, "' has shape ", t.shape(),
                ", expected ", expected);
}

void check_ndim(const char* op, const char* name, const Tensor& t, int ndim) {
  CUDARTS_CHECK(t.ndim() == ndim, op, ": argument '", name, "' has shape ", t.shape(),
                ", expected ", ndim, " dimensions");
}

void check_same_shape(const char* op, const char* na, const Tensor& a, const char* nb,
                      const Tensor& b) {
  CUDARTS_CHECK(a.shape() == b.shape(), op, ": '", na, "' has shape ", a.shape(), " but '", nb,
                "' has shape ", b.shape(), "; expected equal shapes");
}

void check_conv_params(const char* op, const Shape& x, const Shape& w, const Conv2dParams& p) {
  CUDARTS_CHECK(x.ndim() == 4, op, ": input has shape ", x, ", expected (N, C, H, W)");
  CUDARTS_CHECK(w.ndim() == 4, op, ": weight has shape ", w,
                ", expected (Cout, Cin/groups, kh, kw)");
  CUDARTS_CHECK(p.stride_h >= 1 && p.stride_w >= 1, op, ": stride (", p.stride_h, ", ", p.stride_w,
                ") must be >= 1");
  CUDARTS_CHECK(p.pad_h >= 0 && p.pad_w >= 0, op, ": padding (", p.pad_h, ", ", p.pad_w,
                ") must be >= 0");
  CUDARTS_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, op, ": dilation (", p.dilation_h, ", ",
                p.dilation_w, ") must be >= 1");
  CUDARTS_CHECK(p.groups >= 1, op, ": groups is ", p.groups, ", expected >= 1");
  CUDARTS_CHECK(x[1] % p.groups == 0, op, ": input channels ", x[1], " (input shape ", x,
                ") not divisible by groups ", p.groups);
  CUDARTS_CHECK(w[0] % p.groups == 0, op, ": output channels ", w[0], " (weight shape ", w,
                ") not divisible by groups ", p.groups);
  CUDARTS_CHECK(w[1] * p.groups == x[1], op, ": weight shape ", w, " with groups ", p.groups,
                " expects ", w[1] * p.groups, " input channels, but the input has shape ", x);
  CUDARTS_CHECK(w[2] >= 1 && w[3] >= 1, op, ": kernel size ", w[2], "x", w[3], " must be >= 1");
}

// Where captured RNG ops read the per-replay offset shift (nullptr outside capture).
const uint64_t* rng_shift(Context& ctx) {
  return ctx.capture_state() ? ctx.capture_state()->rng_shift : nullptr;
}

// ---- the cost model (OpCost, see profiler.h): what the CUDA backend's implementation of an
// op does, from the shapes. Ops without an explicit cost get dispatch's default: one launch,
// every operand read or written once.
double bytes(const Tensor& t) {
  return double(t.nbytes());
}
double bytes(const Tensor* t) {
  return t ? double(t->nbytes()) : 0.0;
}

const char* conv_class(const Shape& x, const Shape& w, const Conv2dParams& p) {
  if (p.groups > 1 && p.groups == x[1] && w[0] == x[1]) return "depthwise";
  if (p.groups > 1) return "grouped";
  return w[2] == 1 && w[3] == 1 ? "pointwise" : "dense";
}

// True when the CUDA backend runs this convolution on its own depthwise kernels (the rule of
// src/kernel_rules.h that cuda/depthwise.cuh applies, up to its extent and shared-memory
// limits). They fuse the bias (forward and gradient) and take two launches for the filter
// gradient (partials, then their fixed-order sum).
bool own_depthwise(Context& ctx, const Shape& x, const Shape& w, const Conv2dParams& p) {
  return ctx.own_depthwise_kernels() && kernel_rules::own_depthwise(x, w, p);
}

// True when the CUDA backend runs this convolution on its own pointwise kernels (the rule of
// src/kernel_rules.h that cuda/pointwise.cuh applies, up to its extent limits). The fused ReLU
// costs what it costs on the own depthwise kernels; the filter gradient takes two launches
// (partials, their fixed-order sum).
bool own_pointwise(Context& ctx, const Shape& x, const Shape& w, const Conv2dParams& p,
                   bool bias_gradient) {
  return ctx.own_pointwise_kernels() && kernel_rules::own_pointwise(x, w, p, bias_gradient) &&
         !own_depthwise(ctx, x, w, p);  // the backend asks the depthwise kernels first
}

// A convolution's multiply-adds are the same in all three directions: per output element of
// the forward pass, Cin/groups * R * S. Depthwise convolutions do not run on tensor cores.
OpCost conv_cost(const Shape& y, const Shape& w, const char* cls) {
  OpCost c;
  c.launches = 1;
  c.flops = 2.0 * double(y.numel()) * double(w[1] * w[2] * w[3]);
  if (std::string(cls) != "depthwise") c.tensor_core_flops = c.flops;
  return c;
}

// What a fused ReLU (Conv2dParams::relu_input) adds to a convolution: on the own kernels
// (`own_kernel`: depthwise or pointwise) nothing in forward and filter gradient (applied as x is
// loaded) and one read of x in backward data (the mask, in the epilogue); elsewhere a separate
// pass: relu(x) into a scratch tensor that the convolution then reads (forward, filter
// gradient), or the mask applied to dx in place (backward data).
OpCost relu_cost(const Tensor& x, bool mask, bool own_kernel) {
  OpCost c;
  const double b = double(x.nbytes());
  if (own_kernel) {
    if (mask) c.bytes_read = b;
    return c;
  }
  c.launches = 1;
  c.bytes_read = 2 * b;  // x, then the scratch (forward, filter); dx and x (the mask)
  c.bytes_written = b;
  return c;
}

// The multi-tensor kernels (optimizers, global_norm) take up to 256 tensors per launch.
int64_t multi_tensor_launches(size_t tensors) {
  return int64_t((tensors + 255) / 256);
}

OpCost linear_cost(const Tensor& x, const Shape& w) {
  OpCost c;
  c.launches = 1;
  c.flops = c.tensor_core_flops = 2.0 * double(x.dim(0)) * double(w[0] * w[1]);
  return c;
}

}  // namespace

}  // namespace cudarts::ops

namespace cudarts::detail {

void check_ranges(const char* op, std::vector<Range>& ranges) {
  if (ranges.size() < 2) return;
  // Elementwise ops compute output i from inputs at i only: exact in-place is fine for them.
  static const char* const in_place[] = {"copy",  "relu_fwd", "relu_bwd",      "add",
                                         "scale", "axpy",     "scale_samples", "mix_fwd"};
  bool elementwise = false;
  for (const char* name : in_place) elementwise = elementwise || std::strcmp(name, op) == 0;
  // Batched accumulations whose rows may share an output (the same view, added to in row order).
  const bool shared_outputs = std::strcmp(op, "arch_grad_many") == 0;
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 0; i < ranges.size(); ++i)
    for (size_t j = i + 1; j < ranges.size() && ranges[j].begin < ranges[i].begin + ranges[i].bytes;
         ++j) {
      const Range &a = ranges[i], &b = ranges[j];
      if (!a.output && !b.output) continue;  // inputs may share memory
      const bool same = a.begin == b.begin && a.bytes == b.bytes;
      if (same && elementwise && a.output != b.output) continue;
      if (same && shared_outputs && a.output && b.output) continue;
      CUDARTS_FAIL(op, ": ", a.output && b.output ? "two outputs" : "an output and an input",
                   " share memory (", a.bytes, " bytes at ", static_cast<const void*>(a.begin),
                   " and ", b.bytes, " bytes at ", static_cast<const void*>(b.begin), "); ",
                   elementwise      ? "only an exactly equal input and output may alias here"
                   : shared_outputs ? "rows that share an output must give the same view of it"
                                    : "this op does not run in place: give it a separate output");
    }
}

}  // namespace cudarts::detail

namespace cudarts::ops {

const std::vector<std::string>& op_names() {
#define CUDARTS_OP_NAME(name) #name,
  static const std::vector<std::string> names = {CUDARTS_OP_LIST(CUDARTS_OP_NAME)};
#undef CUDARTS_OP_NAME
  return names;
}

void set_words(Context& ctx, Tensor& t, const std::vector<uint32_t>& words) {
  OpRange op_range(ctx, "set_words");
  CUDARTS_CHECK(t.defined() && t.device() == ctx.device(), "set_words: tensor ", t.describe(),
                " is not on the context's device ", ctx.device().str());
  CUDARTS_CHECK(words.size() <= 8, "set_words: ", words.size(), " words given, at most 8");
  CUDARTS_CHECK(words.size() * 4 <= t.nbytes(), "set_words: ", words.size(), " words (",
                words.size() * 4, " bytes) do not fit in ", t.describe());
  Words8 w{};
  w.n = static_cast<int>(words.size());
  for (size_t i = 0; i < words.size(); ++i) w.words[i] = words[i];
  if (w.n > 0) detail::dispatch(ctx, &Backend::set_words, t, w);
}

void fill(Context& ctx, Tensor& t, float value) {
  OpRange op_range(ctx, "fill");
  CUDARTS_CHECK(t.defined() && t.device() == ctx.device(), "fill: tensor ", t.describe(),
                " is not on the context's device ", ctx.device().str());
  if (t.dtype() == DType::F32)
    detail::dispatch(ctx, &Backend::fill, t, value);
  else
    detail::dispatch(ctx, &Backend::fill_i32, t, static_cast<int32_t>(value));
}

void copy(Context& ctx, const Tensor& src, Tensor& dst) {
  OpRange op_range(ctx, "copy");
  check_tensor(ctx, "copy", "src", src, src.dtype());
  check_tensor(ctx, "copy", "dst", dst, src.dtype());
  CUDARTS_CHECK(src.numel() == dst.numel(), "copy: src ", src.describe(), " and dst ",
                dst.describe(), " differ in element count");
  {  // copy_bytes takes raw pointers: the aliasing check by hand
    std::vector<detail::Range> ranges;
    detail::add_range(&src, false, ranges);
    detail::add_range(&dst, true, ranges);
    detail::check_ranges("copy", ranges);
  }
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_read = c.bytes_written = bytes(src);
    return c;
  });
  detail::dispatch(ctx, &Backend::copy_bytes, dst.raw(), dst.device(), src.raw(), src.device(),
                   src.nbytes());
}

namespace {
Shape conv_shape(const char* op, const Shape& x, const Shape& w, const Conv2dParams& p) {
  check_conv_params(op, x, w, p);
  const int64_t eh = int64_t(p.dilation_h) * (w[2] - 1) + 1;
  const int64_t ew = int64_t(p.dilation_w) * (w[3] - 1) + 1;
  const int64_t hp = x[2] + 2 * int64_t(p.pad_h), wp = x[3] + 2 * int64_t(p.pad_w);
  CUDARTS_CHECK(hp >= eh && wp >= ew, op, ": input ", x, " padded to ", hp, "x", wp,
                " is smaller than the dilated kernel ", eh, "x", ew, " (weight ", w, ")");
  return Shape{x[0], w[0], (hp - eh) / p.stride_h + 1, (wp - ew) / p.stride_w + 1};
}
}  // namespace

Shape conv2d_output_shape(const Shape& x, const Shape& w, const Conv2dParams& p) {
  return conv_shape("conv2d", x, w, p);
}

void conv2d_fwd(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                const Conv2dParams& p) {
  OpRange op_range(ctx, "conv2d_fwd");
  const char* op = "conv2d_fwd";
  check_tensor(ctx, op, "x", x);
  check_tensor(ctx, op, "w", w);
  check_tensor(ctx, op, "y", y);
  check_shape(op, "y", y, conv_shape(op, x.shape(), w.shape(), p));
  if (bias) {
    check_tensor(ctx, op, "bias", *bias);
    check_shape(op, "bias", *bias, Shape{w.dim(0)});
  }
  const char* cls = conv_class(x.shape(), w.shape(), p);
  op_range.set_class(cls);
  op_range.set_cost([&] {
    OpCost c = conv_cost(y.shape(), w.shape(), cls);
    c.bytes_read = bytes(x) + bytes(w);
    c.bytes_written = bytes(y);
    const bool own_pw = own_pointwise(ctx, x.shape(), w.shape(), p, false);
    const bool own_dw = own_depthwise(ctx, x.shape(), w.shape(), p);
    if (own_pw) c.tensor_core_flops = 0;  // plain FP32 FMAs
    if (p.relu_input) c += relu_cost(x, false, own_pw || own_dw);
    if (bias && (own_pw || own_dw)) {
      c.bytes_read += bytes(bias);
    } else if (bias) {  // a second pass adds the bias (cudnnAddTensor)
      c.launches += 1;
      c.bytes_read += bytes(bias) + bytes(y);
      c.bytes_written += bytes(y);
    }
    return c;
  });
  detail::dispatch(ctx, &Backend::conv2d_fwd, x, w, bias, y, p);
}

namespace {
// A data gradient's fused-ReLU mask: the forward input x, given exactly when relu_input, of dx's
// shape.
void check_relu_mask(Context& ctx, const char* op, bool relu_input, const Tensor* x,
                     const Tensor& dx) {
  CUDARTS_CHECK(relu_input == (x != nullptr), op, ": ",
                relu_input ? "relu_input is set but the forward input x (the ReLU's mask) is "
                             "missing"
                           : "x is given but relu_input is not set (x is read only as the "
                             "mask of a fused ReLU)");
  if (x) {
    check_tensor(ctx, op, "x", *x);
    check_same_shape(op, "x", *x, "dx", dx);
  }
}
}  // namespace

void conv2d_bwd_data(Context& ctx, const Tensor& dy, const Tensor& w, Tensor& dx,
                     const Conv2dParams& p, const Tensor* x) {
  OpRange op_range(ctx, "conv2d_bwd_data");
  const char* op = "conv2d_bwd_data";
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "w", w);
  check_tensor(ctx, op, "dx", dx);
  check_shape(op, "dy", dy, conv_shape(op, dx.shape(), w.shape(), p));
  check_relu_mask(ctx, op, p.relu_input, x, dx);
  const char* cls = conv_class(dx.shape(), w.shape(), p);
  op_range.set_class(cls);
  op_range.set_cost([&] {
    OpCost c = conv_cost(dy.shape(), w.shape(), cls);
    c.bytes_read = bytes(dy) + bytes(w);
    c.bytes_written = bytes(dx);
    const bool own_pw = own_pointwise(ctx, dx.shape(), w.shape(), p, false);
    if (own_pw) c.tensor_core_flops = 0;
    if (x) c += relu_cost(*x, true, own_pw || own_depthwise(ctx, dx.shape(), w.shape(), p));
    return c;
  });
  detail::dispatch(ctx, &Backend::conv2d_bwd_data, dy, w, dx, p, x);
}

void conv2d_bwd_filter(Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                       const Conv2dParams& p) {
  OpRange op_range(ctx, "conv2d_bwd_filter");
  const char* op = "conv2d_bwd_filter";
  check_tensor(ctx, op, "x", x);
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "dw", dw);
  check_shape(op, "dy", dy, conv_shape(op, x.shape(), dw.shape(), p));
  if (dbias) {
    check_tensor(ctx, op, "dbias", *dbias);
    check_shape(op, "dbias", *dbias, Shape{dw.dim(0)});
  }
  const char* cls = conv_class(x.shape(), dw.shape(), p);
  op_range.set_class(cls);
  op_range.set_cost([&] {
    OpCost c = conv_cost(dy.shape(), dw.shape(), cls);
    c.bytes_read = bytes(x) + bytes(dy) + bytes(dw);  // dw accumulates
    c.bytes_written = bytes(dw);
    const bool own_pw = own_pointwise(ctx, x.shape(), dw.shape(), p, dbias != nullptr);
    const bool own_dw = own_depthwise(ctx, x.shape(), dw.shape(), p);
    if (own_pw) c.tensor_core_flops = 0;
    if (p.relu_input) c += relu_cost(x, false, own_pw || own_dw);
    if (own_pw) {
      c.launches = 2;
    } else if (own_dw) {
      c.launches = 2;
      if (dbias) c.bytes_read += bytes(dbias), c.bytes_written += bytes(dbias);
    } else if (dbias) {  // a second pass over dy (cudnnConvolutionBackwardBias)
      c.launches += 1;
      c.bytes_read += bytes(dy) + bytes(dbias);
      c.bytes_written += bytes(dbias);
    }
    return c;
  });
  detail::dispatch(ctx, &Backend::conv2d_bwd_filter, x, dy, dw, dbias, p);
}

namespace {
// True when the CUDA backend runs a group of depthwise convolutions in one kernel (the rule of
// src/kernel_rules.h that cuda/depthwise.cuh's make_group applies, up to its extent and
// shared-memory limits): own depthwise kernels on, at most kMaxGroup members with a group
// kernel size, one output shape and stride, at most kMaxPriors priors; otherwise it runs them
// one by one.
bool own_group(Context& ctx, const std::vector<const Tensor*>& ws,
               const std::vector<Conv2dParams>& ps, const std::vector<Shape>& outs, size_t priors) {
  if (!ctx.own_depthwise_kernels() || ws.size() > size_t(kernel_rules::kMaxGroup) ||
      priors > size_t(kernel_rules::kMaxPriors))
    return false;
  for (size_t j = 0; j < ws.size(); ++j) {
    const Shape& w = ws[j]->shape();
    if (!kernel_rules::group_kernel_size(w[2], w[3]) || outs[j] != outs[0] ||
        ps[j].stride_h != ps[0].stride_h || ps[j].stride_w != ps[0].stride_w)
      return false;
  }
  return true;
}

// ws / ps / outs of one group: as many entries each, every convolution depthwise on x (dx's
// shape), the ReLU the same for all; returns each convolution's output shape.
std::vector<Shape> check_group(Context& ctx, const char* op, const Shape& x,
                               const std::vector<const Tensor*>& ws,
                               const std::vector<Conv2dParams>& ps, size_t outs,
                               const char* outs_name) {
  CUDARTS_CHECK(!ws.empty(), op, ": the group has no convolution");
  CUDARTS_CHECK(ps.size() == ws.size() && outs == ws.size(), op, ": ", ws.size(), " weights, ",
                ps.size(), " parameter sets and ", outs, " ", outs_name,
                "; expected as many of each");
  std::vector<Shape> shapes;
  for (size_t j = 0; j < ws.size(); ++j) {
    CUDARTS_CHECK(ws[j] != nullptr, op, ": weight ", j, " is null");
    check_tensor(ctx, op, "ws[j]", *ws[j]);
    const Shape& w = ws[j]->shape();
    CUDARTS_CHECK(
        x.ndim() == 4 && w.ndim() == 4 && ps[j].groups == x[1] && w[0] == x[1] && w[1] == 1, op,
        ": convolution ", j, " (weight ", w, ", groups ", ps[j].groups,
        ") is not depthwise on input ", x, "; expected weight (C, 1, R, S) and groups C");
    CUDARTS_CHECK(ps[j].relu_input == ps[0].relu_input, op, ": convolution ", j, " has relu_input ",
                  ps[j].relu_input, " but convolution 0 has ", ps[0].relu_input,
                  "; the group reads one input, with or without the ReLU");
    shapes.push_back(conv_shape(op, x, w, ps[j]));
  }
  return shapes;
}
}  // namespace

void depthwise_group_fwd(Context& ctx, const Tensor& x, const std::vector<const Tensor*>& ws,
                         const std::vector<Conv2dParams>& ps, const std::vector<Tensor*>& ys) {
  OpRange op_range(ctx, "depthwise_group_fwd");
  const char* op = "depthwise_group_fwd";
  check_tensor(ctx, op, "x", x);
  const std::vector<Shape> shapes = check_group(ctx, op, x.shape(), ws, ps, ys.size(), "outputs");
  for (size_t j = 0; j < ys.size(); ++j) {
    CUDARTS_CHECK(ys[j] != nullptr, op, ": output ", j, " is null");
    check_tensor(ctx, op, "ys[j]", *ys[j]);
    check_shape(op, "ys[j]", *ys[j], shapes[j]);
  }
  op_range.set_class("depthwise");
  op_range.set_cost([&] {
    const bool fused = own_group(ctx, ws, ps, shapes, 0);
    OpCost c;
    for (size_t j = 0; j < ws.size(); ++j) {
      OpCost one = conv_cost(ys[j]->shape(), ws[j]->shape(), "depthwise");
      one.bytes_read = (fused && j > 0 ? 0.0 : bytes(x)) + bytes(ws[j]);
      one.bytes_written = bytes(ys[j]);
      if (ps[j].relu_input)
        one += relu_cost(x, false, own_depthwise(ctx, x.shape(), ws[j]->shape(), ps[j]));
      c += one;
    }
    if (fused) c.launches = 1;  // x read once for all of them
    return c;
  });
  detail::dispatch(ctx, &Backend::depthwise_group_fwd, x, ws, ps, ys);
}

void depthwise_group_bwd_data(Context& ctx, const std::vector<const Tensor*>& dys,
                              const std::vector<const Tensor*>& ws,
                              const std::vector<Conv2dParams>& ps, const Tensor* x,
                              const std::vector<const Tensor*>& priors, Tensor& dx) {
  OpRange op_range(ctx, "depthwise_group_bwd_data");
  const char* op = "depthwise_group_bwd_data";
  check_tensor(ctx, op, "dx", dx);
  const std::vector<Shape> shapes =
      check_group(ctx, op, dx.shape(), ws, ps, dys.size(), "output gradients");
  for (size_t j = 0; j < dys.size(); ++j) {
    CUDARTS_CHECK(dys[j] != nullptr, op, ": output gradient ", j, " is null");
    check_tensor(ctx, op, "dys[j]", *dys[j]);
    check_shape(op, "dys[j]", *dys[j], shapes[j]);
  }
  check_relu_mask(ctx, op, ps[0].relu_input, x, dx);
  for (size_t i = 0; i < priors.size(); ++i) {
    CUDARTS_CHECK(priors[i] != nullptr, op, ": prior gradient ", i, " is null");
    check_tensor(ctx, op, "priors[i]", *priors[i]);
    check_same_shape(op, "priors[i]", *priors[i], "dx", dx);
  }
  op_range.set_class("depthwise");
  op_range.set_cost([&] {
    const bool fused = own_group(ctx, ws, ps, shapes, priors.size());
    OpCost c;
    for (size_t j = 0; j < ws.size(); ++j) {
      OpCost one = conv_cost(dys[j]->shape(), ws[j]->shape(), "depthwise");
      one.bytes_read = bytes(dys[j]) + bytes(ws[j]);
      one.bytes_written = fused ? 0.0 : bytes(dx);  // one by one: each d_j into scratch
      if (x && !(fused && j > 0))
        one += relu_cost(*x, true, own_depthwise(ctx, dx.shape(), ws[j]->shape(), ps[j]));
      c += one;
    }
    const double terms = double(priors.size() + ws.size());
    for (const Tensor* pr : priors) c.bytes_read += bytes(pr);
    c.flops += double(dx.numel()) * (terms - 1.0);
    if (fused) {  // one kernel: the priors read, dx written once
      c.launches = 1;
      c.bytes_written = bytes(dx);
    } else if (terms > 1) {  // then add_n over the priors and the scratch gradients
      c.launches += 1;
      c.bytes_read += double(ws.size()) * bytes(dx);
      c.bytes_written += bytes(dx);
    }
    return c;
  });
  detail::dispatch(ctx, &Backend::depthwise_group_bwd_data, dys, ws, ps, x, priors, dx);
}

void depthwise_group_bwd_filter(Context& ctx, const Tensor& x,
                                const std::vector<const Tensor*>& dys,
                                const std::vector<Conv2dParams>& ps,
                                const std::vector<Tensor*>& dws) {
  OpRange op_range(ctx, "depthwise_group_bwd_filter");
  const char* op = "depthwise_group_bwd_filter";
  check_tensor(ctx, op, "x", x);
  const std::vector<const Tensor*> ws(dws.begin(), dws.end());
  const std::vector<Shape> shapes =
      check_group(ctx, op, x.shape(), ws, ps, dys.size(), "output gradients");
  for (size_t j = 0; j < dys.size(); ++j) {
    CUDARTS_CHECK(dys[j] != nullptr, op, ": output gradient ", j, " is null");
    check_tensor(ctx, op, "dys[j]", *dys[j]);
    check_shape(op, "dys[j]", *dys[j], shapes[j]);
  }
  op_range.set_class("depthwise");
  op_range.set_cost([&] {
    // The CUDA group kernel (cuda/depthwise.cuh make_group_filter): own depthwise kernels, at
    // most kMaxGroup members with a group kernel size; every member's blocks read x (one launch
    // for all of them, then one for the fixed-order sums of their partials).
    bool fused = ctx.own_depthwise_kernels() && ws.size() <= size_t(kernel_rules::kMaxGroup);
    OpCost c;
    for (size_t j = 0; j < ws.size(); ++j) {
      const Shape& w = ws[j]->shape();
      fused = fused && kernel_rules::group_kernel_size(w[2], w[3]);
      OpCost one = conv_cost(dys[j]->shape(), w, "depthwise");
      one.bytes_read = bytes(x) + bytes(dys[j]) + bytes(ws[j]);  // dw accumulates
      one.bytes_written = bytes(ws[j]);
      const bool own_dw = own_depthwise(ctx, x.shape(), w, ps[j]);
      if (ps[j].relu_input) one += relu_cost(x, false, own_dw);
      if (own_dw) one.launches = 2;
      c += one;
    }
    if (fused) c.launches = 2;
    return c;
  });
  detail::dispatch(ctx, &Backend::depthwise_group_bwd_filter, x, dys, ps, dws);
}

namespace {
void check_bn_vectors(Context& ctx, const char* op, const Tensor& x,
                      std::initializer_list<std::pair<const char*, const Tensor*>> vs) {
  check_tensor(ctx, op, "x", x);
  check_ndim(op, "x", x, 4);
  for (auto& [name, t] : vs) {
    if (!t) continue;
    check_tensor(ctx, op, name, *t);
    check_shape(op, name, *t, Shape{x.dim(1)});
  }
}
}  // namespace

void batchnorm_fwd_train(Context& ctx, const Tensor& x, const Tensor* gamma, const Tensor* beta,
                         Tensor* running_mean, Tensor* running_var, Tensor& y, Tensor& save_mean,
                         Tensor& save_invstd, const BatchNormParams& p) {
  OpRange op_range(ctx, "batchnorm_fwd_train");
  const char* op = "batchnorm_fwd_train";
  check_bn_vectors(ctx, op, x,
                   {{"gamma", gamma},
                    {"beta", beta},
                    {"running_mean", running_mean},
                    {"running_var", running_var},
                    {"save_mean", &save_mean},
                    {"save_invstd", &save_invstd}});
  CUDARTS_CHECK((gamma == nullptr) == (beta == nullptr), op,
                ": gamma and beta must both be given or both omitted");
  CUDARTS_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
                ": running_mean and running_var must both be given or both omitted");
  CUDARTS_CHECK(x.dim(0) * x.dim(2) * x.dim(3) > 1, op, ": input ", x.shape(),
                " has one value per channel; batch statistics need more than one");
  CUDARTS_CHECK(p.eps > 0.0f && p.momentum >= 0.0f && p.momentum <= 1.0f, op, ": eps ", p.eps,
                " must be > 0 and momentum ", p.momentum, " in [0, 1]");
  check_tensor(ctx, op, "y", y);
  check_same_shape(op, "x", x, "y", y);
  op_range.set_cost([&] {  // one pass for the statistics, one to normalise
    OpCost c;
    // Affine-free on the own kernels (own_norm_kernels): partial sums, their fixed-order finish,
    // the normalisation.
    c.launches = ctx.own_norm_kernels() && !gamma && !beta ? 3 : 1;
    c.bytes_read = 2 * bytes(x);
    c.bytes_written = bytes(y);
    c.flops = 6.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_fwd_train, x, gamma, beta, running_mean, running_var, y,
                   save_mean, save_invstd, p);
}

void batchnorm_fwd_infer(Context& ctx, const Tensor& x, const Tensor* gamma, const Tensor* beta,
                         const Tensor& running_mean, const Tensor& running_var, Tensor& y,
                         float eps) {
  OpRange op_range(ctx, "batchnorm_fwd_infer");
  const char* op = "batchnorm_fwd_infer";
  check_bn_vectors(ctx, op, x,
                   {{"gamma", gamma},
                    {"beta", beta},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var}});
  CUDARTS_CHECK((gamma == nullptr) == (beta == nullptr), op,
                ": gamma and beta must both be given or both omitted");
  CUDARTS_CHECK(eps > 0.0f, op, ": eps ", eps, " must be > 0");
  check_tensor(ctx, op, "y", y);
  check_same_shape(op, "x", x, "y", y);
  detail::dispatch(ctx, &Backend::batchnorm_fwd_infer, x, gamma, beta, running_mean, running_var, y,
                   eps);
}

void batchnorm_moments(Context& ctx, const Tensor& x, const Tensor& shift, Tensor& moments) {
  OpRange op_range(ctx, "batchnorm_moments");
  const char* op = "batchnorm_moments";
  check_bn_vectors(ctx, op, x, {{"shift", &shift}});
  check_tensor(ctx, op, "moments", moments);
  check_shape(op, "moments", moments, Shape{2, x.dim(1)});
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_read = bytes(x);
    c.bytes_written = bytes(moments);
    c.flops = 3.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_moments, x, shift, moments);
}

void batchnorm_moments_finish(Context& ctx, const Tensor& moments, const Tensor& shift,
                              double count, Tensor& mean, Tensor& var, Tensor& invstd,
                              Tensor* running_mean, Tensor* running_var, const BatchNormParams& p) {
  OpRange op_range(ctx, "batchnorm_moments_finish");
  const char* op = "batchnorm_moments_finish";
  check_tensor(ctx, op, "moments", moments);
  check_ndim(op, "moments", moments, 2);
  const Shape c{moments.dim(1)};
  CUDARTS_CHECK(moments.dim(0) == 2, op, ": moments has shape ", moments.shape(),
                ", expected (2, C)");
  for (auto [name, t] :
       std::initializer_list<std::pair<const char*, const Tensor*>>{{"shift", &shift},
                                                                    {"mean", &mean},
                                                                    {"var", &var},
                                                                    {"invstd", &invstd},
                                                                    {"running_mean", running_mean},
                                                                    {"running_var", running_var}}) {
    if (!t) continue;
    check_tensor(ctx, op, name, *t);
    check_shape(op, name, *t, c);
  }
  CUDARTS_CHECK((running_mean == nullptr) == (running_var == nullptr), op,
                ": running_mean and running_var must both be given or both omitted");
  CUDARTS_CHECK(std::isfinite(count) && count > 1.0, op, ": count ", count,
                " must be finite and > 1 (batch statistics need more than one value)");
  CUDARTS_CHECK(p.eps > 0.0f && p.momentum >= 0.0f && p.momentum <= 1.0f, op, ": eps ", p.eps,
                " must be > 0 and momentum ", p.momentum, " in [0, 1]");
  op_range.set_cost([&] {
    OpCost k;
    k.launches = 1;
    k.bytes_read = bytes(moments) + bytes(shift) + (running_mean ? 2 * bytes(mean) : 0);
    k.bytes_written = 3 * bytes(mean) + (running_mean ? 2 * bytes(mean) : 0);
    k.flops = 12.0 * double(c[0]);
    return k;
  });
  detail::dispatch(ctx, &Backend::batchnorm_moments_finish, moments, shift, count, mean, var,
                   invstd, running_mean, running_var, p);
}

void batchnorm_bwd_sums(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor& mean,
                        const Tensor& invstd, Tensor& sums) {
  OpRange op_range(ctx, "batchnorm_bwd_sums");
  const char* op = "batchnorm_bwd_sums";
  check_bn_vectors(ctx, op, x, {{"mean", &mean}, {"invstd", &invstd}});
  check_tensor(ctx, op, "dy", dy);
  check_same_shape(op, "x", x, "dy", dy);
  check_tensor(ctx, op, "sums", sums);
  check_shape(op, "sums", sums, Shape{2, x.dim(1)});
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_read = bytes(dy) + bytes(x);
    c.bytes_written = bytes(sums);
    c.flops = 4.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_bwd_sums, dy, x, mean, invstd, sums);
}

void batchnorm_bwd_apply(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor* gamma,
                         const Tensor& mean, const Tensor& invstd, const Tensor& sums, double count,
                         Tensor& dx) {
  OpRange op_range(ctx, "batchnorm_bwd_apply");
  const char* op = "batchnorm_bwd_apply";
  check_bn_vectors(ctx, op, x, {{"gamma", gamma}, {"mean", &mean}, {"invstd", &invstd}});
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "dx", dx);
  check_same_shape(op, "x", x, "dy", dy);
  check_same_shape(op, "x", x, "dx", dx);
  check_tensor(ctx, op, "sums", sums);
  check_shape(op, "sums", sums, Shape{2, x.dim(1)});
  CUDARTS_CHECK(std::isfinite(count) && count > 0.0, op, ": count ", count,
                " must be finite and > 0");
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_read = bytes(dy) + bytes(x);
    c.bytes_written = bytes(dx);
    c.flops = 6.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_bwd_apply, dy, x, gamma, mean, invstd, sums, count, dx);
}

void batchnorm_bwd(Context& ctx, const Tensor& dy, const Tensor& x, const Tensor* gamma,
                   const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx, Tensor* dgamma,
                   Tensor* dbeta) {
  OpRange op_range(ctx, "batchnorm_bwd");
  const char* op = "batchnorm_bwd";
  check_bn_vectors(ctx, op, x,
                   {{"gamma", gamma},
                    {"save_mean", &save_mean},
                    {"save_invstd", &save_invstd},
                    {"dgamma", dgamma},
                    {"dbeta", dbeta}});
  CUDARTS_CHECK((dgamma == nullptr) == (dbeta == nullptr), op,
                ": dgamma and dbeta must both be given or both omitted");
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "dx", dx);
  check_same_shape(op, "x", x, "dy", dy);
  check_same_shape(op, "x", x, "dx", dx);
  op_range.set_cost([&] {  // one pass for the two reductions, one for dx
    OpCost c;
    // Affine-free on the own kernels: the sums, the coefficients, dx.
    c.launches = ctx.own_norm_kernels() && !gamma && !dgamma ? 3 : 1;
    c.bytes_read = 2 * (bytes(dy) + bytes(x));
    c.bytes_written = bytes(dx);
    c.flops = 10.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_bwd, dy, x, gamma, save_mean, save_invstd, dx, dgamma,
                   dbeta);
}

void relu_fwd(Context& ctx, const Tensor& x, Tensor& y) {
  OpRange op_range(ctx, "relu_fwd");
  check_tensor(ctx, "relu_fwd", "x", x);
  check_tensor(ctx, "relu_fwd", "y", y);
  check_same_shape("relu_fwd", "x", x, "y", y);
  detail::dispatch(ctx, &Backend::relu_fwd, x, y);
}

void relu_bwd(Context& ctx, const Tensor& dy, const Tensor& y, Tensor& dx) {
  OpRange op_range(ctx, "relu_bwd");
  check_tensor(ctx, "relu_bwd", "dy", dy);
  check_tensor(ctx, "relu_bwd", "y", y);
  check_tensor(ctx, "relu_bwd", "dx", dx);
  check_same_shape("relu_bwd", "dy", dy, "y", y);
  check_same_shape("relu_bwd", "dy", dy, "dx", dx);
  detail::dispatch(ctx, &Backend::relu_bwd, dy, y, dx);
}

Shape pool2d_output_shape(const Shape& x, const Pool2dParams& p) {
  CUDARTS_CHECK(x.ndim() == 4, "pool2d: input has shape ", x, ", expected (N, C, H, W)");
  CUDARTS_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1,
                "pool2d: kernel ", p.kernel_h, "x", p.kernel_w, " and stride ", p.stride_h, "x",
                p.stride_w, " must be >= 1");
  CUDARTS_CHECK(
      p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
      "pool2d: padding (", p.pad_h, ", ", p.pad_w, ") must be >= 0 and at most half the kernel (",
      p.kernel_h, "x", p.kernel_w, ")");
  const int64_t hp = x[2] + 2 * int64_t(p.pad_h), wp = x[3] + 2 * int64_t(p.pad_w);
  CUDARTS_CHECK(hp >= p.kernel_h && wp >= p.kernel_w, "pool2d: input ", x, " padded to ", hp, "x",
                wp, " is smaller than the kernel ", p.kernel_h, "x", p.kernel_w);
  return Shape{x[0], x[1], (hp - p.kernel_h) / p.stride_h + 1, (wp - p.kernel_w) / p.stride_w + 1};
}

void pool2d_fwd(Context& ctx, const Tensor& x, Tensor& y, const Pool2dParams& p) {
  OpRange op_range(ctx, "pool2d_fwd");
  check_tensor(ctx, "pool2d_fwd", "x", x);
  check_tensor(ctx, "pool2d_fwd", "y", y);
  check_shape("pool2d_fwd", "y", y, pool2d_output_shape(x.shape(), p));
  detail::dispatch(ctx, &Backend::pool2d_fwd, x, y, p);
}

void pool2d_bwd(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                const Pool2dParams& p) {
  OpRange op_range(ctx, "pool2d_bwd");
  const char* op = "pool2d_bwd";
  check_tensor(ctx, op, "x", x);
  check_tensor(ctx, op, "y", y);
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "dx", dx);
  check_shape(op, "y", y, pool2d_output_shape(x.shape(), p));
  check_same_shape(op, "y", y, "dy", dy);
  check_same_shape(op, "x", x, "dx", dx);
  // The own kernels (own_pool_kernels; the CUDA backend's rule in cuda/pool.cuh: windows of at
  // most 255 elements): max reads x for each window's argmax (a byte each) and gathers dy by
  // it, two launches; average gathers dy alone. cuDNN reads x, y and dy.
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_written = bytes(dx);
    if (ctx.own_pool_kernels() && p.kernel_h * p.kernel_w <= 255) {
      c.bytes_read = bytes(dy);
      if (p.mode == PoolMode::Max) {
        c.launches = 2;
        c.bytes_read += bytes(x) + double(dy.numel());
        c.bytes_written += double(dy.numel());
      }
    } else {
      c.bytes_read = bytes(x) + bytes(y) + bytes(dy);
    }
    return c;
  });
  detail::dispatch(ctx, &Backend::pool2d_bwd, x, y, dy, dx, p);
}

void global_avgpool_fwd(Context& ctx, const Tensor& x, Tensor& y) {
  OpRange op_range(ctx, "global_avgpool_fwd");
  check_tensor(ctx, "global_avgpool_fwd", "x", x);
  check_tensor(ctx, "global_avgpool_fwd", "y", y);
  check_ndim("global_avgpool_fwd", "x", x, 4);
  check_shape("global_avgpool_fwd", "y", y, Shape{x.dim(0), x.dim(1)});
  detail::dispatch(ctx, &Backend::global_avgpool_fwd, x, y);
}

void global_avgpool_bwd(Context& ctx, const Tensor& dy, Tensor& dx) {
  OpRange op_range(ctx, "global_avgpool_bwd");
  check_tensor(ctx, "global_avgpool_bwd", "dy", dy);
  check_tensor(ctx, "global_avgpool_bwd", "dx", dx);
  check_ndim("global_avgpool_bwd", "dx", dx, 4);
  check_shape("global_avgpool_bwd", "dy", dy, Shape{dx.dim(0), dx.dim(1)});
  detail::dispatch(ctx, &Backend::global_avgpool_bwd, dy, dx);
}

void linear_fwd(Context& ctx, const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  OpRange op_range(ctx, "linear_fwd");
  const char* op = "linear_fwd";
  check_tensor(ctx, op, "x", x);
  check_tensor(ctx, op, "w", w);
  check_tensor(ctx, op, "y", y);
  check_ndim(op, "x", x, 2);
  check_ndim(op, "w", w, 2);
  CUDARTS_CHECK(x.dim(1) == w.dim(1), op, ": input x has shape ", x.shape(),
                " but weight w has shape ", w.shape(), " (expects ", w.dim(1), " input features)");
  check_shape(op, "y", y, Shape{x.dim(0), w.dim(0)});
  op_range.set_cost([&] {  // a bias broadcast into y, then the GEMM accumulates onto it
    OpCost c = linear_cost(x, w.shape());
    c.bytes_read = bytes(x) + bytes(w);
    c.bytes_written = bytes(y);
    if (bias) {
      c.launches += 1;
      c.bytes_read += bytes(bias) + bytes(y);
      c.bytes_written += bytes(y);
    }
    return c;
  });
  if (bias) {
    check_tensor(ctx, op, "bias", *bias);
    check_shape(op, "bias", *bias, Shape{w.dim(0)});
  }
  detail::dispatch(ctx, &Backend::linear_fwd, x, w, bias, y);
}

void linear_bwd_data(Context& ctx, const Tensor& dy, const Tensor& w, Tensor& dx) {
  OpRange op_range(ctx, "linear_bwd_data");
  const char* op = "linear_bwd_data";
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "w", w);
  check_tensor(ctx, op, "dx", dx);
  check_ndim(op, "w", w, 2);
  check_ndim(op, "dx", dx, 2);
  check_shape(op, "dy", dy, Shape{dx.dim(0), w.dim(0)});
  CUDARTS_CHECK(dx.dim(1) == w.dim(1), op, ": dx has shape ", dx.shape(), " but w has shape ",
                w.shape());
  op_range.set_cost([&] {
    OpCost c = linear_cost(dx, w.shape());
    c.bytes_read = bytes(dy) + bytes(w);
    c.bytes_written = bytes(dx);
    return c;
  });
  detail::dispatch(ctx, &Backend::linear_bwd_data, dy, w, dx);
}

void linear_bwd_weight(Context& ctx, const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias) {
  OpRange op_range(ctx, "linear_bwd_weight");
  const char* op = "linear_bwd_weight";
  check_tensor(ctx, op, "x", x);
  check_tensor(ctx, op, "dy", dy);
  check_tensor(ctx, op, "dw", dw);
  check_ndim(op, "x", x, 2);
  check_ndim(op, "dw", dw, 2);
  check_shape(op, "dy", dy, Shape{x.dim(0), dw.dim(0)});
  CUDARTS_CHECK(x.dim(1) == dw.dim(1), op, ": x has shape ", x.shape(), " but dw has shape ",
                dw.shape());
  if (dbias) {
    check_tensor(ctx, op, "dbias", *dbias);
    check_shape(op, "dbias", *dbias, Shape{dw.dim(0)});
  }
  op_range.set_cost([&] {
    OpCost c = linear_cost(x, dw.shape());
    c.bytes_read = bytes(x) + bytes(dy) + bytes(dw);  // dw accumulates
    c.bytes_written = bytes(dw);
    if (dbias) {  // a column-sum kernel over dy
      c.launches += 1;
      c.bytes_read += bytes(dy) + bytes(dbias);
      c.bytes_written += bytes(dbias);
    }
    return c;
  });
  detail::dispatch(ctx, &Backend::linear_bwd_weight, x, dy, dw, dbias);
}

void add(Context& ctx, const Tensor& a, const Tensor& b, Tensor& y) {
  OpRange op_range(ctx, "add");
  check_tensor(ctx, "add", "a", a);
  check_tensor(ctx, "add", "b", b);
  check_tensor(ctx, "add", "y", y);
  check_same_shape("add", "a", a, "b", b);
  check_same_shape("add", "a", a, "y", y);
  detail::dispatch(ctx, &Backend::add, a, b, y);
}

void scale(Context& ctx, const Tensor& x, float alpha, Tensor& y) {
  OpRange op_range(ctx, "scale");
  check_tensor(ctx, "scale", "x", x);
  check_tensor(ctx, "scale", "y", y);
  check_same_shape("scale", "x", x, "y", y);
  detail::dispatch(ctx, &Backend::scale, x, alpha, y);
}

void axpy(Context& ctx, float alpha, const Tensor& x, Tensor& y) {
  OpRange op_range(ctx, "axpy");
  check_tensor(ctx, "axpy", "x", x);
  check_tensor(ctx, "axpy", "y", y);
  check_same_shape("axpy", "x", x, "y", y);
  op_range.set_cost([&] {
    OpCost c;
    c.launches = 1;
    c.bytes_read = bytes(x) + bytes(y);
    c.bytes_written = bytes(y);
    c.flops = 2.0 * double(x.numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::axpy, alpha, x, y);
}

namespace {
void check_concat(Context& ctx, const char* op, const std::vector<const Tensor*>& parts,
                  const Tensor& whole) {
  check_tensor(ctx, op, "y", whole);
  check_ndim(op, "y", whole, 4);
  CUDARTS_CHECK(!parts.empty(), op, ": no parts given");
  int64_t channels = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Tensor& t = *parts[i];
    check_tensor(ctx, op, "part", t);
    check_ndim(op, "part", t, 4);
    CUDARTS_CHECK(t.dim(0) == whole.dim(0) && t.dim(2) == whole.dim(2) && t.dim(3) == whole.dim(3),
                  op, ": part ", i, " has shape ", t.shape(), " which does not match ",
                  whole.shape(), " outside the channel dimension");
    channels += t.dim(1);
  }
  CUDARTS_CHECK(channels == whole.dim(1), op, ": parts have ", channels,
                " channels in total but y has shape ", whole.shape());
}
}  // namespace

void concat_channels(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& y) {
  OpRange op_range(ctx, "concat_channels");
  check_concat(ctx, "concat_channels", xs, y);
  op_range.set_cost([&] {  // one strided copy per part
    OpCost c;
    c.launches = int64_t(xs.size());
    c.bytes_read = c.bytes_written = bytes(y);
    return c;
  });
  detail::dispatch(ctx, &Backend::concat_channels, xs, y);
}

void split_channels(Context& ctx, const Tensor& y, const std::vector<Tensor*>& xs) {
  OpRange op_range(ctx, "split_channels");
  check_concat(ctx, "split_channels", std::vector<const Tensor*>(xs.begin(), xs.end()), y);
  op_range.set_cost([&] {  // one strided copy per part
    OpCost c;
    c.launches = int64_t(xs.size());
    c.bytes_read = c.bytes_written = bytes(y);
    return c;
  });
  detail::dispatch(ctx, &Backend::split_channels, y, xs);
}

void channel_shuffle(Context& ctx, const Tensor& x, int groups, Tensor& y) {
  OpRange op_range(ctx, "channel_shuffle");
  check_tensor(ctx, "channel_shuffle", "x", x);
  check_tensor(ctx, "channel_shuffle", "y", y);
  check_ndim("channel_shuffle", "x", x, 4);
  check_same_shape("channel_shuffle", "x", x, "y", y);
  CUDARTS_CHECK(groups >= 1 && x.dim(1) % groups == 0, "channel_shuffle: ", x.dim(1),
                " channels (x ", x.shape(), ") are not divisible into ", groups, " groups");
  detail::dispatch(ctx, &Backend::channel_shuffle, x, groups, y);
}

void softmax_xent(Context& ctx, const Tensor& logits, const Tensor& labels, Tensor& loss,
                  Tensor& dlogits, Tensor& correct) {
  OpRange op_range(ctx, "softmax_xent");
  const char* op = "softmax_xent";
  check_tensor(ctx, op, "logits", logits);
  check_tensor(ctx, op, "labels", labels, DType::I32);
  check_tensor(ctx, op, "loss", loss);
  check_tensor(ctx, op, "dlogits", dlogits);
  check_tensor(ctx, op, "correct", correct);
  check_ndim(op, "logits", logits, 2);
  CUDARTS_CHECK(logits.dim(0) > 0 && logits.dim(1) > 0, op, ": logits shape ", logits.shape(),
                " is empty");
  check_shape(op, "labels", labels, Shape{logits.dim(0)});
  check_same_shape(op, "logits", logits, "dlogits", dlogits);
  check_shape(op, "loss", loss, Shape{1});
  check_shape(op, "correct", correct, Shape{1});
  op_range.set_cost([&] {  // rows, then the batch total
    OpCost c;
    c.launches = 2;
    c.bytes_read = bytes(logits) + bytes(labels);
    c.bytes_written = bytes(dlogits) + bytes(loss) + bytes(correct);
    return c;
  });
  detail::dispatch(ctx, &Backend::softmax_xent, logits, labels, loss, dlogits, correct);
}

void random_words(Context& ctx, Tensor& out, uint64_t seed, uint64_t offset) {
  OpRange op_range(ctx, "random_words");
  check_tensor(ctx, "random_words", "out", out, DType::I32);
  detail::dispatch(ctx, &Backend::random_words, out, seed, offset, rng_shift(ctx));
}

void random_uniform(Context& ctx, Tensor& out, uint64_t seed, uint64_t offset, float low,
                    float high) {
  OpRange op_range(ctx, "random_uniform");
  check_tensor(ctx, "random_uniform", "out", out);
  CUDARTS_CHECK(low < high, "random_uniform: low ", low, " must be below high ", high);
  detail::dispatch(ctx, &Backend::random_uniform, out, seed, offset, rng_shift(ctx), low, high);
}

namespace {
void check_vector(Context& ctx, const char* op, const char* name, const Tensor& t, int64_t k,
                  DType dtype = DType::F32) {
  check_tensor(ctx, op, name, t, dtype);
  check_shape(op, name, t, Shape{k});
}

// Every entry of xs a tensor of `shape`; with nulls_allowed an entry may be null (a zero).
void check_list(Context& ctx, const char* op, const std::vector<const Tensor*>& xs,
                const Shape& shape, bool nulls_allowed = false) {
  CUDARTS_CHECK(!xs.empty(), op, ": the tensor list is empty");
  for (size_t i = 0; i < xs.size(); ++i) {
    if (nulls_allowed && xs[i] == nullptr) continue;
    CUDARTS_CHECK(xs[i] != nullptr, op, ": tensor ", i, " of the list is null");
    check_tensor(ctx, op, "xs[i]", *xs[i]);
    CUDARTS_CHECK(xs[i]->shape() == shape, op, ": tensor ", i, " of the list has shape ",
                  xs[i]->shape(), ", expected ", shape);
  }
}

void check_ranking(Context& ctx, const char* op, const Tensor& ranking, int64_t k_total, int k) {
  check_vector(ctx, op, "ranking", ranking, k_total, DType::I32);
  CUDARTS_CHECK(k >= 1 && k <= k_total, op, ": k = ", k, " must be in [1, ", k_total, "]");
}

void check_scale(Context& ctx, const char* op, const Tensor* grad_scale) {
  if (grad_scale) check_vector(ctx, op, "grad_scale", *grad_scale, 1);
}

void check_slots(Context& ctx, const char* op, const std::vector<OptimSlot>& slots,
                 bool need_state0, bool need_state1) {
  for (const OptimSlot& s : slots) {
    CUDARTS_CHECK(s.param && s.grad, op, ": a slot lacks its parameter or gradient");
    check_tensor(ctx, op, "param", *s.param);
    check_tensor(ctx, op, "grad", *s.grad);
    check_same_shape(op, "param", *s.param, "grad", *s.grad);
    if (need_state0) {
      CUDARTS_CHECK(s.state0, op, ": every parameter needs its first state tensor (",
                    std::string(op) == "sgd_step" ? "momentum buffer" : "first moment", ")");
      check_tensor(ctx, op, "state0", *s.state0);
      check_same_shape(op, "param", *s.param, "state0", *s.state0);
    }
    if (need_state1) {
      CUDARTS_CHECK(s.state1, op, ": every parameter needs its second moment");
      check_tensor(ctx, op, "state1", *s.state1);
      check_same_shape(op, "param", *s.param, "state1", *s.state1);
    }
    if (s.mask) {
      check_tensor(ctx, op, "mask", *s.mask);
      check_same_shape(op, "param", *s.param, "mask", *s.mask);
    }
  }
}
}  // namespace

void crop2d_fwd(Context& ctx, const Tensor& x, int top, int left, Tensor& y) {
  OpRange op_range(ctx, "crop2d_fwd");
  check_tensor(ctx, "crop2d_fwd", "x", x);
  check_tensor(ctx, "crop2d_fwd", "y", y);
  check_ndim("crop2d_fwd", "x", x, 4);
  check_ndim("crop2d_fwd", "y", y, 4);
  CUDARTS_CHECK(x.dim(0) == y.dim(0) && x.dim(1) == y.dim(1) && top >= 0 && left >= 0 &&
                    top + y.dim(2) <= x.dim(2) && left + y.dim(3) <= x.dim(3),
                "crop2d_fwd: window ", y.shape(), " at (", top, ", ", left,
                ") does not fit inside x ", x.shape());
  detail::dispatch(ctx, &Backend::crop2d_fwd, x, top, left, y);
}

void crop2d_bwd(Context& ctx, const Tensor& dy, int top, int left, Tensor& dx) {
  OpRange op_range(ctx, "crop2d_bwd");
  check_tensor(ctx, "crop2d_bwd", "dy", dy);
  check_tensor(ctx, "crop2d_bwd", "dx", dx);
  check_ndim("crop2d_bwd", "dy", dy, 4);
  check_ndim("crop2d_bwd", "dx", dx, 4);
  CUDARTS_CHECK(dx.dim(0) == dy.dim(0) && dx.dim(1) == dy.dim(1) && top >= 0 && left >= 0 &&
                    top + dy.dim(2) <= dx.dim(2) && left + dy.dim(3) <= dx.dim(3),
                "crop2d_bwd: window ", dy.shape(), " at (", top, ", ", left,
                ") does not fit inside dx ", dx.shape());
  detail::dispatch(ctx, &Backend::crop2d_bwd, dy, top, left, dx);
}

void scale_samples(Context& ctx, const Tensor& x, const Tensor& scales, Tensor& y) {
  OpRange op_range(ctx, "scale_samples");
  check_tensor(ctx, "scale_samples", "x", x);
  check_tensor(ctx, "scale_samples", "y", y);
  check_same_shape("scale_samples", "x", x, "y", y);
  CUDARTS_CHECK(x.ndim() >= 1, "scale_samples: x has no batch dimension");
  check_vector(ctx, "scale_samples", "scales", scales, x.dim(0));
  detail::dispatch(ctx, &Backend::scale_samples, x, scales, y);
}

void bernoulli_scale(Context& ctx, Tensor& out, float keep_prob, uint64_t seed, uint64_t offset) {
  OpRange op_range(ctx, "bernoulli_scale");
  check_tensor(ctx, "bernoulli_scale", "out", out);
  CUDARTS_CHECK(keep_prob > 0.0f && keep_prob <= 1.0f, "bernoulli_scale: keep_prob ", keep_prob,
                " must be in (0, 1]");
  detail::dispatch(ctx, &Backend::bernoulli_scale, out, keep_prob, seed, offset, rng_shift(ctx));
}

void augment(Context& ctx, const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed,
             uint64_t offset) {
  OpRange op_range(ctx, "augment");
  check_tensor(ctx, "augment", "x", x);
  check_tensor(ctx, "augment", "y", y);
  check_ndim("augment", "x", x, 4);
  check_same_shape("augment", "x", x, "y", y);
  CUDARTS_CHECK(p.pad >= 0 && p.cutout >= 0, "augment: pad ", p.pad, " and cutout ", p.cutout,
                " must be >= 0");
  CUDARTS_CHECK(!x.same_storage(y) || x.raw() != y.raw(), "augment: x and y must not alias");
  detail::dispatch(ctx, &Backend::augment, x, y, p, seed, offset, rng_shift(ctx));
}

void gather(Context& ctx, const Tensor& src, const Tensor& index, Tensor& dst) {
  OpRange op_range(ctx, "gather");
  check_tensor(ctx, "gather", "src", src);
  check_tensor(ctx, "gather", "index", index, DType::I32);
  check_tensor(ctx, "gather", "dst", dst);
  CUDARTS_CHECK(index.numel() == dst.numel(), "gather: index has ", index.numel(),
                " entries but dst has shape ", dst.shape());
  detail::dispatch(ctx, &Backend::gather, src, index, dst);
}

void softmax(Context& ctx, const Tensor& logits, Tensor& probs) {
  OpRange op_range(ctx, "softmax");
  check_tensor(ctx, "softmax", "logits", logits);
  check_ndim("softmax", "logits", logits, 1);
  CUDARTS_CHECK(logits.numel() >= 1, "softmax: empty logits");
  check_vector(ctx, "softmax", "probs", probs, logits.numel());
  detail::dispatch(ctx, &Backend::softmax, logits, probs);
}

namespace {
// A list of K-vectors (rows of a batched small op): non-empty, no null, each 1-D and non-empty;
// with `shapes`, row i has the shape of shapes[i].
void check_rows(Context& ctx, const char* op, const char* name,
                const std::vector<const Tensor*>& rows,
                const std::vector<const Tensor*>* shapes = nullptr) {
  CUDARTS_CHECK(!rows.empty(), op, ": the list '", name, "' is empty");
  if (shapes)
    CUDARTS_CHECK(rows.size() == shapes->size(), op, ": ", rows.size(), " entries in '", name,
                  "' for ", shapes->size(), " rows");
  for (size_t i = 0; i < rows.size(); ++i) {
    CUDARTS_CHECK(rows[i] != nullptr, op, ": entry ", i, " of '", name, "' is null");
    check_tensor(ctx, op, name, *rows[i]);
    check_ndim(op, name, *rows[i], 1);
    CUDARTS_CHECK(rows[i]->numel() >= 1, op, ": entry ", i, " of '", name, "' is empty");
    if (shapes)
      CUDARTS_CHECK(rows[i]->shape() == (*shapes)[i]->shape(), op, ": entry ", i, " of '", name,
                    "' has shape ", rows[i]->shape(), ", expected ", (*shapes)[i]->shape());
  }
}

OpCost rows_cost(const std::vector<const Tensor*>& rows, double passes) {
  OpCost c;  // one thread per row (or per shared output), 128 rows per launch
  c.launches = int64_t((rows.size() + 127) / 128);
  for (const Tensor* r : rows)
    c.bytes_read += passes * bytes(r), c.flops += 8.0 * double(r->numel());
  return c;
}
}  // namespace

void softmax_many(Context& ctx, const std::vector<const Tensor*>& logits,
                  const std::vector<Tensor*>& probs) {
  OpRange op_range(ctx, "softmax_many");
  const char* op = "softmax_many";
  check_rows(ctx, op, "logits", logits);
  const std::vector<const Tensor*> out(probs.begin(), probs.end());
  check_rows(ctx, op, "probs", out, &logits);
  // Overlaps are refused by the dispatch's range check.
  op_range.set_cost([&] {
    OpCost c = rows_cost(logits, 1.0);
    for (const Tensor* p : out) c.bytes_written += bytes(p);
    return c;
  });
  detail::dispatch(ctx, &Backend::softmax_many, logits, probs);
}

void arch_grad_many(Context& ctx, const std::vector<const Tensor*>& alphas,
                    const std::vector<const Tensor*>& gs, const std::vector<Tensor*>& dalphas) {
  OpRange op_range(ctx, "arch_grad_many");
  const char* op = "arch_grad_many";
  check_rows(ctx, op, "alphas", alphas);
  check_rows(ctx, op, "gs", gs, &alphas);
  const std::vector<const Tensor*> out(dalphas.begin(), dalphas.end());
  check_rows(ctx, op, "dalphas", out, &alphas);
  // Overlaps (a gradient on an input, gradients that overlap without being the same view) are
  // refused by the dispatch's range check, in O(n log n) over the rows.
  op_range.set_cost([&] {
    OpCost c = rows_cost(alphas, 3.0);  // alpha, g and dalpha read
    for (const Tensor* d : out) c.bytes_written += bytes(d);
    return c;
  });
  detail::dispatch(ctx, &Backend::arch_grad_many, alphas, gs, dalphas);
}

void mix_fwd(Context& ctx, const Tensor& weights, const std::vector<const Tensor*>& xs, Tensor& y) {
  OpRange op_range(ctx, "mix_fwd");
  check_tensor(ctx, "mix_fwd", "y", y);
  check_list(ctx, "mix_fwd", xs, y.shape(), true);
  check_vector(ctx, "mix_fwd", "weights", weights, int64_t(xs.size()));
  detail::dispatch(ctx, &Backend::mix_fwd, weights, xs, y);
}

void mix_bwd(Context& ctx, const Tensor& weights, const Tensor& dy,
             const std::vector<Tensor*>& dxs) {
  OpRange op_range(ctx, "mix_bwd");
  check_tensor(ctx, "mix_bwd", "dy", dy);
  check_list(ctx, "mix_bwd", std::vector<const Tensor*>(dxs.begin(), dxs.end()), dy.shape(), true);
  check_vector(ctx, "mix_bwd", "weights", weights, int64_t(dxs.size()));
  detail::dispatch(ctx, &Backend::mix_bwd, weights, dy, dxs);
}

void add_n(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& y) {
  OpRange op_range(ctx, "add_n");
  check_tensor(ctx, "add_n", "y", y);
  check_list(ctx, "add_n", xs, y.shape());
  op_range.set_cost([&] {  // one pass (CUDA: one launch per 64 terms, each later one re-reads y)
    OpCost c;
    const int64_t k = int64_t(xs.size()), chunks = k <= 64 ? 1 : 1 + (k - 64 + 62) / 63;
    c.launches = chunks;
    c.bytes_read = bytes(y) * double(k + chunks - 1);
    c.bytes_written = bytes(y) * double(chunks);
    c.flops = double(y.numel()) * double(k - 1);
    return c;
  });
  detail::dispatch(ctx, &Backend::add_n, xs, y);
}

void mix_scores(Context& ctx, const Tensor& dy, const std::vector<const Tensor*>& xs, Tensor& g) {
  OpRange op_range(ctx, "mix_scores");
  check_tensor(ctx, "mix_scores", "dy", dy);
  check_list(ctx, "mix_scores", xs, dy.shape(), true);
  check_vector(ctx, "mix_scores", "g", g, int64_t(xs.size()));
  op_range.set_cost([&] {  // per-block partials, then their fixed-order sum
    OpCost c;
    c.launches = 2;
    for (const Tensor* x : xs)  // one pass over dy per candidate read (grid y)
      if (x) c.bytes_read += bytes(dy) + bytes(x), c.flops += 2.0 * double(dy.numel());
    c.bytes_written = bytes(g);
    return c;
  });
  detail::dispatch(ctx, &Backend::mix_scores, dy, xs, g);
}

void mix_bwd_scores(Context& ctx, const Tensor& weights, const Tensor& dy,
                    const std::vector<const Tensor*>& xs, const std::vector<Tensor*>& dxs,
                    Tensor& g) {
  OpRange op_range(ctx, "mix_bwd_scores");
  const char* op = "mix_bwd_scores";
  check_tensor(ctx, op, "dy", dy);
  check_list(ctx, op, xs, dy.shape(), true);
  check_list(ctx, op, std::vector<const Tensor*>(dxs.begin(), dxs.end()), dy.shape(), true);
  CUDARTS_CHECK(xs.size() == dxs.size(), op, ": ", xs.size(), " candidate outputs but ", dxs.size(),
                " gradients");
  check_vector(ctx, op, "weights", weights, int64_t(xs.size()));
  check_vector(ctx, op, "g", g, int64_t(xs.size()));
  op_range.set_cost([&] {  // one pass over dy and the xs (per-block partials), then their sum
    OpCost c;
    c.launches = 2;
    c.bytes_read = bytes(dy) + bytes(weights);
    for (const Tensor* x : xs)
      if (x) c.bytes_read += bytes(x), c.flops += 2.0 * double(dy.numel());
    for (const Tensor* d : dxs)
      if (d) c.bytes_written += bytes(d), c.flops += double(dy.numel());
    c.bytes_written += bytes(g);
    return c;
  });
  detail::dispatch(ctx, &Backend::mix_bwd_scores, weights, dy, xs, dxs, g);
}

namespace {
// The candidate list of the normalised mixes: K entries of `shape` (nulls allowed), K flags,
// every normed entry present; mean and invstd (K, C) for shape (N, C, H, W).
void check_normed_list(Context& ctx, const char* op, const std::vector<const Tensor*>& xs,
                       const std::vector<bool>& normed, const Shape& shape, const Tensor& mean,
                       const Tensor& invstd) {
  check_list(ctx, op, xs, shape, true);
  CUDARTS_CHECK(normed.size() == xs.size(), op, ": ", normed.size(), " normed flags for ",
                xs.size(), " candidates");
  CUDARTS_CHECK(shape.ndim() == 4, op, ": the candidates have shape ", shape,
                ", expected (N, C, H, W)");
  for (size_t i = 0; i < xs.size(); ++i)
    CUDARTS_CHECK(!normed[i] || xs[i], op, ": candidate ", i,
                  " is normed but null (a null entry is an exact zero)");
  const Shape rows{int64_t(xs.size()), shape[1]};
  check_tensor(ctx, op, "mean", mean);
  check_shape(op, "mean", mean, rows);
  check_tensor(ctx, op, "invstd", invstd);
  check_shape(op, "invstd", invstd, rows);
}

double normed_count(const std::vector<const Tensor*>& xs, const std::vector<bool>& normed) {
  double k = 0.0;
  for (size_t i = 0; i < xs.size(); ++i) k += xs[i] && normed[i] ? 1.0 : 0.0;
  return k;
}
}  // namespace

void batchnorm_stats(Context& ctx, const std::vector<const Tensor*>& xs,
                     const std::vector<bool>& normed, Tensor& mean, Tensor& invstd,
                     const std::vector<Tensor*>& running_means,
                     const std::vector<Tensor*>& running_vars, const BatchNormParams& p) {
  OpRange op_range(ctx, "batchnorm_stats");
  const char* op = "batchnorm_stats";
  CUDARTS_CHECK(!xs.empty(), op, ": the tensor list is empty");
  const Tensor* first = first_present(xs);
  CUDARTS_CHECK(first, op, ": every entry of the list is null");
  check_tensor(ctx, op, "xs[i]", *first);
  check_normed_list(ctx, op, xs, normed, first->shape(), mean, invstd);
  const Shape& s = first->shape();
  CUDARTS_CHECK(s[0] * s[2] * s[3] > 1, op, ": input ", s,
                " has one value per channel; batch statistics need more than one");
  CUDARTS_CHECK(running_means.size() == running_vars.size() &&
                    (running_means.empty() || running_means.size() == xs.size()),
                op, ": ", running_means.size(), " running means and ", running_vars.size(),
                " running variances for ", xs.size(), " candidates (expected ", xs.size(),
                " of each, or none)");
  for (size_t i = 0; i < running_means.size(); ++i) {
    if (!normed[i]) continue;
    for (auto [name, t] : {std::pair<const char*, Tensor*>{"running_means[i]", running_means[i]},
                           {"running_vars[i]", running_vars[i]}}) {
      CUDARTS_CHECK(t, op, ": ", name, " of normed candidate ", i, " is null");
      check_tensor(ctx, op, name, *t);
      check_shape(op, name, *t, Shape{s[1]});
    }
  }
  CUDARTS_CHECK(p.eps > 0.0f && p.momentum >= 0.0f && p.momentum <= 1.0f, op, ": eps ", p.eps,
                " must be > 0 and momentum ", p.momentum, " in [0, 1]");
  op_range.set_cost([&] {  // per-block partial sums of every normed entry, then their sum
    OpCost c;
    const double k = normed_count(xs, normed);
    c.launches = 2;
    c.bytes_read = k * bytes(first) + (running_means.empty() ? 0.0 : 2.0 * k * s[1] * 4.0);
    c.bytes_written =
        bytes(mean) + bytes(invstd) + (running_means.empty() ? 0.0 : 2.0 * k * s[1] * 4.0);
    c.flops = 3.0 * k * double(first->numel());
    return c;
  });
  detail::dispatch(ctx, &Backend::batchnorm_stats, xs, normed, mean, invstd, running_means,
                   running_vars, p);
}

void mix_norm_fwd(Context& ctx, const Tensor& weights, const std::vector<const Tensor*>& xs,
                  const std::vector<bool>& normed, const Tensor& mean, const Tensor& invstd,
                  Tensor& y) {
  OpRange op_range(ctx, "mix_norm_fwd");
  const char* op = "mix_norm_fwd";
  check_tensor(ctx, op, "y", y);
  check_normed_list(ctx, op, xs, normed, y.shape(), mean, invstd);
  check_vector(ctx, op, "weights", weights, int64_t(xs.size()));
  op_range.set_cost([&] {  // one pass over the entries, the normalisation on the fly
    OpCost c;
    c.launches = 1;
    c.bytes_read = bytes(weights) + bytes(mean) + bytes(invstd);
    for (size_t i = 0; i < xs.size(); ++i)
      if (xs[i])
        c.bytes_read += bytes(xs[i]), c.flops += (normed[i] ? 4.0 : 2.0) * double(y.numel());
    c.bytes_written = bytes(y);
    return c;
  });
  detail::dispatch(ctx, &Backend::mix_norm_fwd, weights, xs, normed, mean, invstd, y);
}

void mix_norm_bwd(Context& ctx, const Tensor& weights, const Tensor& dy,
                  const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                  const Tensor& mean, const Tensor& invstd, const std::vector<Tensor*>& dxs,
                  Tensor* g) {
  OpRange op_range(ctx, "mix_norm_bwd");
  const char* op = "mix_norm_bwd";
  check_tensor(ctx, op, "dy", dy);
  check_normed_list(ctx, op, xs, normed, dy.shape(), mean, invstd);
  check_vector(ctx, op, "weights", weights, int64_t(xs.size()));
  check_list(ctx, op, std::vector<const Tensor*>(dxs.begin(), dxs.end()), dy.shape(), true);
  CUDARTS_CHECK(dxs.size() == xs.size(), op, ": ", xs.size(), " candidates but ", dxs.size(),
                " gradients");
  if (g) check_vector(ctx, op, "g", *g, int64_t(xs.size()));
  for (size_t i = 0; i < dxs.size(); ++i) {
    if (!dxs[i]) continue;
    CUDARTS_CHECK(!dxs[i]->same_storage(dy), op, ": gradient ", i, " shares storage with dy");
    for (size_t j = 0; j < xs.size(); ++j)
      CUDARTS_CHECK(!xs[j] || !dxs[i]->same_storage(*xs[j]), op, ": gradient ", i,
                    " shares storage with candidate ", j);
    for (size_t j = 0; j < i; ++j)
      CUDARTS_CHECK(!dxs[j] || !dxs[i]->same_storage(*dxs[j]), op, ": gradients ", j, " and ", i,
                    " share storage");
  }
  op_range.set_cost([&] {
    // Per-block partial sums of dy and dy t_i (one launch per 8 candidates), their sum and
    // the coefficients, then one pass writing every gradient (and the scores).
    OpCost c;
    const int64_t k = int64_t(xs.size());
    const double groups = double((k + 7) / 8);
    c.launches = int64_t(groups) + 2;
    c.bytes_read =
        (groups + 1.0) * bytes(dy) + bytes(weights) + 2.0 * (bytes(mean) + bytes(invstd));
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!xs[i]) continue;
      if (g || normed[i]) c.bytes_read += bytes(xs[i]), c.flops += 3.0 * double(dy.numel());
      if (dxs[i] && normed[i]) c.bytes_read += bytes(xs[i]);
    }
    for (size_t i = 0; i < dxs.size(); ++i)
      if (dxs[i])
        c.bytes_written += bytes(dxs[i]), c.flops += (normed[i] ? 5.0 : 1.0) * double(dy.numel());
    c.bytes_written += bytes(g);
    return c;
  });
  detail::dispatch(ctx, &Backend::mix_norm_bwd, weights, dy, xs, normed, mean, invstd, dxs, g);
}

void arch_grad(Context& ctx, const Tensor& alpha, const Tensor& g, const Tensor* ranking,
               int restrict_k, Tensor& dalpha) {
  OpRange op_range(ctx, "arch_grad");
  const char* op = "arch_grad";
  check_tensor(ctx, op, "alpha", alpha);
  check_ndim(op, "alpha", alpha, 1);
  const int64_t k = alpha.numel();
  check_vector(ctx, op, "g", g, k);
  check_vector(ctx, op, "dalpha", dalpha, k);
  if (ranking) check_ranking(ctx, op, *ranking, k, restrict_k);
  CUDARTS_CHECK(ranking || restrict_k == 0, op, ": restrict_k ", restrict_k,
                " given without a ranking");
  detail::dispatch(ctx, &Backend::arch_grad, alpha, g, ranking, ranking ? restrict_k : 0, dalpha);
}

void gumbel_rank(Context& ctx, const Tensor& logits, const Tensor& offsets, uint64_t seed,
                 uint64_t offset, Tensor& ranking) {
  OpRange op_range(ctx, "gumbel_rank");
  const char* op = "gumbel_rank";
  check_tensor(ctx, op, "logits", logits);
  check_ndim(op, "logits", logits, 1);
  check_tensor(ctx, op, "offsets", offsets, DType::I32);
  check_ndim(op, "offsets", offsets, 1);
  CUDARTS_CHECK(offsets.numel() >= 2, op, ": offsets ", offsets.shape(),
                " must hold at least one segment (2 entries)");
  check_vector(ctx, op, "ranking", ranking, logits.numel(), DType::I32);
  detail::dispatch(ctx, &Backend::gumbel_rank, logits, offsets, seed, offset, rng_shift(ctx),
                   ranking);
}

void gumbel_softmax(Context& ctx, const Tensor& logits, uint64_t seed, uint64_t offset,
                    int64_t first, float tau, Tensor& soft) {
  OpRange op_range(ctx, "gumbel_softmax");
  check_tensor(ctx, "gumbel_softmax", "logits", logits);
  check_ndim("gumbel_softmax", "logits", logits, 1);
  CUDARTS_CHECK(logits.numel() >= 1, "gumbel_softmax: empty logits");
  check_vector(ctx, "gumbel_softmax", "soft", soft, logits.numel());
  CUDARTS_CHECK(first >= 0, "gumbel_softmax: first ", first, " must be >= 0");
  CUDARTS_CHECK(std::isfinite(tau) && tau > 0.0f, "gumbel_softmax: tau ", tau,
                " must be finite and > 0");
  detail::dispatch(ctx, &Backend::gumbel_softmax, logits, seed, offset, rng_shift(ctx), first, tau,
                   soft);
}

void gumbel_softmax_bwd(Context& ctx, const Tensor& logits, const Tensor& soft, const Tensor& dsoft,
                        float tau, Tensor& dlogits) {
  OpRange op_range(ctx, "gumbel_softmax_bwd");
  const char* op = "gumbel_softmax_bwd";
  check_tensor(ctx, op, "logits", logits);
  check_ndim(op, "logits", logits, 1);
  const int64_t k = logits.numel();
  check_vector(ctx, op, "soft", soft, k);
  check_vector(ctx, op, "dsoft", dsoft, k);
  check_vector(ctx, op, "dlogits", dlogits, k);
  CUDARTS_CHECK(std::isfinite(tau) && tau > 0.0f, op, ": tau ", tau, " must be finite and > 0");
  detail::dispatch(ctx, &Backend::gumbel_softmax_bwd, logits, soft, dsoft, tau, dlogits);
}

void batch_sum(Context& ctx, const Tensor& x, float scale, Tensor& out) {
  OpRange op_range(ctx, "batch_sum");
  check_tensor(ctx, "batch_sum", "x", x);
  check_tensor(ctx, "batch_sum", "out", out);
  CUDARTS_CHECK(x.ndim() >= 1 && x.dim(0) >= 1 && out.numel() * x.dim(0) == x.numel(),
                "batch_sum: x has shape ", x.shape(), " and out has shape ", out.shape(),
                "; expected out to hold one sample of x");
  detail::dispatch(ctx, &Backend::batch_sum, x, scale, out);
}

void ma_update_scores(Context& ctx, const Tensor& dy_sum, const Tensor& mu, Tensor& m,
                      const Tensor& ranking, int k_eval, float lr, Tensor& g) {
  OpRange op_range(ctx, "ma_update_scores");
  const char* op = "ma_update_scores";
  check_tensor(ctx, op, "dy_sum", dy_sum);
  check_tensor(ctx, op, "mu", mu);
  check_tensor(ctx, op, "m", m);
  check_same_shape(op, "mu", mu, "m", m);
  CUDARTS_CHECK(m.ndim() >= 1 && m.numel() == m.dim(0) * dy_sum.numel(), op, ": m has shape ",
                m.shape(), ", expected (K, ", dy_sum.shape(), ")");
  const int64_t k = m.dim(0);
  check_ranking(ctx, op, ranking, k, k_eval);
  check_vector(ctx, op, "g", g, k);
  CUDARTS_CHECK(lr > 0.0f && lr <= 1.0f, op, ": lr ", lr, " must be in (0, 1]");
  op_range.set_cost([&] {  // per-block partials (updating m), then their fixed-order sum
    OpCost c;
    c.launches = 2;
    c.bytes_read = bytes(dy_sum) * double(k) + bytes(mu) + bytes(m);
    c.bytes_written = bytes(m) + bytes(g);
    return c;
  });
  detail::dispatch(ctx, &Backend::ma_update_scores, dy_sum, mu, m, ranking, k_eval, lr, g);
}

void masked_logsumexp(Context& ctx, const Tensor& alpha, const Tensor& ranking, int k,
                      Tensor& out) {
  OpRange op_range(ctx, "masked_logsumexp");
  check_tensor(ctx, "masked_logsumexp", "alpha", alpha);
  check_ndim("masked_logsumexp", "alpha", alpha, 1);
  check_ranking(ctx, "masked_logsumexp", ranking, alpha.numel(), k);
  check_vector(ctx, "masked_logsumexp", "out", out, 1);
  detail::dispatch(ctx, &Backend::masked_logsumexp, alpha, ranking, k, out);
}

void proxyless_rescale(Context& ctx, Tensor& alpha, const Tensor& ranking, int k,
                       const Tensor& lse_old) {
  OpRange op_range(ctx, "proxyless_rescale");
  check_tensor(ctx, "proxyless_rescale", "alpha", alpha);
  check_ndim("proxyless_rescale", "alpha", alpha, 1);
  check_ranking(ctx, "proxyless_rescale", ranking, alpha.numel(), k);
  check_vector(ctx, "proxyless_rescale", "lse_old", lse_old, 1);
  detail::dispatch(ctx, &Backend::proxyless_rescale, alpha, ranking, k, lse_old);
}

void mark_ranked(Context& ctx, const Tensor& ranking, int k, Tensor& mask) {
  OpRange op_range(ctx, "mark_ranked");
  check_tensor(ctx, "mark_ranked", "mask", mask);
  check_ndim("mark_ranked", "mask", mask, 1);
  check_ranking(ctx, "mark_ranked", ranking, mask.numel(), k);
  detail::dispatch(ctx, &Backend::mark_ranked, ranking, k, mask);
}

void mask_logsumexp(Context& ctx, const Tensor& alpha, const Tensor& mask, Tensor& out) {
  OpRange op_range(ctx, "mask_logsumexp");
  check_tensor(ctx, "mask_logsumexp", "alpha", alpha);
  check_ndim("mask_logsumexp", "alpha", alpha, 1);
  check_vector(ctx, "mask_logsumexp", "mask", mask, alpha.numel());
  check_vector(ctx, "mask_logsumexp", "out", out, 1);
  detail::dispatch(ctx, &Backend::mask_logsumexp, alpha, mask, out);
}

void mask_rescale(Context& ctx, Tensor& alpha, const Tensor& mask, const Tensor& lse_old) {
  OpRange op_range(ctx, "mask_rescale");
  check_tensor(ctx, "mask_rescale", "alpha", alpha);
  check_ndim("mask_rescale", "alpha", alpha, 1);
  check_vector(ctx, "mask_rescale", "mask", mask, alpha.numel());
  check_vector(ctx, "mask_rescale", "lse_old", lse_old, 1);
  detail::dispatch(ctx, &Backend::mask_rescale, alpha, mask, lse_old);
}

void sgd_step(Context& ctx, const std::vector<OptimSlot>& slots, const SgdParams& p,
              const Tensor* grad_scale, const Tensor* hyper) {
  OpRange op_range(ctx, "sgd_step");
  const char* op = "sgd_step";
  CUDARTS_CHECK(p.lr >= 0.0f && p.momentum >= 0.0f && p.weight_decay >= 0.0f, op, ": lr ", p.lr,
                ", momentum ", p.momentum, " and weight_decay ", p.weight_decay, " must be >= 0");
  CUDARTS_CHECK(!p.nesterov || p.momentum > 0.0f, op, ": Nesterov needs momentum > 0");
  check_slots(ctx, op, slots, p.momentum > 0.0f, false);
  check_scale(ctx, op, grad_scale);
  if (hyper) {
    check_tensor(ctx, op, "hyper", *hyper);
    CUDARTS_CHECK(hyper->numel() >= 1, op, ": 'hyper' is ", hyper->describe(),
                  ", expected at least one element (the learning rate)");
  }
  op_range.set_cost([&] {
    OpCost c = detail::operand_cost(slots);
    c.launches = multi_tensor_launches(slots.size());
    return c;
  });
  detail::dispatch(ctx, &Backend::sgd_step, slots, p, grad_scale, hyper);
}

std::array<float, 3> adam_hyper(const AdamParams& p) {
  return {p.lr, 1.0f - float(std::pow(double(p.beta1), double(p.step))),
          1.0f - float(std::pow(double(p.beta2), double(p.step)))};
}

void adam_step(Context& ctx, const std::vector<OptimSlot>& slots, const AdamParams& p,
               const Tensor* grad_scale, const Tensor* hyper) {
  OpRange op_range(ctx, "adam_step");
  const char* op = "adam_step";
  CUDARTS_CHECK(p.lr >= 0.0f && p.eps > 0.0f && p.weight_decay >= 0.0f, op, ": lr ", p.lr, ", eps ",
                p.eps, " and weight_decay ", p.weight_decay, " must be >= 0 (eps > 0)");
  CUDARTS_CHECK(p.beta1 >= 0.0f && p.beta1 < 1.0f && p.beta2 >= 0.0f && p.beta2 < 1.0f, op,
                ": betas (", p.beta1, ", ", p.beta2, ") must be in [0, 1)");
  CUDARTS_CHECK(p.step >= 1, op, ": step ", p.step, " must be >= 1");
  check_slots(ctx, op, slots, true, true);
  check_scale(ctx, op, grad_scale);
  if (hyper) {
    check_tensor(ctx, op, "hyper", *hyper);
    CUDARTS_CHECK(hyper->numel() >= 3, op, ": 'hyper' is ", hyper->describe(),
                  ", expected 3 elements (lr, 1 - beta1^step, 1 - beta2^step)");
  }
  op_range.set_cost([&] {
    OpCost c = detail::operand_cost(slots);
    c.launches = multi_tensor_launches(slots.size());
    return c;
  });
  detail::dispatch(ctx, &Backend::adam_step, slots, p, grad_scale, hyper);
}

void global_norm(Context& ctx, const std::vector<const Tensor*>& xs, Tensor& out) {
  OpRange op_range(ctx, "global_norm");
  for (const Tensor* t : xs) {
    CUDARTS_CHECK(t != nullptr, "global_norm: null tensor in the list");
    check_tensor(ctx, "global_norm", "xs[i]", *t);
  }
  check_vector(ctx, "global_norm", "out", out, 1);
  op_range.set_cost([&] {  // per-chunk partial sums of squares, then their sum
    OpCost c = detail::operand_cost(xs);
    c.launches = multi_tensor_launches(xs.size()) + 1;
    c.bytes_written = bytes(out);
    return c;
  });
  detail::dispatch(ctx, &Backend::global_norm, xs, out);
}

void clip_coefficient(Context& ctx, const Tensor& norm, float max_norm, Tensor& coef) {
  OpRange op_range(ctx, "clip_coefficient");
  check_vector(ctx, "clip_coefficient", "norm", norm, 1);
  check_vector(ctx, "clip_coefficient", "coef", coef, 1);
  CUDARTS_CHECK(max_norm > 0.0f, "clip_coefficient: max_norm ", max_norm, " must be > 0");
  detail::dispatch(ctx, &Backend::clip_coefficient, norm, max_norm, coef);
}

void count_nonfinite(Context& ctx, const std::vector<const Tensor*>& values, Tensor& state) {
  OpRange op_range(ctx, "count_nonfinite");
  CUDARTS_CHECK(!values.empty() && values.size() <= 8, "count_nonfinite: ", values.size(),
                " values, expected 1 to 8");
  for (const Tensor* v : values) {
    CUDARTS_CHECK(v != nullptr, "count_nonfinite: null value in the list");
    check_tensor(ctx, "count_nonfinite", "values[i]", *v);
    CUDARTS_CHECK(v->numel() >= 1, "count_nonfinite: value ", v->describe(), " is empty");
  }
  check_vector(ctx, "count_nonfinite", "state", state, 4, DType::I32);
  detail::dispatch(ctx, &Backend::count_nonfinite, values, state);
}

void metrics_add(Context& ctx, const Tensor& loss, const Tensor& hits, float batch, Tensor& sums) {
  OpRange op_range(ctx, "metrics_add");
  check_vector(ctx, "metrics_add", "loss", loss, 1);
  check_vector(ctx, "metrics_add", "hits", hits, 1);
  check_vector(ctx, "metrics_add", "sums", sums, 4);
  CUDARTS_CHECK(std::isfinite(batch) && batch >= 0.0f, "metrics_add: batch ", batch,
                " must be finite and >= 0");
  detail::dispatch(ctx, &Backend::metrics_add, loss, hits, batch, sums);
}

}  // namespace cudarts::ops
