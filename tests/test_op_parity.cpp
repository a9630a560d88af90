// One registry of op cases, run on every backend and compared with the CPU reference.
// Inputs are random (never zeros); "=" outputs start poisoned (NaN) so an unwritten element
// fails, "+=" outputs start random; every output is followed by sentinel values that must
// survive. Checks: NaN/Inf first, then the normalised error ||out - ref|| / ||ref||.
// CPU cases check sentinels, finiteness and run-to-run bitwise determinism; CUDA cases
// skip visibly without a GPU.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <tuple>

#include "test_util.h"

namespace cudarts {
namespace {

constexpr int64_t kSentinelCount = 64;
constexpr float kSentinel = 12345.678f;
constexpr double kElementwiseTol = 1e-5;  // strict FP32
constexpr double kGemmTol = 1e-4;         // convolutions and GEMM, strict FP32

// NonFinite: element i of the tensor made with seed s is {1.5, +inf, -inf, 2.5}[(i + s) % 4].
// Mask: element i of seed s is 0 when (i * 7 + s) % 3 == 0, else 1 (f32).
enum class Init { Normal, Positive, Distinct, Labels, Permutation, Poison, NonFinite, Mask };

struct TensorSpec {
  Shape shape;
  Init init = Init::Normal;
  int label_range = 0;  // Init::Labels: values in [0, label_range)
  DType dtype() const {
    return init == Init::Labels || init == Init::Permutation ? DType::I32 : DType::F32;
  }
};

struct OpCase {
  std::string name;
  double tol;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;  // Init::Poison for "=", anything else for "+=" / in-out
  std::function<void(Context&, std::vector<Tensor>& in, std::vector<Tensor>& out)> run;
};

// Host values of a spec, the same for every backend.
std::vector<float> host_values(const TensorSpec& s, uint32_t seed) {
  const size_t n = size_t(s.shape.numel());
  switch (s.init) {
    case Init::Normal:
      return test::random_vector(n, seed);
    case Init::Positive: {
      auto v = test::random_vector(n, seed);
      for (auto& x : v) x = 0.5f + std::abs(x);
      return v;
    }
    case Init::Distinct:
      return test::distinct_vector(n, seed, 0.01f);
    case Init::Labels: {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = float((i * 7 + seed) % size_t(s.label_range));
      return v;
    }
    case Init::Permutation: {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = float(i);
      std::mt19937 gen(seed);
      std::shuffle(v.begin(), v.end(), gen);
      return v;
    }
    case Init::Poison:
      return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
    case Init::Mask: {
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = (i * 7 + seed) % 3 == 0 ? 0.0f : 1.0f;
      return v;
    }
    case Init::NonFinite: {
      const float inf = std::numeric_limits<float>::infinity();
      const float pattern[4] = {1.5f, inf, -inf, 2.5f};
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = pattern[(i + seed) % 4];
      return v;
    }
  }
  return {};
}

// A tensor followed by kSentinelCount sentinel elements in the same allocation.
struct Guarded {
  Tensor whole;
  Tensor view;
};

Guarded make_guarded(Context& ctx, const TensorSpec& s, uint32_t seed) {
  const int64_t n = s.shape.numel();
  std::vector<float> v = host_values(s, seed);
  Guarded g;
  if (s.dtype() == DType::I32) {
    std::vector<int32_t> iv(v.begin(), v.end());
    iv.resize(size_t(n + kSentinelCount), 0x5eed);
    g.whole = Tensor::from_vector_i32(ctx, Shape{n + kSentinelCount}, iv);
  } else {
    v.resize(size_t(n + kSentinelCount), kSentinel);
    g.whole = Tensor::from_vector(ctx, Shape{n + kSentinelCount}, v);
  }
  g.view = g.whole.slice(0, n).reshape(s.shape);
  return g;
}

std::vector<float> values_of(const Tensor& t) {
  if (t.dtype() == DType::F32) return t.to_vector();
  auto iv = t.to_vector_i32();
  return std::vector<float>(iv.begin(), iv.end());
}

struct RunResult {
  std::vector<std::vector<float>> outputs;
  std::vector<std::string> sentinel_errors;
};

RunResult run_case(Context& ctx, const OpCase& c) {
  std::vector<Guarded> in_g, out_g;
  std::vector<Tensor> in, out;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    in_g.push_back(make_guarded(ctx, c.inputs[i], uint32_t(100 + i)));
    in.push_back(in_g.back().view.share());
  }
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    out_g.push_back(make_guarded(ctx, c.outputs[i], uint32_t(200 + i)));
    out.push_back(out_g.back().view.share());
  }
  c.run(ctx, in, out);
  ctx.synchronize();
  RunResult r;
  for (size_t i = 0; i < out_g.size(); ++i) {
    const auto all = values_of(out_g[i].whole);
    const int64_t n = c.outputs[i].shape.numel();
    r.outputs.emplace_back(all.begin(), all.begin() + n);
    for (int64_t k = n; k < n + kSentinelCount; ++k) {
      const float want = c.outputs[i].dtype() == DType::I32 ? float(0x5eed) : kSentinel;
      if (all[size_t(k)] != want) {
        r.sentinel_errors.push_back(
            detail::cat("output ", i, " wrote past its end at element ", k));
        break;
      }
    }
  }
  for (size_t i = 0; i < in_g.size(); ++i) {  // inputs must not be written at all
    if (values_of(in_g[i].whole) != [&] {
          auto v = host_values(c.inputs[i], uint32_t(100 + i));
          if (c.inputs[i].dtype() == DType::I32)
            v.resize(v.size() + kSentinelCount, float(0x5eed));
          else
            v.resize(v.size() + kSentinelCount, kSentinel);
          return v;
        }())
      r.sentinel_errors.push_back(detail::cat("input ", i, " was modified"));
  }
  return r;
}

// ------------------------------------------------------------------ the registry
std::vector<OpCase> all_cases() {
  std::vector<OpCase> cases;
  auto spec = [](Shape s, Init i = Init::Normal) { return TensorSpec{s, i, 0}; };
  auto poison = [](Shape s) { return TensorSpec{s, Init::Poison, 0}; };

  struct Conv {
    const char* tag;
    Shape x;
    int64_t k, r;
    Conv2dParams p;
    bool bias = true;  // conv2d_fwd with bias, conv2d_bwd_filter with dbias
  };
  // Depthwise (tags with "dw"): on CUDA the own kernels (cuda/depthwise.cu) unless the context
  // turns them off. The DARTS operations (sep_conv 3x3 / 5x5: pad 1 / 2; dil_conv 3x3 / 5x5:
  // pad 2 / 4, dilation 2) at stride 1 and 2, C = 16, 36, 64, 256, maps 4x4 .. 32x32, odd and
  // non-square maps, with and without bias.
  auto dw = [](int64_t c, int stride, int pad, int dil) {
    return Conv2dParams::make(stride, pad, dil, int(c));
  };
  const std::vector<Conv> convs = {
      {"3x3_s1_p1", {2, 8, 10, 10}, 16, 3, Conv2dParams::make(1, 1)},
      {"3x3_s2_p1", {3, 6, 9, 11}, 8, 3, Conv2dParams::make(2, 1)},
      {"5x5_dil2_p4_dw", {2, 12, 12, 12}, 12, 5, Conv2dParams::make(1, 4, 2, 12)},
      {"3x3_g4", {2, 8, 8, 8}, 12, 3, Conv2dParams::make(1, 1, 1, 4)},
      {"1x1", {4, 16, 8, 8}, 24, 1, Conv2dParams::make(1, 0)},
      {"1x1_s2", {2, 16, 8, 8}, 8, 1, Conv2dParams::make(2, 0)},
      {"3x3_dw_s2", {2, 16, 16, 16}, 16, 3, Conv2dParams::make(2, 1, 1, 16)},
      {"dw3x3_c16_32x32", {2, 16, 32, 32}, 16, 3, dw(16, 1, 1, 1)},
      {"dw5x5_c16_32x32_nobias", {2, 16, 32, 32}, 16, 5, dw(16, 1, 2, 1), false},
      {"dw3x3_dil2_s2_c16_32x32", {2, 16, 32, 32}, 16, 3, dw(16, 2, 2, 2)},
      {"dw3x3_dil2_c36_16x16_nobias", {2, 36, 16, 16}, 36, 3, dw(36, 1, 2, 2), false},
      {"dw5x5_s2_c36_16x16", {2, 36, 16, 16}, 36, 5, dw(36, 2, 2, 1)},
      {"dw5x5_dil2_c64_8x8", {2, 64, 8, 8}, 64, 5, dw(64, 1, 4, 2)},
      {"dw3x3_s2_c64_8x8_nobias", {2, 64, 8, 8}, 64, 3, dw(64, 2, 1, 1), false},
      {"dw5x5_s2_dil2_c64_16x16", {2, 64, 16, 16}, 64, 5, dw(64, 2, 4, 2)},
      {"dw3x3_c36_7x7", {2, 36, 7, 7}, 36, 3, dw(36, 1, 1, 1)},
      {"dw5x5_s2_c36_7x7_nobias", {2, 36, 7, 7}, 36, 5, dw(36, 2, 2, 1), false},
      {"dw3x3_c256_4x4", {2, 256, 4, 4}, 256, 3, dw(256, 1, 1, 1)},
      {"dw5x5_dil2_c256_4x4_nobias", {2, 256, 4, 4}, 256, 5, dw(256, 1, 4, 2), false},
      {"dw3x3_s2_c16_12x20", {2, 16, 12, 20}, 16, 3, dw(16, 2, 1, 1)},
      {"dw5x5_dil2_c16_20x12_nobias", {2, 16, 20, 12}, 16, 5, dw(16, 1, 4, 2), false},
      // Pointwise (tags with "pw"): on CUDA the own kernels (cuda/pointwise.cu) unless the
      // context turns them off; with a bias the forward only. The DARTS ones (the cells'
      // preprocessing 4C -> C, the separable convolutions' C -> C, FactorizedReduce's stride-2
      // halves), more than one 128-channel weight stage, output channels not a multiple of 16,
      // planes over one block's 1024 pixels, odd stride-2 maps (dx zero off the grid), filter
      // gradients with one chunk and with several.
      {"pw_c64to16_32x32_nobias", {2, 64, 32, 32}, 16, 1, Conv2dParams::make(1, 0), false},
      {"pw_c16_32x32_nobias", {3, 16, 32, 32}, 16, 1, Conv2dParams::make(1, 0), false},
      {"pw_s2_c16to8_32x32_nobias", {2, 16, 32, 32}, 8, 1, Conv2dParams::make(2, 0), false},
      {"pw_s2_c12to20_9x11_nobias", {2, 12, 9, 11}, 20, 1, Conv2dParams::make(2, 0), false},
      {"pw_c200to20_7x7_nobias", {3, 200, 7, 7}, 20, 1, Conv2dParams::make(1, 0), false},
      {"pw_c3to40_40x40", {2, 3, 40, 40}, 40, 1, Conv2dParams::make(1, 0)},
      {"pw_c256_4x4_nobias", {2, 256, 4, 4}, 256, 1, Conv2dParams::make(1, 0), false},
      // Batch 64 (the search network's): the packed map kernel at 16 output channels per thread
      // (C16 32x32: 256 pixel blocks) and at 8 (C32 16x16: 64 x 4 blocks); the small batches
      // above take 4 (pointwise::map_outputs).
      {"pw_n64_c16_32x32_nobias", {64, 16, 32, 32}, 16, 1, Conv2dParams::make(1, 0), false},
      {"pw_n64_c32_16x16_nobias", {64, 32, 16, 16}, 32, 1, Conv2dParams::make(1, 0), false},
  };
  // The three directions of one convolution; with relu the ReLU is fused (relu_input) and
  // backward data reads the forward input as its mask.
  auto add_conv = [&](const Conv& cv, bool relu) {
    const Shape w{cv.k, cv.x[1] / cv.p.groups, cv.r, cv.r};
    const Shape y = ops::conv2d_output_shape(cv.x, w, cv.p);
    Conv2dParams p = cv.p;
    p.relu_input = relu;
    const bool bias = cv.bias;
    const std::string tag = std::string(cv.tag) + (relu ? "+relu" : "");
    cases.push_back({"conv2d_fwd/" + tag,
                     kGemmTol,
                     {spec(cv.x), spec(w), spec(Shape{cv.k})},
                     {poison(y)},
                     [p, bias](Context& ctx, auto& in, auto& out) {
                       ops::conv2d_fwd(ctx, in[0], in[1], bias ? &in[2] : nullptr, out[0], p);
                     }});
    std::vector<TensorSpec> data_in{spec(y), spec(w)};
    if (relu) data_in.push_back(spec(cv.x));
    cases.push_back({"conv2d_bwd_data/" + tag,
                     kGemmTol,
                     data_in,
                     {poison(cv.x)},
                     [p, relu](Context& ctx, auto& in, auto& out) {
                       ops::conv2d_bwd_data(ctx, in[0], in[1], out[0], p, relu ? &in[2] : nullptr);
                     }});
    cases.push_back({"conv2d_bwd_filter/" + tag,
                     kGemmTol,
                     {spec(cv.x), spec(y)},
                     {spec(w), spec(Shape{cv.k})},
                     [p, bias](Context& ctx, auto& in, auto& out) {
                       ops::conv2d_bwd_filter(ctx, in[0], in[1], out[0], bias ? &out[1] : nullptr,
                                              p);
                     }});
  };
  for (const Conv& cv : convs) add_conv(cv, false);
  // A fused ReLU (relu_input; the DARTS sep/dil convolutions): the own depthwise kernels apply
  // it while loading and masking, cuDNN (dense, pointwise) through a scratch pass.
  const std::set<std::string> relu_tags = {"3x3_s1_p1",
                                           "1x1",
                                           "dw3x3_c16_32x32",
                                           "dw5x5_c16_32x32_nobias",
                                           "dw3x3_dil2_s2_c16_32x32",
                                           "dw5x5_dil2_c64_8x8",
                                           "dw3x3_s2_c64_8x8_nobias",
                                           "dw3x3_c256_4x4",
                                           "pw_c64to16_32x32_nobias",
                                           "pw_s2_c16to8_32x32_nobias",
                                           "pw_s2_c12to20_9x11_nobias",
                                           "pw_c200to20_7x7_nobias"};
  for (const Conv& cv : convs)
    if (relu_tags.count(cv.tag)) add_conv(cv, true);

  // Depthwise groups (an edge's leading convolutions): the DARTS four (3x3 and 5x5, dilation 1
  // and 2, "same" padding) at stride 1 and 2 with the fused ReLU, two without it; backward data
  // with 0 to 3 prior gradients summed first.
  struct Member {
    int r, pad, dil;
  };
  struct Group {
    const char* tag;
    Shape x;
    int stride;
    bool relu;
    std::vector<Member> members;
    int priors;
  };
  const std::vector<Member> darts_four{{3, 1, 1}, {5, 2, 1}, {3, 2, 2}, {5, 4, 2}};
  const std::vector<Group> groups = {
      {"darts_s1_c16_32x32", {2, 16, 32, 32}, 1, true, darts_four, 3},
      {"darts_s2_c36_16x16", {2, 36, 16, 16}, 2, true, darts_four, 0},
      {"darts_s1_c64_8x8", {2, 64, 8, 8}, 1, true, darts_four, 1},
      {"two_c16_12x20", {2, 16, 12, 20}, 1, false, {{3, 1, 1}, {5, 4, 2}}, 2},
      {"one_c256_4x4", {2, 256, 4, 4}, 1, false, {{5, 2, 1}}, 1},
  };
  for (const Group& gr : groups) {
    const int64_t c = gr.x[1];
    std::vector<Shape> ws, ys;
    std::vector<Conv2dParams> ps;
    for (const Member& m : gr.members) {
      Conv2dParams p = Conv2dParams::make(gr.stride, m.pad, m.dil, int(c));
      p.relu_input = gr.relu;
      ws.push_back(Shape{c, 1, m.r, m.r});
      ys.push_back(ops::conv2d_output_shape(gr.x, ws.back(), p));
      ps.push_back(p);
    }
    const std::string tag = std::string(gr.tag) + (gr.relu ? "+relu" : "");
    const size_t j = ws.size();
    std::vector<TensorSpec> fwd_in{spec(gr.x)}, fwd_out;
    for (size_t i = 0; i < j; ++i) fwd_in.push_back(spec(ws[i])), fwd_out.push_back(poison(ys[i]));
    cases.push_back({"depthwise_group_fwd/" + tag, kGemmTol, fwd_in, fwd_out,
                     [ps, j](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> w;
                       std::vector<Tensor*> y;
                       for (size_t i = 0; i < j; ++i) w.push_back(&in[1 + i]), y.push_back(&out[i]);
                       ops::depthwise_group_fwd(ctx, in[0], w, ps, y);
                     }});
    // Inputs: dys, ws, priors, then x (the mask) with the ReLU.
    std::vector<TensorSpec> bwd_in;
    for (size_t i = 0; i < j; ++i) bwd_in.push_back(spec(ys[i]));
    for (size_t i = 0; i < j; ++i) bwd_in.push_back(spec(ws[i]));
    for (int i = 0; i < gr.priors; ++i) bwd_in.push_back(spec(gr.x));
    if (gr.relu) bwd_in.push_back(spec(gr.x));
    const int priors = gr.priors;
    const bool relu = gr.relu;
    cases.push_back({"depthwise_group_bwd_data/" + tag,
                     kGemmTol,
                     bwd_in,
                     {poison(gr.x)},
                     [ps, j, priors, relu](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> dy, w, pr;
                       for (size_t i = 0; i < j; ++i) dy.push_back(&in[i]), w.push_back(&in[j + i]);
                       for (int i = 0; i < priors; ++i) pr.push_back(&in[2 * j + size_t(i)]);
                       const Tensor* x = relu ? &in[2 * j + size_t(priors)] : nullptr;
                       ops::depthwise_group_bwd_data(ctx, dy, w, ps, x, pr, out[0]);
                     }});
    // Inputs: x, then the dys; the filter gradients accumulate into their initial values.
    std::vector<TensorSpec> filt_in{spec(gr.x)}, filt_out;
    for (size_t i = 0; i < j; ++i) filt_in.push_back(spec(ys[i])), filt_out.push_back(spec(ws[i]));
    cases.push_back({"depthwise_group_bwd_filter/" + tag, kGemmTol, filt_in, filt_out,
                     [ps, j](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> dy;
                       std::vector<Tensor*> dw;
                       for (size_t i = 0; i < j; ++i)
                         dy.push_back(&in[1 + i]), dw.push_back(&out[i]);
                       ops::depthwise_group_bwd_filter(ctx, in[0], dy, ps, dw);
                     }});
  }

  for (Shape x : {Shape{4, 8, 6, 6}, Shape{2, 16, 9, 7}, Shape{64, 3, 1, 1}}) {
    const Shape c{x[1]};
    const std::string tag = x.str();
    cases.push_back({"batchnorm_fwd_train/affine" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(c), spec(c)},
                     {poison(x), poison(c), poison(c), spec(c), spec(c, Init::Positive)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_fwd_train(ctx, in[0], &in[1], &in[2], &out[3], &out[4],
                                                out[0], out[1], out[2],
                                                BatchNormParams{0.1f, 1e-5f});
                     }});
    cases.push_back({"batchnorm_fwd_train/plain" + tag,
                     kElementwiseTol * 10,
                     {spec(x)},
                     {poison(x), poison(c), poison(c)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_fwd_train(ctx, in[0], nullptr, nullptr, nullptr, nullptr,
                                                out[0], out[1], out[2], BatchNormParams{});
                     }});
    cases.push_back({"batchnorm_fwd_infer" + tag,
                     kElementwiseTol,
                     {spec(x), spec(c), spec(c), spec(c), spec(c, Init::Positive)},
                     {poison(x)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_fwd_infer(ctx, in[0], &in[1], &in[2], in[3], in[4], out[0],
                                                1e-5f);
                     }});
    cases.push_back({"batchnorm_bwd" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(x), spec(c), spec(c), spec(c, Init::Positive)},
                     {poison(x), spec(c), spec(c)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_bwd(ctx, in[0], in[1], &in[2], in[3], in[4], out[0], &out[1],
                                          &out[2]);
                     }});
  }
  // Affine-free BatchNorm (the search network's; on CUDA the own kernels unless the context
  // turns them off): with running statistics, and the backward; 8 x 32 x 32 values per channel
  // take two partial-sum blocks.
  for (Shape x :
       {Shape{4, 8, 6, 6}, Shape{2, 16, 9, 7}, Shape{64, 3, 1, 1}, Shape{8, 16, 32, 32}}) {
    const Shape c{x[1]};
    const std::string tag = x.str();
    cases.push_back({"batchnorm_fwd_train/plain_running" + tag,
                     kElementwiseTol * 10,
                     {spec(x)},
                     {poison(x), poison(c), poison(c), spec(c), spec(c, Init::Positive)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_fwd_train(ctx, in[0], nullptr, nullptr, &out[3], &out[4],
                                                out[0], out[1], out[2],
                                                BatchNormParams{0.1f, 1e-5f});
                     }});
    cases.push_back({"batchnorm_bwd/plain" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(x), spec(c), spec(c, Init::Positive)},
                     {poison(x)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_bwd(ctx, in[0], in[1], nullptr, in[2], in[3], out[0], nullptr,
                                          nullptr);
                     }});
  }

  // Synchronised BatchNorm's per-rank pieces (counts as if 3 ranks had contributed).
  for (Shape x : {Shape{4, 8, 6, 6}, Shape{2, 16, 9, 7}, Shape{64, 3, 1, 1}}) {
    const Shape c{x[1]}, two{2, x[1]};
    const std::string tag = x.str();
    const double count = 3.0 * double(x[0] * x[2] * x[3]);
    cases.push_back({"batchnorm_moments" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(c)},
                     {poison(two)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_moments(ctx, in[0], in[1], out[0]);
                     }});
    cases.push_back({"batchnorm_moments_finish" + tag,
                     kElementwiseTol * 10,
                     {spec(two, Init::Positive), spec(c)},
                     {poison(c), poison(c), poison(c), spec(c), spec(c, Init::Positive)},
                     [count](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_moments_finish(ctx, in[0], in[1], count, out[0], out[1],
                                                     out[2], &out[3], &out[4],
                                                     BatchNormParams{0.1f, 1e-5f});
                     }});
    cases.push_back({"batchnorm_bwd_sums" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(x), spec(c), spec(c, Init::Positive)},
                     {poison(two)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_bwd_sums(ctx, in[0], in[1], in[2], in[3], out[0]);
                     }});
    cases.push_back({"batchnorm_bwd_apply" + tag,
                     kElementwiseTol * 10,
                     {spec(x), spec(x), spec(c), spec(c), spec(c, Init::Positive), spec(two)},
                     {poison(x)},
                     [count](Context& ctx, auto& in, auto& out) {
                       ops::batchnorm_bwd_apply(ctx, in[0], in[1], &in[2], in[3], in[4], in[5],
                                                count, out[0]);
                     }});
  }

  for (Shape x : {Shape{7}, Shape{3, 5, 7, 9}, Shape{1 << 18}}) {
    const std::string tag = x.str();
    cases.push_back({"relu_fwd" + tag,
                     kElementwiseTol,
                     {spec(x)},
                     {poison(x)},
                     [](Context& ctx, auto& in, auto& out) { ops::relu_fwd(ctx, in[0], out[0]); }});
    cases.push_back(
        {"relu_bwd" + tag,
         kElementwiseTol,
         {spec(x), spec(x)},
         {poison(x)},
         [](Context& ctx, auto& in, auto& out) { ops::relu_bwd(ctx, in[0], in[1], out[0]); }});
    cases.push_back(
        {"add" + tag,
         kElementwiseTol,
         {spec(x), spec(x)},
         {poison(x)},
         [](Context& ctx, auto& in, auto& out) { ops::add(ctx, in[0], in[1], out[0]); }});
    cases.push_back(
        {"scale" + tag,
         kElementwiseTol,
         {spec(x)},
         {poison(x)},
         [](Context& ctx, auto& in, auto& out) { ops::scale(ctx, in[0], -0.75f, out[0]); }});
    cases.push_back(
        {"axpy" + tag,
         kElementwiseTol,
         {spec(x)},
         {spec(x)},
         [](Context& ctx, auto& in, auto& out) { ops::axpy(ctx, 1.5f, in[0], out[0]); }});
    for (int terms : {1, 3, 70}) {  // 70: past the CUDA kernel's 64 pointers, a second launch
      cases.push_back({detail::cat("add_n[", terms, "]", tag),
                       kElementwiseTol,
                       std::vector<TensorSpec>(size_t(terms), spec(x)),
                       {poison(x)},
                       [](Context& ctx, auto& in, auto& out) {
                         std::vector<const Tensor*> ps;
                         for (auto& t : in) ps.push_back(&t);
                         ops::add_n(ctx, ps, out[0]);
                       }});
    }
    cases.push_back({"fill" + tag, 0.0, {}, {poison(x)}, [](Context& ctx, auto&, auto& out) {
                       ops::fill(ctx, out[0], 0.375f);
                     }});
    cases.push_back(
        {"copy" + tag, 0.0, {spec(x)}, {poison(x)}, [](Context& ctx, auto& in, auto& out) {
           ops::copy(ctx, in[0], out[0]);
         }});
    cases.push_back(
        {"random_words" + tag,
         0.0,
         {},
         {TensorSpec{x, Init::Labels, 1}},
         [](Context& ctx, auto&, auto& out) { ops::random_words(ctx, out[0], 77, 3); }});
    cases.push_back(
        {"random_uniform" + tag, 0.0, {}, {poison(x)}, [](Context& ctx, auto&, auto& out) {
           ops::random_uniform(ctx, out[0], 77, 3, -1.0f, 2.0f);
         }});
  }

  struct Pool {
    const char* tag;
    Shape x;
    Pool2dParams p;
  };
  const std::vector<Pool> pools = {
      {"max3_s1_p1", {2, 4, 8, 8}, Pool2dParams::make(PoolMode::Max, 3, 1, 1)},
      {"max3_s2_p1", {2, 3, 9, 7}, Pool2dParams::make(PoolMode::Max, 3, 2, 1)},
      {"max2_s2", {3, 5, 8, 6}, Pool2dParams::make(PoolMode::Max, 2, 2, 0)},
      {"avg3_s1_p1", {2, 4, 8, 8}, Pool2dParams::make(PoolMode::Average, 3, 1, 1)},
      {"avg3_s2_p1", {2, 3, 9, 7}, Pool2dParams::make(PoolMode::Average, 3, 2, 1)},
      {"avg2_s2", {3, 5, 8, 6}, Pool2dParams::make(PoolMode::Average, 2, 2, 0)},
      // The search network's (own kernels on CUDA: cuda/pool.cu): C = 16 at 32x32, stride 2
      // into 16x16, odd maps.
      {"max3_s1_p1_c16_32x32", {2, 16, 32, 32}, Pool2dParams::make(PoolMode::Max, 3, 1, 1)},
      {"avg3_s1_p1_c16_32x32", {2, 16, 32, 32}, Pool2dParams::make(PoolMode::Average, 3, 1, 1)},
      {"max3_s2_p1_c32_32x32", {2, 32, 32, 32}, Pool2dParams::make(PoolMode::Max, 3, 2, 1)},
      {"avg3_s2_p1_c32_15x17", {2, 32, 15, 17}, Pool2dParams::make(PoolMode::Average, 3, 2, 1)},
  };
  for (const Pool& pl : pools) {
    const Shape y = ops::pool2d_output_shape(pl.x, pl.p);
    const Pool2dParams p = pl.p;
    cases.push_back(
        {std::string("pool2d_fwd/") + pl.tag,
         kElementwiseTol,
         {spec(pl.x, Init::Distinct)},
         {poison(y)},
         [p](Context& ctx, auto& in, auto& out) { ops::pool2d_fwd(ctx, in[0], out[0], p); }});
    cases.push_back({std::string("pool2d_bwd/") + pl.tag,
                     kElementwiseTol,
                     {spec(pl.x, Init::Distinct), spec(y)},
                     {poison(pl.x)},
                     [p, y](Context& ctx, auto& in, auto& out) {
                       Tensor fwd = Tensor::empty(ctx, y);
                       ops::pool2d_fwd(ctx, in[0], fwd, p);
                       ops::pool2d_bwd(ctx, in[0], fwd, in[1], out[0], p);
                     }});
  }

  for (Shape x : {Shape{2, 3, 4, 5}, Shape{8, 64, 8, 8}, Shape{1, 7, 1, 1}}) {
    const Shape y{x[0], x[1]};
    cases.push_back(
        {"global_avgpool_fwd" + x.str(),
         kElementwiseTol,
         {spec(x)},
         {poison(y)},
         [](Context& ctx, auto& in, auto& out) { ops::global_avgpool_fwd(ctx, in[0], out[0]); }});
    cases.push_back(
        {"global_avgpool_bwd" + x.str(),
         kElementwiseTol,
         {spec(y)},
         {poison(x)},
         [](Context& ctx, auto& in, auto& out) { ops::global_avgpool_bwd(ctx, in[0], out[0]); }});
  }

  for (auto [n, i, o] : std::vector<std::array<int64_t, 3>>{{5, 7, 3}, {64, 256, 10}, {1, 1, 1}}) {
    const std::string tag = detail::cat("[", n, "x", i, "->", o, "]");
    cases.push_back({"linear_fwd" + tag,
                     kGemmTol,
                     {spec({n, i}), spec({o, i}), spec({o})},
                     {poison({n, o})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::linear_fwd(ctx, in[0], in[1], &in[2], out[0]);
                     }});
    cases.push_back({"linear_bwd_data" + tag,
                     kGemmTol,
                     {spec({n, o}), spec({o, i})},
                     {poison({n, i})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::linear_bwd_data(ctx, in[0], in[1], out[0]);
                     }});
    cases.push_back({"linear_bwd_weight" + tag,
                     kGemmTol,
                     {spec({n, i}), spec({n, o})},
                     {spec({o, i}), spec({o})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::linear_bwd_weight(ctx, in[0], in[1], out[0], &out[1]);
                     }});
  }

  for (auto parts : std::vector<std::vector<int64_t>>{{1, 3}, {4, 4, 4, 4}, {16, 2, 7}}) {
    int64_t total = 0;
    std::vector<TensorSpec> ins, outs;
    for (int64_t c : parts) {
      total += c;
      ins.push_back(spec({3, c, 5, 4}));
      outs.push_back(poison({3, c, 5, 4}));
    }
    const std::string tag = detail::cat("[", parts.size(), " parts, ", total, " channels]");
    cases.push_back({"concat_channels" + tag,
                     0.0,
                     ins,
                     {poison({3, total, 5, 4})},
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> ps;
                       for (auto& t : in) ps.push_back(&t);
                       ops::concat_channels(ctx, ps, out[0]);
                     }});
    cases.push_back({"split_channels" + tag,
                     0.0,
                     {spec({3, total, 5, 4})},
                     outs,
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<Tensor*> ps;
                       for (auto& t : out) ps.push_back(&t);
                       ops::split_channels(ctx, in[0], ps);
                     }});
  }

  for (auto [n, k] : std::vector<std::array<int64_t, 2>>{{4, 10}, {64, 10}, {3, 1000}}) {
    const std::string tag = detail::cat("[", n, "x", k, "]");
    cases.push_back({"softmax_xent" + tag,
                     kElementwiseTol * 10,
                     {spec({n, k}), TensorSpec{{n}, Init::Labels, int(k)}},
                     {poison({1}), poison({n, k}), poison({1})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::softmax_xent(ctx, in[0], in[1], out[0], out[1], out[2]);
                     }});
  }

  for (bool nesterov : {false, true}) {
    for (auto shapes : std::vector<std::vector<Shape>>{{{7}}, {{3, 3}, {16, 4, 3, 3}, {1}}}) {
      std::vector<TensorSpec> ins, outs;
      for (auto& s : shapes) {
        ins.push_back(spec(s));   // gradient
        outs.push_back(spec(s));  // parameter (in/out)
        outs.push_back(spec(s));  // momentum buffer (in/out)
      }
      const std::string tag =
          detail::cat(nesterov ? "[nesterov, " : "[", shapes.size(), " tensors]");
      cases.push_back({"sgd_step" + tag, kElementwiseTol, ins, outs,
                       [nesterov](Context& ctx, auto& in, auto& out) {
                         std::vector<OptimSlot> slots;
                         for (size_t i = 0; i < in.size(); ++i)
                           slots.push_back({&out[2 * i], &in[i], &out[2 * i + 1], nullptr});
                         ops::sgd_step(ctx, slots, SgdParams{0.05f, 0.9f, 3e-4f, nesterov});
                       }});
    }
  }
  // ---- MixedOp kernels
  const auto perm = [](int64_t k) { return TensorSpec{Shape{k}, Init::Permutation, 0}; };
  // The batched forms: rows of 1, 5 and 8 entries; arch_grad_many's rows 0 and 2, and 1 and 3,
  // share a gradient (added to in row order); 130 rows: two launches; 1 row: the plain op.
  for (int64_t rows : {1, 4, 130}) {
    const std::string tag = detail::cat("[rows=", rows, "]");
    auto len = [](int64_t r) { return std::array<int64_t, 3>{1, 5, 8}[size_t(r % 3)]; };
    std::vector<TensorSpec> sm_in, sm_out, ag_in, ag_out;
    for (int64_t r = 0; r < rows; ++r) {
      sm_in.push_back(spec({len(r)}));
      sm_out.push_back(poison({len(r)}));
    }
    cases.push_back({"softmax_many" + tag, kElementwiseTol, sm_in, sm_out,
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> l;
                       std::vector<Tensor*> p;
                       for (size_t r = 0; r < in.size(); ++r)
                         l.push_back(&in[r]), p.push_back(&out[r]);
                       ops::softmax_many(ctx, l, p);
                     }});
    // Rows r and r + 2 share gradient r % 2 when r < 4; the others have their own. Row lengths
    // follow their gradient.
    auto grad_of = [](int64_t r) { return r < 4 ? r % 2 : r; };
    for (int64_t r = 0; r < rows; ++r) {
      ag_in.push_back(spec({len(grad_of(r))}));
      ag_in.push_back(spec({len(grad_of(r))}));
      if (grad_of(r) == r) ag_out.push_back(spec({len(r)}));
    }
    cases.push_back({"arch_grad_many" + tag, kElementwiseTol, ag_in, ag_out,
                     [grad_of](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> a, g;
                       std::vector<Tensor*> d;
                       std::vector<int64_t> slot;  // output index of each own gradient
                       int64_t next = 0;
                       for (size_t r = 0; r < in.size() / 2; ++r) {
                         a.push_back(&in[2 * r]);
                         g.push_back(&in[2 * r + 1]);
                         const int64_t own = grad_of(int64_t(r));
                         if (own == int64_t(r))
                           slot.push_back(next++);
                         else
                           slot.push_back(slot[size_t(own)]);
                         d.push_back(&out[size_t(slot.back())]);
                       }
                       ops::arch_grad_many(ctx, a, g, d);
                     }});
  }
  for (int64_t k : {1, 5, 8}) {
    const std::string tag = detail::cat("[K=", k, "]");
    cases.push_back({"softmax" + tag,
                     kElementwiseTol,
                     {spec({k})},
                     {poison({k})},
                     [](Context& ctx, auto& in, auto& out) { ops::softmax(ctx, in[0], out[0]); }});
    cases.push_back({"arch_grad" + tag,
                     kElementwiseTol,
                     {spec({k}), spec({k})},
                     {spec({k})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::arch_grad(ctx, in[0], in[1], nullptr, 0, out[0]);
                     }});
    cases.push_back({"arch_grad/restricted" + tag,
                     kElementwiseTol,
                     {spec({k}), spec({k}), perm(k)},
                     {spec({k})},
                     [k](Context& ctx, auto& in, auto& out) {
                       ops::arch_grad(ctx, in[0], in[1], &in[2], int((k + 1) / 2), out[0]);
                     }});
    cases.push_back({"masked_logsumexp" + tag,
                     kElementwiseTol,
                     {spec({k}), perm(k)},
                     {poison({1})},
                     [k](Context& ctx, auto& in, auto& out) {
                       ops::masked_logsumexp(ctx, in[0], in[1], int((k + 1) / 2), out[0]);
                     }});
    cases.push_back({"proxyless_rescale" + tag,
                     kElementwiseTol,
                     {perm(k), spec({1})},
                     {spec({k})},
                     [k](Context& ctx, auto& in, auto& out) {
                       ops::proxyless_rescale(ctx, out[0], in[0], int((k + 1) / 2), in[1]);
                     }});
  }
  for (auto [k, shape] :
       std::vector<std::pair<int, Shape>>{{1, {7}},
                                          {4, {8, 16, 8, 8}},
                                          {8, {3, 5, 7, 9}},
                                          {10, {2, 3, 4, 5}}}) {  // 10: past the fused kernel's 8
    std::vector<TensorSpec> xs(size_t(k), spec(shape));
    const std::string tag = detail::cat("[K=", k, " ", shape.str(), "]");
    std::vector<TensorSpec> mix_in{spec({k})};
    mix_in.insert(mix_in.end(), xs.begin(), xs.end());
    cases.push_back({"mix_fwd" + tag,
                     kElementwiseTol,
                     mix_in,
                     {poison(shape)},
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> ps;
                       for (size_t i = 1; i < in.size(); ++i) ps.push_back(&in[i]);
                       ops::mix_fwd(ctx, in[0], ps, out[0]);
                     }});
    std::vector<TensorSpec> sc_in{spec(shape)};
    sc_in.insert(sc_in.end(), xs.begin(), xs.end());
    cases.push_back(
        {"mix_scores" + tag, kGemmTol, sc_in, {poison({k})}, [](Context& ctx, auto& in, auto& out) {
           std::vector<const Tensor*> ps;
           for (size_t i = 1; i < in.size(); ++i) ps.push_back(&in[i]);
           ops::mix_scores(ctx, in[0], ps, out[0]);
         }});
    // Null entries (Zero candidates): every other one, the first included.
    cases.push_back({"mix_fwd[zeros]" + tag,
                     kElementwiseTol,
                     mix_in,
                     {poison(shape)},
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> ps;
                       for (size_t i = 1; i < in.size(); ++i)
                         ps.push_back(i % 2 == 1 ? nullptr : &in[i]);
                       ops::mix_fwd(ctx, in[0], ps, out[0]);
                     }});
    cases.push_back({"mix_scores[zeros]" + tag,
                     kGemmTol,
                     sc_in,
                     {poison({k})},
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> ps;
                       for (size_t i = 1; i < in.size(); ++i)
                         ps.push_back(i % 2 == 1 ? nullptr : &in[i]);
                       ops::mix_scores(ctx, in[0], ps, out[0]);
                     }});
    // mix_bwd_scores: the first candidate output null (a Zero candidate), K gradients and g.
    std::vector<TensorSpec> fused_in{spec({k}), spec(shape)};
    fused_in.insert(fused_in.end(), xs.begin(), xs.end());
    std::vector<TensorSpec> fused_out(size_t(k), poison(shape));
    fused_out.push_back(poison({k}));
    cases.push_back({"mix_bwd_scores" + tag, kGemmTol, fused_in, fused_out,
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<const Tensor*> xs_in;
                       std::vector<Tensor*> dxs;
                       for (size_t i = 2; i < in.size(); ++i)
                         xs_in.push_back(i == 2 && in.size() > 3 ? nullptr : &in[i]);
                       for (size_t i = 0; i + 1 < out.size(); ++i) dxs.push_back(&out[i]);
                       ops::mix_bwd_scores(ctx, in[0], in[1], xs_in, dxs, out.back());
                     }});
    // mix_bwd: K outputs; with K > 1 the second is null: it starts random and must stay so.
    std::vector<TensorSpec> bwd_out(size_t(k), poison(shape));
    if (k > 1) bwd_out[1] = spec(shape);
    cases.push_back({"mix_bwd" + tag,
                     kElementwiseTol,
                     {spec({k}), spec(shape)},
                     bwd_out,
                     [](Context& ctx, auto& in, auto& out) {
                       std::vector<Tensor*> ps;
                       for (size_t i = 0; i < out.size(); ++i)
                         ps.push_back(i == 1 ? nullptr : &out[i]);
                       ops::mix_bwd(ctx, in[0], in[1], ps);
                     }});
  }
  // The normalised mixes: candidate i is null (a Zero) when i % 4 == 0, plain when i % 4 == 1,
  // else normed (K = 1: normed); 10 candidates run the backward sums in two groups; 32 x 16 x 16
  // values per channel split over two blocks.
  for (auto [k, shape] : std::vector<std::pair<int, Shape>>{
           {1, {4, 3, 5, 5}}, {4, {8, 16, 8, 8}}, {8, {32, 16, 16, 16}}, {10, {2, 3, 4, 5}}}) {
    const std::string tag = detail::cat("[K=", k, " ", shape.str(), "]");
    const Shape rows{k, shape[1]}, c{shape[1]};
    auto kind = [k](size_t i) { return k == 1 ? 2 : int(i % 4); };  // 0 null, 1 plain, 2 normed
    auto list = [k, kind](std::vector<Tensor>& in, size_t first) {
      std::pair<std::vector<const Tensor*>, std::vector<bool>> l;
      for (size_t i = 0; i < size_t(k); ++i) {
        l.first.push_back(kind(i) == 0 ? nullptr : &in[first + i]);
        l.second.push_back(kind(i) == 2);
      }
      return l;
    };
    const std::vector<TensorSpec> xs(size_t(k), spec(shape));
    // batchnorm_stats: mean, invstd, then a running mean and variance per candidate (those of
    // un-normed candidates are not given and must keep their values).
    std::vector<TensorSpec> st_out{poison(rows), poison(rows)};
    for (int i = 0; i < k; ++i) {
      st_out.push_back(spec(c));
      st_out.push_back(spec(c, Init::Positive));
    }
    cases.push_back({"batchnorm_stats" + tag, kElementwiseTol * 10, xs, st_out,
                     [list, kind](Context& ctx, auto& in, auto& out) {
                       const auto [ps, normed] = list(in, 0);
                       std::vector<Tensor*> rm, rv;
                       for (size_t i = 0; i < ps.size(); ++i) {
                         rm.push_back(kind(i) == 2 ? &out[2 + 2 * i] : nullptr);
                         rv.push_back(kind(i) == 2 ? &out[3 + 2 * i] : nullptr);
                       }
                       ops::batchnorm_stats(ctx, ps, normed, out[0], out[1], rm, rv,
                                            BatchNormParams{0.1f, 1e-5f});
                     }});
    cases.push_back({"batchnorm_stats/probe" + tag,
                     kElementwiseTol * 10,
                     xs,
                     {poison(rows), poison(rows)},
                     [list](Context& ctx, auto& in, auto& out) {
                       const auto [ps, normed] = list(in, 0);
                       ops::batchnorm_stats(ctx, ps, normed, out[0], out[1], {}, {},
                                            BatchNormParams{0.1f, 1e-5f});
                     }});
    std::vector<TensorSpec> fwd_in{spec({k}), spec(rows), spec(rows, Init::Positive)};
    fwd_in.insert(fwd_in.end(), xs.begin(), xs.end());
    cases.push_back({"mix_norm_fwd" + tag,
                     kElementwiseTol * 10,
                     fwd_in,
                     {poison(shape)},
                     [list](Context& ctx, auto& in, auto& out) {
                       const auto [ps, normed] = list(in, 3);
                       ops::mix_norm_fwd(ctx, in[0], ps, normed, in[1], in[2], out[0]);
                     }});
    // mix_norm_bwd: weights, dy, mean, invstd, xs; K gradients (a null candidate's is not given
    // and must keep its values), then g.
    std::vector<TensorSpec> bwd_in{spec({k}), spec(shape), spec(rows), spec(rows, Init::Positive)};
    bwd_in.insert(bwd_in.end(), xs.begin(), xs.end());
    std::vector<TensorSpec> bwd_out;
    for (int i = 0; i < k; ++i)
      bwd_out.push_back(kind(size_t(i)) == 0 ? spec(shape) : poison(shape));
    for (bool scores : {true, false}) {
      std::vector<TensorSpec> o = bwd_out;
      if (scores) o.push_back(poison({k}));
      cases.push_back({std::string(scores ? "mix_norm_bwd" : "mix_norm_bwd/no-scores") + tag,
                       kGemmTol, bwd_in, o,
                       [list, kind, k, scores](Context& ctx, auto& in, auto& out) {
                         const auto [ps, normed] = list(in, 4);
                         std::vector<Tensor*> dxs;
                         for (size_t i = 0; i < size_t(k); ++i)
                           dxs.push_back(kind(i) == 0 ? nullptr : &out[i]);
                         ops::mix_norm_bwd(ctx, in[0], in[1], ps, normed, in[2], in[3], dxs,
                                           scores ? &out.back() : nullptr);
                       }});
    }
  }
  for (Shape x : {Shape{4, 3, 5, 5}, Shape{64, 16, 8, 8}, Shape{1, 7}}) {
    Shape one = x;
    one[0] = 1;
    const Shape sample{x.numel() / x[0]};
    cases.push_back(
        {"batch_sum" + x.str(),
         kElementwiseTol,
         {spec(x)},
         {poison(sample)},
         [](Context& ctx, auto& in, auto& out) { ops::batch_sum(ctx, in[0], 0.25f, out[0]); }});
  }
  for (auto [k, s, k_eval] :
       std::vector<std::array<int64_t, 3>>{{5, 27, 3}, {8, 1024, 8}, {3, 1, 1}}) {
    const std::string tag = detail::cat("[K=", k, " S=", s, " eval=", k_eval, "]");
    cases.push_back({"ma_update_scores" + tag,
                     kGemmTol,
                     {spec({s}), spec({k, s}), perm(k)},
                     {spec({k, s}), poison({k})},
                     [k_eval](Context& ctx, auto& in, auto& out) {
                       ops::ma_update_scores(ctx, in[0], in[1], out[0], in[2], int(k_eval), 0.1f,
                                             out[1]);
                     }});
  }
  for (auto [segments, k] : std::vector<std::array<int64_t, 2>>{{1, 8}, {14, 8}, {500, 5}}) {
    const std::string tag = detail::cat("[", segments, "x", k, "]");
    cases.push_back({"gumbel_rank" + tag,
                     0.0,
                     {spec({segments * k})},
                     {TensorSpec{{segments * k}, Init::Labels, 1}},
                     [segments, k](Context& ctx, auto& in, auto& out) {
                       std::vector<int32_t> off;
                       for (int64_t i = 0; i <= segments; ++i) off.push_back(int32_t(i * k));
                       Tensor offsets = Tensor::from_vector_i32(ctx, Shape{segments + 1}, off);
                       ops::gumbel_rank(ctx, in[0], offsets, 1234, 56, out[0]);
                     }});
  }

  // ---- optimizers and clipping
  for (bool decoupled : {false, true}) {
    for (auto shapes :
         std::vector<std::vector<Shape>>{{{7}}, {{3, 3}, {16, 4, 3, 3}, {1}}, {{1 << 16}}}) {
      std::vector<TensorSpec> ins, outs;
      for (auto& sh : shapes) {
        ins.push_back(spec(sh));
        outs.push_back(spec(sh));
        outs.push_back(spec(sh));
        outs.push_back(spec(sh, Init::Positive));
      }
      ins.push_back(spec({1}, Init::Positive));
      const std::string tag =
          detail::cat(decoupled ? "[adamw, " : "[adam, ", shapes.size(), " tensors]");
      cases.push_back({"adam_step" + tag, kElementwiseTol, ins, outs,
                       [decoupled](Context& ctx, auto& in, auto& out) {
                         std::vector<OptimSlot> slots;
                         for (size_t i = 0; i + 1 < in.size(); ++i)
                           slots.push_back({&out[3 * i], &in[i], &out[3 * i + 1], &out[3 * i + 2]});
                         AdamParams h{3e-4f, 0.5f, 0.999f, 1e-8f, 1e-3f, decoupled, 7};
                         ops::adam_step(ctx, slots, h, &in.back());
                       }});
    }
  }
  for (auto shapes :
       std::vector<std::vector<Shape>>{{{7}}, {{3, 3}, {16, 4, 3, 3}, {1}}, {{1 << 18}, {5}}}) {
    std::vector<TensorSpec> ins;
    for (auto& sh : shapes) ins.push_back(spec(sh));
    cases.push_back(
        {"global_norm" + detail::cat("[", shapes.size(), " tensors, ", shapes[0].str(), "]"),
         kElementwiseTol * 10,
         ins,
         {poison({1})},
         [](Context& ctx, auto& in, auto& out) {
           std::vector<const Tensor*> ps;
           for (auto& t : in) ps.push_back(&t);
           ops::global_norm(ctx, ps, out[0]);
         }});
  }
  for (float max_norm : {0.5f, 1.0f, 100.0f}) {
    cases.push_back({"clip_coefficient" + detail::cat("[", max_norm, "]"),
                     kElementwiseTol,
                     {spec({1}, Init::Positive)},
                     {poison({1})},
                     [max_norm](Context& ctx, auto& in, auto& out) {
                       ops::clip_coefficient(ctx, in[0], max_norm, out[0]);
                     }});
  }
  struct Crop {
    Shape x, y;
    int top, left;
  };
  for (const Crop& cr : std::vector<Crop>{{{2, 3, 7, 6}, {2, 3, 4, 3}, 2, 1},
                                          {{1, 4, 5, 5}, {1, 4, 4, 4}, 1, 1},
                                          {{3, 2, 8, 8}, {3, 2, 8, 7}, 0, 1}}) {
    const std::string tag = detail::cat("[", cr.x.str(), " -> ", cr.y.str(), "]");
    const int top = cr.top, left = cr.left;
    cases.push_back({"crop2d_fwd" + tag,
                     0.0,
                     {spec(cr.x)},
                     {poison(cr.y)},
                     [top, left](Context& ctx, auto& in, auto& out) {
                       ops::crop2d_fwd(ctx, in[0], top, left, out[0]);
                     }});
    cases.push_back({"crop2d_bwd" + tag,
                     0.0,
                     {spec(cr.y)},
                     {poison(cr.x)},
                     [top, left](Context& ctx, auto& in, auto& out) {
                       ops::crop2d_bwd(ctx, in[0], top, left, out[0]);
                     }});
  }
  for (Shape x : {Shape{4, 3, 5, 5}, Shape{2, 7}, Shape{64, 1, 1, 1}}) {
    cases.push_back(
        {"scale_samples" + x.str(),
         kElementwiseTol,
         {spec(x), spec({x[0]})},
         {poison(x)},
         [](Context& ctx, auto& in, auto& out) { ops::scale_samples(ctx, in[0], in[1], out[0]); }});
  }
  for (float keep : {0.8f, 0.5f, 1.0f}) {
    cases.push_back({"bernoulli_scale" + detail::cat("[keep ", keep, "]"),
                     0.0,
                     {},
                     {poison({1000})},
                     [keep](Context& ctx, auto&, auto& out) {
                       ops::bernoulli_scale(ctx, out[0], keep, 11, 5);
                     }});
  }
  struct Aug {
    Shape x;
    AugmentParams p;
  };
  for (const Aug& a : std::vector<Aug>{{{4, 3, 8, 8}, {2, true, 3}},
                                       {{2, 1, 5, 7}, {0, false, 0}},
                                       {{3, 2, 6, 6}, {4, true, 6}}}) {
    const AugmentParams p = a.p;
    cases.push_back(
        {"augment" +
             detail::cat(a.x.str(), "[pad ", p.pad, " flip ", p.flip, " cutout ", p.cutout, "]"),
         0.0,
         {spec(a.x)},
         {poison(a.x)},
         [p](Context& ctx, auto& in, auto& out) { ops::augment(ctx, in[0], out[0], p, 13, 2); }});
  }
  struct Gather {
    int64_t src, n;
    Init index;
  };
  for (const Gather& g : std::vector<Gather>{
           {10, 7, Init::Labels}, {64, 64, Init::Permutation}, {5, 20, Init::Labels}}) {
    cases.push_back(
        {"gather" + detail::cat("[", g.src, " -> ", g.n, "]"),
         0.0,
         {spec({g.src}), TensorSpec{{g.n}, g.index, int(g.src)}},
         {poison({g.n})},
         [](Context& ctx, auto& in, auto& out) { ops::gather(ctx, in[0], in[1], out[0]); }});
  }
  for (int n : {1, 3, 8}) {  // the words after the first n stay as they were (in-out)
    cases.push_back({"set_words" + detail::cat("[", n, " of 8]"),
                     0.0,
                     {},
                     {spec({8})},
                     [n](Context& ctx, auto&, auto& out) {
                       std::vector<uint32_t> words;
                       for (int i = 0; i < n; ++i) {
                         const float v = 0.25f * float(i) - 1.0f;
                         uint32_t u;
                         std::memcpy(&u, &v, 4);
                         words.push_back(u);
                       }
                       ops::set_words(ctx, out[0], words);
                     }});
  }
  // count_nonfinite: two calls from the start state; inputs made with seeds 100, 101, ... so
  // NonFinite gives 1.5, +inf, -inf, 2.5 as the first elements of inputs 0, 1, 2, 3.
  for (auto [tag, init, n] : std::vector<std::tuple<const char*, Init, int>>{
           {"[3 finite]", Init::Normal, 3},
           {"[1.5, inf, -inf]", Init::NonFinite, 3},
           {"[1.5, inf, -inf, 2.5, 1.5]", Init::NonFinite, 5}}) {
    std::vector<TensorSpec> ins;
    for (int i = 0; i < n; ++i) ins.push_back(spec({1}, init));
    cases.push_back({std::string("count_nonfinite") + tag,
                     0.0,
                     ins,
                     {TensorSpec{{4}, Init::Labels, 1}},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::set_words(ctx, out[0], {0u, ~0u, 0u, ~0u});
                       std::vector<const Tensor*> vs;
                       for (auto& t : in) vs.push_back(&t);
                       ops::count_nonfinite(ctx, vs, out[0]);
                       ops::count_nonfinite(ctx, vs, out[0]);
                     }});
  }
  // metrics_add twice from random sums; the NonFinite case's inputs are 1.5 and +inf (seeds
  // 100, 101): the first call skips the infinite loss, the second adds 1.5.
  for (auto [tag, init] :
       std::vector<std::pair<const char*, Init>>{{"[finite]", Init::Normal},
                                                 {"[positive]", Init::Positive},
                                                 {"[inf loss]", Init::NonFinite}}) {
    cases.push_back({std::string("metrics_add") + tag,
                     kElementwiseTol,
                     {spec({1}, init), spec({1}, init == Init::NonFinite ? init : Init::Positive)},
                     {spec({4}, Init::Positive)},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::metrics_add(ctx, in[1], in[0], 32.0f, out[0]);
                       ops::metrics_add(ctx, in[0], in[0], 7.0f, out[0]);
                     }});
  }
  for (float norm_case : {0.0f, 1.0f}) {  // clip_coefficient of an infinite norm: 0
    cases.push_back({"clip_coefficient" + detail::cat("[inf norm, max ", norm_case + 1.0f, "]"),
                     kElementwiseTol,
                     {spec({1}, Init::NonFinite), spec({1}, Init::NonFinite)},
                     {poison({1})},
                     [norm_case](Context& ctx, auto& in, auto& out) {
                       ops::clip_coefficient(ctx, in[1], norm_case + 1.0f, out[0]);
                     }});
  }
  for (int64_t k : {3, 8, 17}) {  // masks made with seeds 100.. (inputs) and 200 (outputs)
    const std::string tag = detail::cat("[K=", k, "]");
    const int kk = int(std::min<int64_t>(k, 2));
    cases.push_back(
        {"mark_ranked" + tag,
         0.0,
         {TensorSpec{{k}, Init::Permutation, 0}},
         {spec({k}, Init::Mask)},
         [kk](Context& ctx, auto& in, auto& out) { ops::mark_ranked(ctx, in[0], kk, out[0]); }});
    cases.push_back({"mask_logsumexp" + tag,
                     kElementwiseTol,
                     {spec({k}), spec({k}, Init::Mask)},
                     {poison({1})},
                     [](Context& ctx, auto& in, auto& out) {
                       ops::mask_logsumexp(ctx, in[0], in[1], out[0]);
                     }});
    cases.push_back(
        {"mask_rescale" + tag,
         kElementwiseTol,
         {spec({k}, Init::Mask), spec({1})},
         {spec({k})},
         [](Context& ctx, auto& in, auto& out) { ops::mask_rescale(ctx, out[0], in[0], in[1]); }});
  }
  // A masked optimizer step: masked-out elements (parameter and state) stay as they were.
  for (bool adam : {false, true}) {
    cases.push_back({std::string(adam ? "adam_step" : "sgd_step") + "[masked]",
                     kElementwiseTol,
                     {spec({40}), spec({40}, Init::Mask)},
                     {spec({40}), spec({40}), spec({40}, Init::Positive)},
                     [adam](Context& ctx, auto& in, auto& out) {
                       OptimSlot s{&out[0], &in[0], &out[1], adam ? &out[2] : nullptr, &in[1]};
                       if (adam) {
                         AdamParams p;
                         p.weight_decay = 0.1f;
                         ops::adam_step(ctx, {s}, p);
                       } else {
                         ops::sgd_step(ctx, {s}, SgdParams{0.1f, 0.9f, 0.01f, false});
                       }
                     }});
  }
  for (auto [x, g] : std::vector<std::pair<Shape, int>>{
           {{2, 8, 3, 3}, 4}, {{1, 12, 5, 4}, 3}, {{3, 6, 2, 2}, 1}}) {
    const int groups = g;
    cases.push_back({"channel_shuffle" + detail::cat(x.str(), "[groups ", groups, "]"),
                     0.0,
                     {spec(x)},
                     {poison(x)},
                     [groups](Context& ctx, auto& in, auto& out) {
                       ops::channel_shuffle(ctx, in[0], groups, out[0]);
                     }});
  }
  struct Gs {
    int64_t k;
    float tau;
    int64_t first;
  };
  for (const Gs& g : std::vector<Gs>{{3, 10.0f, 0}, {8, 1.0f, 5}, {17, 0.1f, 2}}) {
    const std::string tag = detail::cat("[K=", g.k, " tau ", g.tau, "]");
    const float tau = g.tau;
    const int64_t first = g.first;
    cases.push_back({"gumbel_softmax" + tag,
                     kElementwiseTol,
                     {spec({g.k})},
                     {poison({g.k})},
                     [tau, first](Context& ctx, auto& in, auto& out) {
                       ops::gumbel_softmax(ctx, in[0], 9, 4, first, tau, out[0]);
                     }});
    cases.push_back({"gumbel_softmax_bwd" + tag,
                     kElementwiseTol,
                     {spec({g.k}), spec({g.k}, Init::Positive), spec({g.k})},
                     {spec({g.k})},
                     [tau](Context& ctx, auto& in, auto& out) {
                       ops::gumbel_softmax_bwd(ctx, in[0], in[1], in[2], tau, out[0]);
                     }});
  }
  cases.push_back({"sgd_step[scaled gradients]",
                   kElementwiseTol,
                   {spec({33}), spec({1}, Init::Positive)},
                   {spec({33}), spec({33})},
                   [](Context& ctx, auto& in, auto& out) {
                     ops::sgd_step(ctx, {{&out[0], &in[0], &out[1], nullptr}},
                                   SgdParams{0.1f, 0.9f, 1e-4f, false}, &in[1]);
                   }});
  return cases;
}

const std::vector<OpCase>& registry() {
  static const std::vector<OpCase> cases = all_cases();
  return cases;
}

// ------------------------------------------------------------------ the test
struct ParityParam {
  size_t index;
  DeviceType backend;
};

void PrintTo(const ParityParam& p, std::ostream* os) {
  *os << (p.backend == DeviceType::CPU ? "cpu " : "cuda ") << registry()[p.index].name;
}

class OpParity : public ::testing::TestWithParam<ParityParam> {};

TEST_P(OpParity, MatchesCpuReference) {
  const OpCase& c = registry()[GetParam().index];
  Context cpu;
  RunResult ref = run_case(cpu, c);
  for (const auto& e : ref.sentinel_errors) ADD_FAILURE() << "cpu: " << e;

  if (GetParam().backend == DeviceType::CPU) {
    for (size_t i = 0; i < ref.outputs.size(); ++i)
      for (size_t k = 0; k < ref.outputs[i].size(); ++k)
        ASSERT_TRUE(std::isfinite(ref.outputs[i][k])) << "cpu output " << i << " element " << k;
    RunResult again = run_case(cpu, c);
    EXPECT_EQ(again.outputs, ref.outputs) << "cpu backend is not deterministic";
    return;
  }

  CUDARTS_REQUIRE_GPU();
  Context gpu(Device::cuda(0));
  RunResult got;
  try {
    got = run_case(gpu, c);
  } catch (const NotSupported& e) {
    // Every op of the table is implemented on CUDA and no case here exceeds a documented
    // limit, so a NotSupported (e.g. no strict-FP32 cuDNN algorithm) is a failure.
    FAIL() << "cuda backend reports NotSupported: " << e.what();
  }
  for (const auto& e : got.sentinel_errors) ADD_FAILURE() << "cuda: " << e;
  ASSERT_EQ(got.outputs.size(), ref.outputs.size());
  for (size_t i = 0; i < got.outputs.size(); ++i) {
    for (size_t k = 0; k < got.outputs[i].size(); ++k)
      ASSERT_TRUE(std::isfinite(got.outputs[i][k]))
          << "cuda output " << i << " element " << k << " is " << got.outputs[i][k];
    const double err = test::normalized_error(got.outputs[i], ref.outputs[i]);
    EXPECT_LE(err, c.tol) << "output " << i << ": normalised error " << err;
  }
}

std::vector<ParityParam> params() {
  std::vector<ParityParam> p;
  for (DeviceType d : {DeviceType::CPU, DeviceType::CUDA})
    for (size_t i = 0; i < registry().size(); ++i) p.push_back({i, d});
  return p;
}

std::string param_name(const ::testing::TestParamInfo<ParityParam>& info) {
  std::string s = std::string(info.param.backend == DeviceType::CPU ? "cpu_" : "cuda_") +
                  registry()[info.param.index].name;
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s + "_" + std::to_string(info.param.index);
}

INSTANTIATE_TEST_SUITE_P(AllOps, OpParity, ::testing::ValuesIn(params()), param_name);

// The precision switch: with TF32 allowed (ContextOptions::allow_tf32 / set_allow_tf32),
// convolutions and GEMMs stay within 1e-2 of the CPU reference (TF32 keeps 10 mantissa bits).
constexpr double kTf32Tol = 1e-2;

TEST(OpParityTf32, ConvolutionsAndGemmWithinOnePercent) {
  CUDARTS_REQUIRE_GPU();
  ContextOptions tf32;
  tf32.allow_tf32 = true;
  Context gpu(Device::cuda(0), tf32), cpu;
  int checked = 0;
  for (const OpCase& c : registry()) {
    if (c.name.rfind("conv2d", 0) != 0 && c.name.rfind("linear", 0) != 0) continue;
    SCOPED_TRACE(c.name);
    const RunResult ref = run_case(cpu, c);
    const RunResult got = run_case(gpu, c);
    ASSERT_EQ(got.outputs.size(), ref.outputs.size());
    for (size_t i = 0; i < got.outputs.size(); ++i)
      EXPECT_LE(test::normalized_error(got.outputs[i], ref.outputs[i]), kTf32Tol) << "output " << i;
    ++checked;
  }
  EXPECT_GE(checked, 6) << "the registry should hold conv2d_* and linear_* cases";
  gpu.set_allow_tf32(false);  // back to strict FP32 on the same context
  for (const OpCase& c : registry()) {
    if (c.name.rfind("linear_fwd", 0) != 0) continue;
    const RunResult ref = run_case(cpu, c), got = run_case(gpu, c);
    for (size_t i = 0; i < got.outputs.size(); ++i)
      EXPECT_LE(test::normalized_error(got.outputs[i], ref.outputs[i]), kGemmTol) << c.name;
  }
}

// The own convolution kernels of one kind (the default) give the same bits on every run (no
// atomics, an order fixed by the shapes), and cuDNN (the kind's switch off, at construction or
// on a live context) still matches the CPU reference; over the conv2d cases whose tag holds
// `tag`. Returns the number of cases checked.
int check_own_kernels_and_cudnn(const std::string& tag, bool ContextOptions::*own_option,
                                void (Context::*set_own)(bool), const std::string& op = "conv2d",
                                bool cpu_bits = false) {
  ContextOptions own_on, cudnn_only;
  own_on.*own_option = true;
  cudnn_only.*own_option = false;
  Context own(Device::cuda(0), own_on), cudnn(Device::cuda(0), cudnn_only), cpu;
  int checked = 0;
  for (const OpCase& c : registry()) {
    if (c.name.rfind(op, 0) != 0 || c.name.find(tag) == std::string::npos) continue;
    SCOPED_TRACE(c.name);
    const RunResult ref = run_case(cpu, c);
    const RunResult first = run_case(own, c), second = run_case(own, c);
    EXPECT_EQ(first.outputs, second.outputs) << "own kernels changed bits between runs";
    if (cpu_bits) EXPECT_EQ(first.outputs, ref.outputs) << "own kernels left the CPU's bits";
    const RunResult lib = run_case(cudnn, c);
    for (const auto& e : lib.sentinel_errors) ADD_FAILURE() << "cudnn: " << e;
    EXPECT_EQ(lib.outputs.size(), ref.outputs.size());
    for (size_t i = 0; i < lib.outputs.size() && i < ref.outputs.size(); ++i)
      EXPECT_LE(test::normalized_error(lib.outputs[i], ref.outputs[i]), c.tol)
          << "cuDNN output " << i;
    (own.*set_own)(false);
    EXPECT_EQ(run_case(own, c).outputs, lib.outputs) << "the switch turned off on a live context";
    (own.*set_own)(true);
    ++checked;
  }
  return checked;
}

TEST(OpParityDepthwise, OwnKernelsRepeatBitsAndCudnnStillMatches) {
  CUDARTS_REQUIRE_GPU();
  EXPECT_TRUE(Context(Device::cuda(0)).own_depthwise_kernels());
  const int checked = check_own_kernels_and_cudnn("dw", &ContextOptions::own_depthwise_kernels,
                                                  &Context::set_own_depthwise_kernels);
  EXPECT_GE(checked, 3 * 16) << "the registry should hold the depthwise cases";
}

TEST(OpParityPointwise, OwnKernelsRepeatBitsAndCudnnStillMatches) {
  CUDARTS_REQUIRE_GPU();
  EXPECT_TRUE(Context(Device::cuda(0)).own_pointwise_kernels());
  const int checked = check_own_kernels_and_cudnn("/pw_", &ContextOptions::own_pointwise_kernels,
                                                  &Context::set_own_pointwise_kernels);
  EXPECT_GE(checked, 3 * 11) << "the registry should hold the pointwise cases";
}

// The pooling cases: the own kernels repeat the CPU's arithmetic in the CPU's order, so they
// give the CPU's bits (forward and backward); cuDNN still matches within tolerance.
TEST(OpParityPool, OwnKernelsGiveTheCpuBitsAndCudnnStillMatches) {
  CUDARTS_REQUIRE_GPU();
  EXPECT_TRUE(Context(Device::cuda(0)).own_pool_kernels());
  const int checked = check_own_kernels_and_cudnn("/", &ContextOptions::own_pool_kernels,
                                                  &Context::set_own_pool_kernels, "pool2d", true);
  EXPECT_GE(checked, 2 * 10) << "the registry should hold the pooling cases";
}

// Affine-free BatchNorm: the own kernels (the normalised-mix kernels with one candidate; off by
// default, cuDNN was faster on the H200) repeat their bits; cuDNN still matches.
TEST(OpParityNorm, OwnKernelsRepeatBitsAndCudnnStillMatches) {
  CUDARTS_REQUIRE_GPU();
  EXPECT_FALSE(Context(Device::cuda(0)).own_norm_kernels());
  const int checked = check_own_kernels_and_cudnn("/plain", &ContextOptions::own_norm_kernels,
                                                  &Context::set_own_norm_kernels, "batchnorm_");
  EXPECT_GE(checked, 3 + 2 * 4) << "the registry should hold the affine-free BatchNorm cases";
}

// The op name a registry case exercises ("conv2d_fwd/3x3_s1_p1" -> "conv2d_fwd").
std::string op_of(const OpCase& c) {
  return c.name.substr(0, c.name.find_first_of("/[("));
}

// Every op of the table (ops::op_names(), the one list) has at least three registry cases, and
// no case names an op outside the list.
TEST(OpParityRegistry, CoversEveryOpWithThreeShapes) {
  std::map<std::string, int> count;
  for (const OpCase& c : registry()) ++count[op_of(c)];
  const std::vector<std::string>& names = ops::op_names();
  for (const std::string& op : names) EXPECT_GE(count[op], 3) << op;
  for (const auto& [op, n] : count)
    EXPECT_NE(std::find(names.begin(), names.end(), op), names.end())
        << "registry cases for '" << op << "', which ops::op_names() does not list";
}

// ops::op_names() is exactly the set of functions of include/cudarts/ops.h that take a Context
// (read from the header itself, so an op added there without joining the list fails here).
TEST(OpParityRegistry, OpListMatchesTheHeader) {
  std::ifstream f(std::string(CUDARTS_SOURCE_DIR) + "/include/cudarts/ops.h");
  ASSERT_TRUE(f.good()) << "cannot read ops.h under " << CUDARTS_SOURCE_DIR;
  std::stringstream text;
  text << f.rdbuf();
  const std::regex decl(R"(\b([a-z0-9_]+)\(Context& ctx)");
  std::set<std::string> declared;
  const std::string src = text.str();
  for (auto it = std::sregex_iterator(src.begin(), src.end(), decl); it != std::sregex_iterator();
       ++it)
    declared.insert((*it)[1]);
  const std::set<std::string> listed(ops::op_names().begin(), ops::op_names().end());
  EXPECT_EQ(declared, listed);
  EXPECT_EQ(listed.size(), ops::op_names().size()) << "a name appears twice in the list";
}

// Each case, run with an OpProfiler attached, is recorded under its op's name with a cost
// (at least one launch, and the bytes of its outputs written unless it writes nothing).
TEST(OpParityRegistry, EveryOpIsProfiledUnderItsNameWithACost) {
  for (const OpCase& c : registry()) {
    SCOPED_TRACE(c.name);
    Context cpu;
    std::vector<OpProfiler::Row> rows;
    {
      OpProfiler prof(cpu);
      run_case(cpu, c);
      rows = prof.report_by_op();
    }
    const std::string op = op_of(c);
    auto it = std::find_if(rows.begin(), rows.end(),
                           [&](const OpProfiler::Row& r) { return r.op == op; });
    ASSERT_NE(it, rows.end()) << "no profiler row named '" << op << "'";
    EXPECT_GE(it->cost.launches, 1);
    EXPECT_GT(it->cost.bytes_written, 0.0);
  }
}

}  // namespace
}  // namespace cudarts
