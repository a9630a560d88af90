// The depthwise convolution kernels (cuda/depthwise_kernels.cuh) run as host code under the
// emulation of the CUDA execution model in cuda_emulation.h (blocks one after another, the 256
// threads of a block as cooperative fibers, barriers that report divergence, shuffles through
// a per-warp exchange), against the CPU reference (ops::conv2d_* on a CPU context), with shared
// memory poisoned (NaN) before every block and inputs / outputs framed by guard values. Built
// with the CUDA backend (it needs the CUDA headers), runs without a GPU.
#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "depthwise.cuh"
#include "test_util.h"

static_assert(emu::kThreads == cudarts::cuda::depthwise::kThreads);

#undef __global__
#undef __device__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __shared__
#define __launch_bounds__(...)

// The block's dynamic shared memory: the kernels' `extern __shared__ ... smem[]` names it.
namespace cudarts::cuda::depthwise {
namespace {
alignas(16) unsigned char smem[kMaxSharedBytes];
}
}  // namespace cudarts::cuda::depthwise

#include "depthwise_kernels.cuh"

namespace cudarts {
namespace {

namespace dw = cuda::depthwise;

// Runs `kernel` (a call of one kernel with its arguments) over `grid` blocks of kThreads
// threads with `smem_bytes` of shared memory; checks that nothing beyond smem_bytes was written.
void launch(dim3 grid, size_t smem_bytes, const std::function<void()>& kernel) {
  ASSERT_LE(smem_bytes, dw::kMaxSharedBytes);
  emu::run_grid(
      grid, kernel, [] { std::memset(dw::smem, 0xff, sizeof(dw::smem)); },  // NaN in every float
      [smem_bytes](dim3 b) {
        for (size_t i = smem_bytes; i < sizeof(dw::smem); ++i)
          ASSERT_EQ(dw::smem[i], 0xff)
              << "block (" << b.x << ", " << b.y << "): shared memory written at byte " << i
              << " of " << smem_bytes;
      });
}

using Framed = emu::Framed<float>;
using emu::framed;
using emu::kOutGuard;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Case {
  const char* name;
  Shape x;
  int r, s;
  Conv2dParams p;
};

std::string describe(const Case& c) {
  return detail::cat(c.name, " x ", c.x, " kernel ", c.r, "x", c.s, " stride ", c.p.stride_h,
                     " pad ", c.p.pad_h, " dilation ", c.p.dilation_h);
}

Conv2dParams params(int stride, int pad, int dil, int64_t c) {
  return Conv2dParams::make(stride, pad, dil, int(c));
}

// Shapes chosen to reach every path: several planes per block (and a last block with fewer),
// planes split into tiles with ragged edges (rows and columns, width > 64), stride 2 with odd
// sizes, dilation 2 and 3, asymmetric kernels, 1x1 and 7x7, threads per plane below and above a
// warp, filter gradients with one chunk and with several.
std::vector<Case> cases() {
  return {
      {"3x3 s1 many planes", {3, 7, 8, 8}, 3, 3, params(1, 1, 1, 7)},
      {"5x5 dil2 small", {2, 5, 4, 4}, 5, 5, params(1, 4, 2, 5)},
      {"3x3 s2 odd", {2, 3, 9, 11}, 3, 3, params(2, 1, 1, 3)},
      {"5x5 s2 dil2", {2, 4, 13, 10}, 5, 5, params(2, 4, 2, 4)},
      {"3x5 wide tiles", {1, 2, 37, 70}, 3, 5, params(1, 2, 1, 2)},
      {"5x3 s2 dil3 no pad", {2, 3, 21, 17}, 5, 3, params(2, 0, 3, 3)},
      {"1x1 s2", {2, 6, 7, 7}, 1, 1, params(2, 0, 1, 6)},
      {"7x7 pad3", {1, 3, 12, 9}, 7, 7, params(1, 3, 1, 3)},
      {"3x3 big pad", {1, 2, 5, 6}, 3, 3, params(1, 3, 1, 2)},
      {"3x3 s3 dil2", {2, 2, 16, 16}, 3, 3, params(3, 2, 2, 2)},
      {"3x3 one channel", {3, 1, 6, 5}, 3, 3, params(1, 1, 1, 1)},
      {"3x5 single input row", {2, 3, 1, 40}, 3, 5, params(1, 2, 1, 3)},
  };
}

// The three directions of one case against the CPU reference. (Run-to-run bits are a GPU
// question: the emulation schedules its fibers in one fixed order.) With `relu` the kernels run
// with a fused ReLU (relu_input) and the reference is the unfused CPU convolution of
// max(x, 0), its input gradient masked where x <= 0, both formed here.
void check_case(const Case& unfused, bool relu) {
  Case c = unfused;
  c.p.relu_input = relu;
  SCOPED_TRACE(describe(c) + (relu ? " with a fused ReLU" : ""));
  const Shape ws{c.x[1], 1, c.r, c.s};
  const Shape ys = ops::conv2d_output_shape(c.x, ws, c.p);
  const auto pr = dw::make_problem(c.x, ws, ys, c.p);
  ASSERT_TRUE(pr.has_value());
  ASSERT_EQ(pr->relu_input, relu);
  const auto x = test::random_vector(size_t(c.x.numel()), 1);
  std::vector<float> x_ref = x;  // what the reference convolution reads
  if (relu)
    for (float& v : x_ref) v = v > 0.0f ? v : 0.0f;
  const auto w = test::random_vector(size_t(ws.numel()), 2);
  const auto b = test::random_vector(size_t(c.x[1]), 3);
  const auto g = test::random_vector(size_t(ys.numel()), 4);
  const auto dw0 = test::random_vector(size_t(ws.numel()), 5);
  const auto db0 = test::random_vector(size_t(c.x[1]), 6);

  Context cpu;
  Tensor tx = Tensor::from_vector(cpu, c.x, x_ref), tw = Tensor::from_vector(cpu, ws, w);
  Tensor tb = Tensor::from_vector(cpu, Shape{c.x[1]}, b), tg = Tensor::from_vector(cpu, ys, g);
  Tensor ty = Tensor::empty(cpu, ys), tdx = Tensor::empty(cpu, c.x);
  Tensor tdw = Tensor::from_vector(cpu, ws, dw0),
         tdb = Tensor::from_vector(cpu, Shape{c.x[1]}, db0);
  ops::conv2d_fwd(cpu, tx, tw, &tb, ty, unfused.p);
  ops::conv2d_bwd_data(cpu, tg, tw, tdx, unfused.p);
  ops::conv2d_bwd_filter(cpu, tx, tg, tdw, &tdb, unfused.p);
  const auto ref_y = ty.to_vector();
  auto ref_dx = tdx.to_vector();
  if (relu)
    for (size_t i = 0; i < ref_dx.size(); ++i)
      if (!(x[i] > 0.0f)) ref_dx[i] = 0.0f;
  const auto ref_dw = tdw.to_vector(), ref_db = tdb.to_vector();

  Framed fx = framed(x, kNaN), fw = framed(w, kNaN), fb = framed(b, kNaN), fg = framed(g, kNaN);
  {
    ASSERT_TRUE(dw::with_kernel_size(c.r, c.s, [&](auto rr, auto ss) {
      constexpr int R = decltype(rr)::value, S = decltype(ss)::value;
      // forward, with bias (V = 4) and without (V = 1)
      for (int with_bias = 0; with_bias < 2; ++with_bias) {
        const auto t = dw::plan_tiling(dw::Direction::Forward, *pr, sizeof(float));
        ASSERT_TRUE(t.has_value());
        Framed fy = framed(std::vector<float>(size_t(ys.numel()), kNaN), kOutGuard);
        launch(dw::tile_grid(*pr, *t), t->smem_bytes(), [&] {
          if (with_bias)
            dw::depthwise_fwd_kernel<float, R, S, 4>(fx.data(), fw.data(), fb.data(), fy.data(),
                                                     *pr, *t);
          else
            dw::depthwise_fwd_kernel<float, R, S, 1>(fx.data(), fw.data(), nullptr, fy.data(), *pr,
                                                     *t);
        });
        EXPECT_TRUE(fy.guards_intact()) << "forward wrote outside y";
        std::vector<float> want = ref_y;
        if (!with_bias)
          for (int64_t i = 0; i < ys.numel(); ++i)
            want[size_t(i)] -= b[size_t(i / (ys[2] * ys[3]) % ys[1])];
        const auto got = fy.body();
        for (float v : got) ASSERT_TRUE(std::isfinite(v)) << "forward: unwritten or NaN output";
        EXPECT_LE(test::normalized_error(got, want), 1e-5) << "forward, bias " << with_bias;
      }
      // backward data (V = 4 and V = 1)
      for (int v4 = 0; v4 < 2; ++v4) {
        const auto t = dw::plan_tiling(dw::Direction::BackwardData, *pr, sizeof(float));
        ASSERT_TRUE(t.has_value());
        Framed fdx = framed(std::vector<float>(size_t(c.x.numel()), kNaN), kOutGuard);
        launch(dw::tile_grid(*pr, *t), t->smem_bytes(), [&] {
          const float* mask = relu ? fx.data() : nullptr;
          if (v4)
            dw::depthwise_bwd_data_kernel<float, R, S, 4>(fg.data(), fw.data(), mask, fdx.data(),
                                                          *pr, *t);
          else
            dw::depthwise_bwd_data_kernel<float, R, S, 1>(fg.data(), fw.data(), mask, fdx.data(),
                                                          *pr, *t);
        });
        EXPECT_TRUE(fdx.guards_intact()) << "backward data wrote outside dx";
        const auto got = fdx.body();
        for (float v : got) ASSERT_TRUE(std::isfinite(v)) << "backward data: unwritten or NaN";
        EXPECT_LE(test::normalized_error(got, ref_dx), 1e-5) << "backward data, V4 " << v4;
      }
      // backward filter: the library's split, and one that forces a single chunk / many chunks
      const auto t = dw::plan_tiling(dw::Direction::BackwardFilter, *pr, sizeof(float));
      ASSERT_TRUE(t.has_value());
      const dw::FilterSplit splits[] = {dw::plan_filter_split(*pr, *t),
                                        dw::plan_filter_split(*pr, *t, int64_t(1) << 40, 1),
                                        dw::plan_filter_split(*pr, *t, 1, 1 << 20)};
      for (const dw::FilterSplit& sp : splits) {
        SCOPED_TRACE(detail::cat(sp.chunks, " chunks of ", sp.units_per_chunk, " units"));
        Framed fdw = framed(dw0, kOutGuard), fdb = framed(db0, kOutGuard);
        const size_t pbytes = dw::filter_partials_bytes(*pr, sp);
        Framed part = framed(std::vector<float>(pbytes / sizeof(float), kNaN), kOutGuard);
        const dim3 grid(unsigned(dw::ceil_div(pr->c, t->planes)), unsigned(sp.chunks));
        launch(grid, t->smem_bytes(), [&] {
          dw::depthwise_bwd_filter_kernel<float, R, S>(fx.data(), fg.data(), part.data(),
                                                       fdw.data(), fdb.data(), *pr, *t, sp);
        });
        if (sp.chunks > 1) {
          for (float v : part.body()) ASSERT_TRUE(std::isfinite(v)) << "partial not written";
          const int64_t total = pr->c * (R * S + 1);
          launch(dim3(unsigned(dw::ceil_div(total, dw::kThreads))), 0, [&] {
            dw::depthwise_bwd_filter_finish_kernel<float>(part.data(), sp.chunks, pr->c, R * S,
                                                          fdw.data(), fdb.data());
          });
        }
        EXPECT_TRUE(fdw.guards_intact() && fdb.guards_intact() && part.guards_intact())
            << "backward filter wrote outside dw / dbias / partials";
        EXPECT_LE(test::normalized_error(fdw.body(), ref_dw), 1e-5) << "dw";
        EXPECT_LE(test::normalized_error(fdb.body(), ref_db), 1e-5) << "dbias";
      }
    }));
  }
}

TEST(DepthwiseEmulation, AllDirectionsMatchCpuReference) {
  for (const Case& c : cases()) check_case(c, false);
}

TEST(DepthwiseEmulation, FusedReluMatchesTheUnfusedReference) {
  for (const Case& c : cases()) check_case(c, true);
}

// The planner's promises: tiles within the shared-memory budget, staged extents large enough
// for every tap, chunks covering every unit once.
TEST(DepthwiseEmulation, PlansAreConsistent) {
  bool many_planes = false, ragged_planes = false, wide = false, row_tiles = false,
       col_tiles = false;
  for (const Case& c : cases()) {
    SCOPED_TRACE(describe(c));
    const Shape ws{c.x[1], 1, c.r, c.s};
    const auto pr = dw::make_problem(c.x, ws, ops::conv2d_output_shape(c.x, ws, c.p), c.p);
    ASSERT_TRUE(pr.has_value());
    for (auto d :
         {dw::Direction::Forward, dw::Direction::BackwardData, dw::Direction::BackwardFilter}) {
      const auto t = dw::plan_tiling(d, *pr, sizeof(float));
      ASSERT_TRUE(t.has_value());
      EXPECT_LE(t->smem_bytes(), dw::kMaxSharedBytes);
      EXPECT_EQ(dw::kThreads % t->planes, 0);
      EXPECT_LE(int64_t(t->tile_h) * t->tile_w, dw::kTileOutputs);
      const int64_t group = d == dw::Direction::BackwardFilter ? pr->c : pr->n * pr->c;
      many_planes |= t->threads_per_plane() < 32;
      wide |= t->threads_per_plane() > 32;
      ragged_planes |= t->planes > 1 && group % t->planes != 0;
      row_tiles |= t->tiles_h > 1;
      col_tiles |= t->tiles_w > 1;
      if (d == dw::Direction::BackwardFilter) {
        const auto sp = dw::plan_filter_split(*pr, *t);
        EXPECT_GE(sp.chunks * sp.units_per_chunk, sp.units);
        EXPECT_LT((sp.chunks - 1) * sp.units_per_chunk, sp.units);  // no empty chunk
      }
    }
  }
  // The cases reach every path of the kernels.
  EXPECT_TRUE(many_planes && wide && ragged_planes && row_tiles && col_tiles)
      << many_planes << wide << ragged_planes << row_tiles << col_tiles;

  // Not depthwise, or not covered: grouped, channel multiplier 2, unsupported kernel size.
  const Shape x{2, 8, 8, 8};
  EXPECT_FALSE(dw::covers(dw::Direction::Forward, x, Shape{8, 2, 3, 3}, Shape{2, 8, 8, 8},
                          Conv2dParams::make(1, 1, 1, 4)));
  EXPECT_FALSE(dw::covers(dw::Direction::Forward, x, Shape{16, 1, 3, 3}, Shape{2, 16, 8, 8},
                          Conv2dParams::make(1, 1, 1, 8)));
  EXPECT_FALSE(dw::covers(dw::Direction::Forward, x, Shape{8, 1, 4, 4}, Shape{2, 8, 7, 7},
                          Conv2dParams::make(1, 1, 1, 8)));
  EXPECT_TRUE(dw::covers(dw::Direction::BackwardFilter, x, Shape{8, 1, 5, 5}, Shape{2, 8, 8, 8},
                         Conv2dParams::make(1, 4, 2, 8)));
  // A dilation whose 1x1 tile alone exceeds the shared-memory budget goes to cuDNN.
  EXPECT_FALSE(dw::covers(dw::Direction::Forward, Shape{1, 2, 300, 300}, Shape{2, 1, 7, 7},
                          Shape{1, 2, 300, 300}, Conv2dParams::make(1, 120, 40, 2)));
}

}  // namespace
}  // namespace cudarts
