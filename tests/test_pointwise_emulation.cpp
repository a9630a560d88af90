// The pointwise (1x1) convolution kernels (cuda/pointwise_kernels.cuh) run as host code under
// the emulation of the CUDA execution model in cuda_emulation.h (blocks one after another, the
// 256 threads of a block as cooperative fibers, barriers that report divergence), in the
// launchers' geometry (cuda/pointwise.cu), against the CPU reference (ops::conv2d_* on a CPU
// context), with inputs and outputs framed by guard values. Built with the CUDA backend (it
// needs the CUDA headers), runs without a GPU.
#include <cmath>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "test_util.h"

#include "emulated_attributes.h"
#undef __launch_bounds__
#define __launch_bounds__(...)

#include "pointwise_kernels.cuh"

namespace cudarts {
namespace {

namespace pw = cuda::pointwise;
static_assert(emu::kThreads == pw::kThreads);
using Framed = emu::Framed<float>;
using emu::framed;
using emu::kOutGuard;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Case {
  const char* name;
  Shape x;
  int64_t cout;
  int stride_h, stride_w;
};

// Shapes chosen to reach every path: one and two 128-channel weight stages, output channels
// below, at and above the 16 of a tile (ragged last tile), input channels below 16, planes over
// one block's 1024 pixels, stride 2 on odd maps and unequal strides (dx zero off the grid),
// filter gradients with one chunk and with several.
std::vector<Case> cases() {
  return {
      {"C16 -> 16, 8x8", {2, 16, 8, 8}, 16, 1, 1},
      {"C200 -> 20, 5x7 (two weight stages)", {2, 200, 5, 7}, 20, 1, 1},
      {"C12 -> 20, 9x11 stride 2", {2, 12, 9, 11}, 20, 2, 2},
      {"C3 -> 5, 40x40 (two pixel blocks)", {1, 3, 40, 40}, 5, 1, 1},
      {"C4 -> 33, 7x6 stride 1x2", {3, 4, 7, 6}, 33, 1, 2},
      // the packed map kernel: blocks over several images, image boundaries inside a block,
      // channel counts with and without a remainder after the 8-channel loads
      {"C8 -> 12, 3x5, 7 images in one block", {7, 8, 3, 5}, 12, 1, 1},
      {"C20 -> 9, 5x5 stride 2, 40 images", {40, 20, 5, 5}, 9, 2, 2},
  };
}

Conv2dParams params(const Case& c, bool relu) {
  Conv2dParams p = Conv2dParams::make(1, 0);
  p.stride_h = c.stride_h;
  p.stride_w = c.stride_w;
  p.relu_input = relu;
  return p;
}

void launch(dim3 grid, const std::function<void()>& kernel) {
  emu::run_grid(grid, kernel);
}

// The map kernels: the packed one (the library's) with 16, 8 and 4 output channels per thread,
// and the per-image one (pointwise_bench's v3, the library's before).
constexpr int kMapKernels = 4;
const char* const kMapKernelNames[kMapKernels] = {"packed, 16 outputs", "packed, 8 outputs",
                                                  "packed, 4 outputs", "per image"};

template <bool kBackwardData>
void run_map(int kernel, const pw::Problem& pr, const float* src, const float* w, const float* bias,
             const float* mask, float* dst) {
  const pw::Direction d = kBackwardData ? pw::Direction::BackwardData : pw::Direction::Forward;
  const int outs[3] = {16, 8, 4};
  if (kernel == 3) {
    launch(pw::map_grid(d, pr),
           [&] { pw::pointwise_map_kernel<float, kBackwardData>(src, w, bias, mask, dst, pr); });
    return;
  }
  launch(pw::packed_map_grid(d, pr, outs[kernel]), [&] {
    if (kernel == 0)
      pw::pointwise_packed_map_kernel<float, kBackwardData, 16>(src, w, bias, mask, dst, pr);
    if (kernel == 1)
      pw::pointwise_packed_map_kernel<float, kBackwardData, 8>(src, w, bias, mask, dst, pr);
    if (kernel == 2)
      pw::pointwise_packed_map_kernel<float, kBackwardData, 4>(src, w, bias, mask, dst, pr);
  });
}

void check_case(const Case& c, bool relu) {
  SCOPED_TRACE(detail::cat(c.name, relu ? " with a fused ReLU" : ""));
  const Shape ws{c.cout, c.x[1], 1, 1};
  const Conv2dParams unfused = params(c, false), p = params(c, relu);
  const Shape ys = ops::conv2d_output_shape(c.x, ws, unfused);
  const auto pr = pw::make_problem(c.x, ws, ys, p);
  ASSERT_TRUE(pr.has_value());
  ASSERT_EQ(pr->relu_input, relu);
  const auto x = test::random_vector(size_t(c.x.numel()), 1);
  std::vector<float> x_ref = x;  // what the reference convolution reads
  if (relu)
    for (float& v : x_ref) v = v > 0.0f ? v : 0.0f;
  const auto w = test::random_vector(size_t(ws.numel()), 2);
  const auto b = test::random_vector(size_t(c.cout), 3);
  const auto g = test::random_vector(size_t(ys.numel()), 4);
  const auto dw0 = test::random_vector(size_t(ws.numel()), 5);

  // The CPU reference: the unfused convolution of max(x, 0), its input gradient masked.
  Context cpu;
  Tensor tx = Tensor::from_vector(cpu, c.x, x_ref), tw = Tensor::from_vector(cpu, ws, w);
  Tensor tb = Tensor::from_vector(cpu, Shape{c.cout}, b), tg = Tensor::from_vector(cpu, ys, g);
  Tensor ty = Tensor::empty(cpu, ys), ty0 = Tensor::empty(cpu, ys), tdx = Tensor::empty(cpu, c.x);
  Tensor tdw = Tensor::from_vector(cpu, ws, dw0);
  ops::conv2d_fwd(cpu, tx, tw, &tb, ty, unfused);
  ops::conv2d_fwd(cpu, tx, tw, nullptr, ty0, unfused);
  ops::conv2d_bwd_data(cpu, tg, tw, tdx, unfused);
  ops::conv2d_bwd_filter(cpu, tx, tg, tdw, nullptr, unfused);
  auto ref_dx = tdx.to_vector();
  if (relu)
    for (size_t i = 0; i < ref_dx.size(); ++i)
      if (!(x[i] > 0.0f)) ref_dx[i] = 0.0f;

  Framed fx = framed(x, kNaN), fw = framed(w, kNaN), fb = framed(b, kNaN), fg = framed(g, kNaN);
  // forward, with and without the bias, and backward data, by every map kernel; the packed
  // kernel adds the per-image kernel's products in its order: the same bits.
  std::vector<float> first_y[2], first_dx;
  for (int kernel = 0; kernel < kMapKernels; ++kernel) {
    SCOPED_TRACE(kMapKernelNames[kernel]);
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      Framed fy = framed(std::vector<float>(size_t(ys.numel()), kNaN), kOutGuard);
      run_map<false>(kernel, *pr, fx.data(), fw.data(), with_bias ? fb.data() : nullptr, nullptr,
                     fy.data());
      EXPECT_TRUE(fy.guards_intact()) << "forward wrote outside y";
      const auto got = fy.body();
      for (float v : got) ASSERT_TRUE(std::isfinite(v)) << "forward: unwritten or NaN output";
      EXPECT_LE(test::normalized_error(got, (with_bias ? ty : ty0).to_vector()), 1e-5)
          << "forward, bias " << with_bias;
      if (kernel == 0) first_y[with_bias] = got;
      EXPECT_TRUE(got == first_y[with_bias]) << "forward: other bits than the 16-output kernel's";
    }
    Framed fdx = framed(std::vector<float>(size_t(c.x.numel()), kNaN), kOutGuard);
    run_map<true>(kernel, *pr, fg.data(), fw.data(), nullptr, relu ? fx.data() : nullptr,
                  fdx.data());
    EXPECT_TRUE(fdx.guards_intact()) << "backward data wrote outside dx";
    const auto got = fdx.body();
    for (float v : got) ASSERT_TRUE(std::isfinite(v)) << "backward data: unwritten or NaN";
    EXPECT_LE(test::normalized_error(got, ref_dx), 1e-5) << "backward data";
    if (kernel == 0) first_dx = got;
    EXPECT_TRUE(got == first_dx) << "backward data: other bits than the 16-output kernel's";
  }
  // backward filter: the library's split, one chunk, and one chunk per unit
  const pw::FilterSplit splits[] = {pw::plan_filter_split(*pr),
                                    pw::plan_filter_split(*pr, 1, 1 << 30),
                                    pw::plan_filter_split(*pr, int64_t(1) << 30, 1)};
  EXPECT_EQ(splits[1].chunks, 1);
  EXPECT_EQ(splits[2].chunks, splits[2].units);
  for (const pw::FilterSplit& sp : splits) {
    SCOPED_TRACE(detail::cat(sp.chunks, " chunks of ", sp.units_per_chunk, " units"));
    Framed fdw = framed(dw0, kOutGuard);
    const size_t pbytes = pw::filter_partials_bytes(*pr, sp);
    Framed part = framed(std::vector<float>(pbytes / sizeof(float), kNaN), kOutGuard);
    launch(dim3(unsigned(sp.co_tiles * sp.ci_tiles), unsigned(sp.chunks)), [&] {
      pw::pointwise_bwd_filter_kernel<float>(fx.data(), fg.data(), part.data(), fdw.data(), *pr,
                                             sp);
    });
    if (sp.chunks > 1) {
      for (float v : part.body()) ASSERT_TRUE(std::isfinite(v)) << "partial not written";
      const int64_t entries = c.cout * c.x[1];
      launch(dim3(unsigned(pw::ceil_div(entries, 32))), [&] {
        pw::pointwise_bwd_filter_finish_kernel<float>(part.data(), fdw.data(), entries, sp.chunks);
      });
    }
    EXPECT_TRUE(part.guards_intact()) << "stage 1 wrote outside its partials";
    EXPECT_TRUE(fdw.guards_intact()) << "filter gradient wrote outside dw";
    EXPECT_LE(test::normalized_error(fdw.body(), tdw.to_vector()), 1e-5) << "filter gradient";
  }
}

TEST(PointwiseEmulation, AllDirectionsMatchCpuReference) {
  for (const Case& c : cases()) check_case(c, false);
}

TEST(PointwiseEmulation, FusedReluMatchesTheUnfusedReference) {
  for (const Case& c : cases()) check_case(c, true);
}

// The filter split: the library's one aims at kFilterTargetBlocks blocks with at least
// kMinUnitsPerChunk units each and covers every unit exactly once.
TEST(PointwiseEmulation, FilterSplitsCoverEveryUnitOnce) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Shape ws{c.cout, c.x[1], 1, 1};
    const auto pr = pw::make_problem(c.x, ws, ops::conv2d_output_shape(c.x, ws, params(c, false)),
                                     params(c, false));
    ASSERT_TRUE(pr.has_value());
    const pw::FilterSplit sp = pw::plan_filter_split(*pr);
    EXPECT_EQ(sp.units, c.x[0] * pw::ceil_div(pr->out_plane(), pw::kUnitPixels));
    EXPECT_GE(sp.chunks * sp.units_per_chunk, sp.units);
    EXPECT_LT((sp.chunks - 1) * sp.units_per_chunk, sp.units) << "an empty last chunk";
    const int64_t tiles = int64_t(sp.co_tiles) * sp.ci_tiles;
    EXPECT_LT(sp.chunks * tiles, pw::kFilterTargetBlocks + tiles);
  }
  // The search network's largest pointwise shape: 64 images of 32x32, 16 channels.
  const Shape x{64, 16, 32, 32}, ws{16, 16, 1, 1};
  const auto pr = pw::make_problem(x, ws, x, Conv2dParams::make(1, 0));
  ASSERT_TRUE(pr.has_value());
  const pw::FilterSplit sp = pw::plan_filter_split(*pr);
  EXPECT_EQ(sp.units, 64 * 16);
  EXPECT_EQ(sp.units_per_chunk, 4);
  EXPECT_EQ(sp.chunks, 256);
}

// The packed map kernel's outputs per thread at the search network's shapes (batch 64), by hand:
// blocks = ceil(64 * P / 256) pixel blocks times ceil(C / outs) channel tiles, the largest outs
// of 16, 8, 4 with at least 256 blocks.
TEST(PointwiseEmulation, MapOutputsPerThreadFollowTheBlockCount) {
  const auto outs = [](pw::Direction d, Shape x, int64_t cout) {
    const Shape ws{cout, x[1], 1, 1};
    const auto pr =
        pw::make_problem(x, ws, Shape{x[0], cout, x[2], x[3]}, Conv2dParams::make(1, 0));
    EXPECT_TRUE(pr.has_value());
    return pr ? pw::map_outputs(d, *pr) : 0;
  };
  const auto fwd = pw::Direction::Forward, bwd = pw::Direction::BackwardData;
  EXPECT_EQ(outs(fwd, {64, 16, 32, 32}, 16), 16);  // 256 pixel blocks x 1 tile
  EXPECT_EQ(outs(fwd, {64, 32, 16, 16}, 32), 8);   // 64 x 2 = 128; 64 x 4 = 256
  EXPECT_EQ(outs(fwd, {64, 64, 8, 8}, 64), 4);     // 16 x 4, 16 x 8, then 4 outputs
  EXPECT_EQ(outs(fwd, {64, 256, 8, 8}, 64), 4);    // the preprocessing 256 -> 64
  EXPECT_EQ(outs(bwd, {64, 256, 8, 8}, 64), 16);   // its data gradient: 16 x 16 = 256
  EXPECT_EQ(outs(fwd, {1, 3, 2, 2}, 5), 4);        // one block: 4 outputs
  const auto pr = pw::make_problem(Shape{64, 16, 32, 32}, Shape{16, 16, 1, 1},
                                   Shape{64, 16, 32, 32}, Conv2dParams::make(1, 0));
  ASSERT_TRUE(pr.has_value());
  const dim3 g = pw::packed_map_grid(fwd, *pr, 16);
  EXPECT_EQ(g.x, 256u);
  EXPECT_EQ(g.y, 1u);
}

// The kernels' cover (pointwise::covers) and the cost model's rule (src/kernel_rules.h) agree
// at the search and retraining shapes and on the refusals: padding, groups, a 3x3 kernel, too
// many images, a bias gradient.
TEST(PointwiseEmulation, CoverIsTheCostModelsRule) {
  struct Probe {
    Shape x, w;
    Conv2dParams p;
    bool bias_gradient;
  };
  const Conv2dParams one = Conv2dParams::make(1, 0), padded = Conv2dParams::make(1, 1),
                     grouped = Conv2dParams::make(1, 0, 1, 2);
  const Probe probes[] = {
      {{64, 16, 32, 32}, {16, 16, 1, 1}, one, false},
      {{64, 256, 8, 8}, {64, 256, 1, 1}, one, false},
      {{64, 16, 32, 32}, {8, 16, 1, 1}, Conv2dParams::make(2, 0), false},
      {{96, 144, 32, 32}, {36, 144, 1, 1}, one, false},
      {{2, 8, 6, 6}, {4, 8, 1, 1}, padded, false},
      {{2, 8, 6, 6}, {4, 4, 1, 1}, grouped, false},
      {{2, 8, 6, 6}, {4, 8, 3, 3}, one, false},
      {{70000, 8, 6, 6}, {4, 8, 1, 1}, one, false},
      {{2, 8, 6, 6}, {4, 8, 1, 1}, one, true},
  };
  for (const Probe& pb : probes) {
    SCOPED_TRACE(detail::cat("x ", pb.x, " w ", pb.w, " pad ", pb.p.pad_h, " groups ", pb.p.groups,
                             pb.bias_gradient ? " with a bias gradient" : ""));
    const Shape y = ops::conv2d_output_shape(pb.x, pb.w, pb.p);
    const bool rule = kernel_rules::own_pointwise(pb.x, pb.w, pb.p, pb.bias_gradient);
    EXPECT_EQ(pw::covers(pw::Direction::BackwardFilter, pb.x, pb.w, y, pb.p, pb.bias_gradient),
              rule);
    if (!pb.bias_gradient) {
      EXPECT_EQ(pw::covers(pw::Direction::Forward, pb.x, pb.w, y, pb.p, false), rule);
      EXPECT_EQ(pw::covers(pw::Direction::BackwardData, pb.x, pb.w, y, pb.p, false), rule);
    }
  }
}

// What the kernels do not cover goes to cuDNN: padding, groups, kernels above 1x1, batches
// beyond gridDim.z.
TEST(PointwiseEmulation, UncoveredProblemsAreRefused) {
  const Shape x{2, 8, 6, 6}, w{4, 8, 1, 1};
  EXPECT_TRUE(pw::make_problem(x, w, Shape{2, 4, 6, 6}, Conv2dParams::make(1, 0)).has_value());
  EXPECT_FALSE(pw::make_problem(x, w, Shape{2, 4, 8, 8}, Conv2dParams::make(1, 1)).has_value());
  EXPECT_FALSE(
      pw::make_problem(x, Shape{4, 4, 1, 1}, Shape{2, 4, 6, 6}, Conv2dParams::make(1, 0, 1, 2))
          .has_value());
  EXPECT_FALSE(pw::make_problem(x, Shape{4, 8, 3, 3}, Shape{2, 4, 4, 4}, Conv2dParams::make(1, 0))
                   .has_value());
  EXPECT_FALSE(
      pw::make_problem(Shape{70000, 8, 6, 6}, w, Shape{70000, 4, 6, 6}, Conv2dParams::make(1, 0))
          .has_value());
}

}  // namespace
}  // namespace cudarts
