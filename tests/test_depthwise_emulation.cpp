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

// The kernels' headers take the emulation's synchronous stand-ins for the asynchronous copies.
#define CUDARTS_KERNEL_EMULATION

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
      // 20 x 50 tiles: 1000 outputs, so the last of a thread's four items falls past the tile for
      // some lanes while later tile rows exist (the filter gradient's item bound)
      {"3x3 50 wide, three tile rows", {1, 2, 45, 50}, 3, 3, params(1, 1, 1, 2)},
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
      // backward data: V = 4 with the launchers' stride instance, V = 1 and V = 4 with the
      // general one (at stride 1 the unit-stride instance must give the general one's bits)
      std::vector<std::vector<float>> bwd;
      for (int variant = 0; variant < 3; ++variant) {
        const auto t = dw::plan_tiling(dw::Direction::BackwardData, *pr, sizeof(float));
        ASSERT_TRUE(t.has_value());
        Framed fdx = framed(std::vector<float>(size_t(c.x.numel()), kNaN), kOutGuard);
        launch(dw::tile_grid(*pr, *t), t->smem_bytes(), [&] {
          const float* mask = relu ? fx.data() : nullptr;
          if (variant == 0)
            dw::with_stride_kind(*pr, [&](auto unit) {
              dw::depthwise_bwd_data_kernel<float, R, S, 4, decltype(unit)::value>(
                  fg.data(), fw.data(), mask, fdx.data(), *pr, *t);
            });
          else if (variant == 1)
            dw::depthwise_bwd_data_kernel<float, R, S, 1, false>(fg.data(), fw.data(), mask,
                                                                 fdx.data(), *pr, *t);
          else
            dw::depthwise_bwd_data_kernel<float, R, S, 4, false>(fg.data(), fw.data(), mask,
                                                                 fdx.data(), *pr, *t);
        });
        EXPECT_TRUE(fdx.guards_intact()) << "backward data wrote outside dx";
        const auto got = fdx.body();
        for (float v : got) ASSERT_TRUE(std::isfinite(v)) << "backward data: unwritten or NaN";
        EXPECT_LE(test::normalized_error(got, ref_dx), 1e-5)
            << "backward data, variant " << variant;
        bwd.push_back(got);
      }
      EXPECT_EQ(bwd[0], bwd[2]) << "the launchers' stride instance changed bits";
      // backward filter: the library's split, and one that forces a single chunk / many chunks
      const auto t = dw::plan_tiling(dw::Direction::BackwardFilter, *pr, sizeof(float));
      ASSERT_TRUE(t.has_value());
      const dw::FilterSplit splits[] = {dw::plan_filter_split(*pr, *t),
                                        dw::plan_filter_split(*pr, *t, int64_t(1) << 40, 1),
                                        dw::plan_filter_split(*pr, *t, 1, 1 << 20)};
      // (each split also with the dy values preloaded, depthwise_bench's variant 4, and with two
      // x tile buffers, the launcher's choice where they fit: the same bits as the one-buffer
      // kernel; the emulation copies at once)
      std::vector<float> library_dw;
      const char* const variants[3] = {"", ", dy preloaded", ", two tile buffers"};
      for (int variant = 0; variant < 3; ++variant)
        for (const dw::FilterSplit& sp : splits) {
          if (variant == 2 && !dw::double_buffer_fits(*t)) continue;
          SCOPED_TRACE(detail::cat(sp.chunks, " chunks of ", sp.units_per_chunk, " units",
                                   variants[variant]));
          Framed fdw = framed(dw0, kOutGuard), fdb = framed(db0, kOutGuard);
          const size_t pbytes = dw::filter_partials_bytes(*pr, sp);
          Framed part = framed(std::vector<float>(pbytes / sizeof(float), kNaN), kOutGuard);
          const dim3 grid(unsigned(dw::ceil_div(pr->c, t->planes)), unsigned(sp.chunks));
          launch(grid, t->smem_bytes() + (variant == 2 ? t->tile_bytes : 0), [&] {
            if (variant == 1)
              dw::depthwise_bwd_filter_kernel<float, R, S, true>(
                  fx.data(), fg.data(), part.data(), fdw.data(), fdb.data(), *pr, *t, sp);
            else if (variant == 2)
              dw::depthwise_bwd_filter_kernel<float, R, S, false, true>(
                  fx.data(), fg.data(), part.data(), fdw.data(), fdb.data(), *pr, *t, sp);
            else
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
          if (&sp == &splits[0]) {
            if (variant == 0) library_dw = fdw.body();
            EXPECT_TRUE(fdw.body() == library_dw) << "the variant changed the bits";
          }
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

// The group kernels (an edge's leading convolutions: the DARTS four, 3x3 and 5x5 at dilation 1
// and 2 with "same" padding): every output bit for bit what the single kernels give (forward
// without bias; backward data the priors and each member's masked gradient summed left to right
// in float, as add_n does), and within 1e-5 of the CPU group ops.
void check_group(const char* name, const Shape& xs, int stride, bool relu, int prior_count) {
  SCOPED_TRACE(detail::cat(name, " x ", xs, " stride ", stride, relu ? " relu" : "", ", ",
                           prior_count, " priors"));
  const int64_t c = xs[1];
  const int rs[] = {3, 5, 3, 5}, pads[] = {1, 2, 2, 4}, dils[] = {1, 1, 2, 2};
  std::vector<Shape> ws, ys;
  std::vector<Conv2dParams> ps;
  for (int j = 0; j < 4; ++j) {
    Conv2dParams p = params(stride, pads[j], dils[j], c);
    p.relu_input = relu;
    ps.push_back(p);
    ws.push_back(Shape{c, 1, rs[j], rs[j]});
    ys.push_back(ops::conv2d_output_shape(xs, ws.back(), p));
  }
  const auto x = test::random_vector(size_t(xs.numel()), 1);
  std::vector<std::vector<float>> w, g, pr;
  for (int j = 0; j < 4; ++j) {
    w.push_back(test::random_vector(size_t(ws[size_t(j)].numel()), 10 + uint32_t(j)));
    g.push_back(test::random_vector(size_t(ys[size_t(j)].numel()), 20 + uint32_t(j)));
  }
  for (int i = 0; i < prior_count; ++i)
    pr.push_back(test::random_vector(size_t(xs.numel()), 30 + uint32_t(i)));
  Framed fx = framed(x, kNaN);
  std::vector<Framed> fw, fg, fp;
  for (int j = 0; j < 4; ++j)
    fw.push_back(framed(w[size_t(j)], kNaN)), fg.push_back(framed(g[size_t(j)], kNaN));
  for (auto& v : pr) fp.push_back(framed(v, kNaN));
  // The CPU group ops.
  Context cpu;
  Tensor tx = Tensor::from_vector(cpu, xs, x);
  std::vector<Tensor> tw, tg, tp, ty;
  for (int j = 0; j < 4; ++j) {
    tw.push_back(Tensor::from_vector(cpu, ws[size_t(j)], w[size_t(j)]));
    tg.push_back(Tensor::from_vector(cpu, ys[size_t(j)], g[size_t(j)]));
    ty.push_back(Tensor::empty(cpu, ys[size_t(j)]));
  }
  for (auto& v : pr) tp.push_back(Tensor::from_vector(cpu, xs, v));
  std::vector<const Tensor*> wp, gp, pp;
  std::vector<Tensor*> yp;
  for (int j = 0; j < 4; ++j)
    wp.push_back(&tw[size_t(j)]), gp.push_back(&tg[size_t(j)]), yp.push_back(&ty[size_t(j)]);
  for (auto& t : tp) pp.push_back(&t);
  Tensor tdx = Tensor::empty(cpu, xs);
  ops::depthwise_group_fwd(cpu, tx, wp, ps, yp);
  ops::depthwise_group_bwd_data(cpu, gp, wp, ps, relu ? &tx : nullptr, pp, tdx);

  // Forward: the group kernel, then each member on the single kernel.
  const auto gf = dw::make_group(dw::Direction::Forward, xs, ws, ys, ps);
  ASSERT_TRUE(gf.has_value());
  const auto tf = dw::plan_group_tiling(dw::Direction::Forward, *gf, sizeof(float));
  ASSERT_TRUE(tf.has_value());
  std::vector<Framed> fy;
  dw::GroupInputs<float> gw{}, gg{};
  dw::GroupOutputs<float> gy{};
  for (int j = 0; j < 4; ++j) {
    fy.push_back(framed(std::vector<float>(size_t(ys[size_t(j)].numel()), kNaN), kOutGuard));
    gw.x[j] = fw[size_t(j)].data();
    gg.x[j] = fg[size_t(j)].data();
    gy.x[j] = fy.back().data();
  }
  launch(dw::tile_grid(gf->window, *tf), tf->smem_bytes(), [&] {
    dw::depthwise_group_fwd_kernel<float, dw::kOutputsInFlight>(fx.data(), gw, gy, *gf, *tf);
  });
  std::vector<std::vector<float>> single_dx;
  for (int j = 0; j < 4; ++j) {
    const auto pr1 = dw::make_problem(xs, ws[size_t(j)], ys[size_t(j)], ps[size_t(j)]);
    ASSERT_TRUE(pr1.has_value());
    const auto t1 = dw::plan_tiling(dw::Direction::Forward, *pr1, sizeof(float));
    const auto tb = dw::plan_tiling(dw::Direction::BackwardData, *pr1, sizeof(float));
    ASSERT_TRUE(t1.has_value() && tb.has_value());
    Framed one = framed(std::vector<float>(size_t(ys[size_t(j)].numel()), kNaN), kOutGuard);
    Framed d1 = framed(std::vector<float>(size_t(xs.numel()), kNaN), kOutGuard);
    ASSERT_TRUE(dw::with_kernel_size(rs[j], rs[j], [&](auto rr, auto ss) {
      constexpr int R = decltype(rr)::value, S = decltype(ss)::value;
      launch(dw::tile_grid(*pr1, *t1), t1->smem_bytes(), [&] {
        dw::depthwise_fwd_kernel<float, R, S, dw::kOutputsInFlight>(fx.data(), fw[size_t(j)].data(),
                                                                    nullptr, one.data(), *pr1, *t1);
      });
      launch(dw::tile_grid(*pr1, *tb), tb->smem_bytes(), [&] {
        dw::with_stride_kind(*pr1, [&](auto unit) {
          dw::depthwise_bwd_data_kernel<float, R, S, dw::kOutputsInFlight, decltype(unit)::value>(
              fg[size_t(j)].data(), fw[size_t(j)].data(), relu ? fx.data() : nullptr, d1.data(),
              *pr1, *tb);
        });
      });
    }));
    EXPECT_TRUE(fy[size_t(j)].guards_intact()) << "group forward wrote outside y " << j;
    EXPECT_EQ(fy[size_t(j)].body(), one.body()) << "forward of member " << j;
    EXPECT_LE(test::normalized_error(fy[size_t(j)].body(), ty[size_t(j)].to_vector()), 1e-5) << j;
    single_dx.push_back(d1.body());
  }

  // Backward data: the group kernel against add_n's sum of the priors and the single kernels'.
  const auto gb = dw::make_group(dw::Direction::BackwardData, xs, ws, ys, ps);
  ASSERT_TRUE(gb.has_value());
  const auto tb = dw::plan_group_tiling(dw::Direction::BackwardData, *gb, sizeof(float));
  ASSERT_TRUE(tb.has_value());
  dw::PriorInputs<float> gpr{};
  for (int i = 0; i < prior_count; ++i) gpr.x[i] = fp[size_t(i)].data();
  // With one tile buffer and with two (the next member's tile staged while the current one is
  // read; the emulation copies at once): the same bits.
  ASSERT_TRUE(dw::double_buffer_fits(*tb)) << "the cases are meant to reach both";
  std::vector<float> got[2];
  for (int two = 0; two < 2; ++two) {
    SCOPED_TRACE(two ? "two tile buffers" : "one tile buffer");
    Framed fdx = framed(std::vector<float>(size_t(xs.numel()), kNaN), kOutGuard);
    launch(dw::tile_grid(gb->window, *tb), two ? 2 * tb->tile_bytes : tb->smem_bytes(), [&] {
      dw::with_stride_kind(gb->window, [&](auto unit) {
        if (two)
          dw::depthwise_group_bwd_data_kernel<float, dw::kOutputsInFlight, decltype(unit)::value,
                                              true>(gg, gw, relu ? fx.data() : nullptr, gpr,
                                                    prior_count, fdx.data(), *gb, *tb);
        else
          dw::depthwise_group_bwd_data_kernel<float, dw::kOutputsInFlight, decltype(unit)::value,
                                              false>(gg, gw, relu ? fx.data() : nullptr, gpr,
                                                     prior_count, fdx.data(), *gb, *tb);
      });
    });
    EXPECT_TRUE(fdx.guards_intact()) << "group backward wrote outside dx";
    got[two] = fdx.body();
  }
  EXPECT_EQ(got[0], got[1]) << "two tile buffers changed the bits";
  const std::vector<float>& group_dx = got[1];
  std::vector<const std::vector<float>*> terms;
  for (auto& v : pr) terms.push_back(&v);
  for (auto& v : single_dx) terms.push_back(&v);
  std::vector<float> want(size_t(xs.numel()));
  for (size_t i = 0; i < want.size(); ++i) {
    float acc = (*terms[0])[i];
    for (size_t k = 1; k < terms.size(); ++k) acc += (*terms[k])[i];
    want[i] = acc;
  }
  EXPECT_EQ(group_dx, want);
  EXPECT_LE(test::normalized_error(group_dx, tdx.to_vector()), 1e-5);
}

TEST(DepthwiseEmulation, GroupKernelsRepeatTheSingleKernelsBits) {
  check_group("one plane per block", {2, 3, 32, 32}, 1, true, 3);
  check_group("stride 2, odd sizes", {2, 3, 13, 11}, 2, true, 0);
  check_group("several planes per block", {3, 7, 8, 8}, 1, false, 1);
  check_group("ragged column tiles", {1, 2, 20, 70}, 1, true, 2);
  check_group("stride 2, several planes", {2, 5, 16, 16}, 2, false, 1);
  // Not a group the kernels take: mixed strides, an unsupported size, too many members.
  const Shape x{2, 4, 8, 8};
  const Conv2dParams p1 = params(1, 1, 1, 4), p2 = params(2, 1, 1, 4), p7 = params(1, 3, 1, 4);
  const Shape w3{4, 1, 3, 3}, w7{4, 1, 7, 7}, y1{2, 4, 8, 8}, y2{2, 4, 4, 4};
  EXPECT_FALSE(dw::make_group(dw::Direction::Forward, x, {w3, w3}, {y1, y2}, {p1, p2}));
  EXPECT_FALSE(dw::make_group(dw::Direction::Forward, x, {w3, w7}, {y1, y1}, {p1, p7}));
  EXPECT_FALSE(dw::make_group(dw::Direction::Forward, x, std::vector<Shape>(9, w3),
                              std::vector<Shape>(9, y1), std::vector<Conv2dParams>(9, p1)));
  EXPECT_TRUE(dw::make_group(dw::Direction::Forward, x, {w3}, {y1}, {p1}));
}

// The group filter gradients: every member's dw, added to its initial values, bit for bit what
// its single kernels (stage 1 with the member's own plan, then the finish when it has several
// chunks) give, and within 1e-5 of the CPU group op. Members: {kernel, padding, dilation, stride}.
struct FilterMemberCase {
  int r, pad, dil, stride;
};
void check_group_filter(const char* name, const Shape& xs, const std::vector<FilterMemberCase>& ms,
                        bool relu) {
  SCOPED_TRACE(detail::cat(name, " x ", xs, relu ? " relu" : ""));
  const int64_t c = xs[1];
  const size_t k = ms.size();
  std::vector<Shape> ws, ys;
  std::vector<Conv2dParams> ps;
  for (const FilterMemberCase& m : ms) {
    Conv2dParams p = params(m.stride, m.pad, m.dil, c);
    p.relu_input = relu;
    ps.push_back(p);
    ws.push_back(Shape{c, 1, m.r, m.r});
    ys.push_back(ops::conv2d_output_shape(xs, ws.back(), p));
  }
  const auto x = test::random_vector(size_t(xs.numel()), 1);
  std::vector<std::vector<float>> g, dw0;
  for (size_t j = 0; j < k; ++j) {
    g.push_back(test::random_vector(size_t(ys[j].numel()), 20 + uint32_t(j)));
    dw0.push_back(test::random_vector(size_t(ws[j].numel()), 50 + uint32_t(j)));
  }
  Framed fx = framed(x, kNaN);
  std::vector<Framed> fg, gdw;
  dw::GroupInputs<float> gg{};
  dw::GroupOutputs<float> gdwp{};
  for (size_t j = 0; j < k; ++j) {
    fg.push_back(framed(g[j], kNaN));
    gdw.push_back(framed(dw0[j], kOutGuard));
  }
  for (size_t j = 0; j < k; ++j) gg.x[j] = fg[j].data(), gdwp.x[j] = gdw[j].data();

  const auto gf = dw::make_group_filter(xs, ws, ys, ps);
  ASSERT_TRUE(gf.has_value());
  Framed part = framed(std::vector<float>(size_t(gf->partial_floats), kNaN), kOutGuard);
  size_t smem = 0;
  for (int j = 0; j < gf->count; ++j) smem = std::max(smem, gf->m[j].tiling.smem_bytes());
  launch(dim3(unsigned(gf->blocks_x), unsigned(gf->blocks_y), unsigned(gf->count)), smem, [&] {
    dw::depthwise_group_bwd_filter_kernel<float>(fx.data(), gg, part.data(), gdwp, *gf);
  });
  if (gf->finish_entries > 0)
    launch(dim3(unsigned(dw::ceil_div(gf->finish_entries, dw::kThreads))), 0,
           [&] { dw::depthwise_group_bwd_filter_finish_kernel<float>(part.data(), gdwp, *gf); });
  EXPECT_TRUE(part.guards_intact()) << "group filter gradient wrote outside its partials";

  // The CPU group op.
  Context cpu;
  Tensor tx = Tensor::from_vector(cpu, xs, x);
  std::vector<Tensor> tg, tdw;
  for (size_t j = 0; j < k; ++j) {
    tg.push_back(Tensor::from_vector(cpu, ys[j], g[j]));
    tdw.push_back(Tensor::from_vector(cpu, ws[j], dw0[j]));
  }
  std::vector<const Tensor*> gp;
  std::vector<Tensor*> dwp;
  for (size_t j = 0; j < k; ++j) gp.push_back(&tg[j]), dwp.push_back(&tdw[j]);
  ops::depthwise_group_bwd_filter(cpu, tx, gp, ps, dwp);

  int64_t chunked = 0;
  for (size_t j = 0; j < k; ++j) {
    const auto pr = dw::make_problem(xs, ws[j], ys[j], ps[j]);
    ASSERT_TRUE(pr.has_value());
    const auto t = dw::plan_tiling(dw::Direction::BackwardFilter, *pr, sizeof(float));
    ASSERT_TRUE(t.has_value());
    const dw::FilterSplit sp = dw::plan_filter_split(*pr, *t);
    EXPECT_EQ(gf->m[j].split.chunks, sp.chunks) << j;
    chunked += sp.chunks > 1 ? 1 : 0;
    Framed one = framed(dw0[j], kOutGuard);
    Framed p1 = framed(std::vector<float>(dw::filter_partials_bytes(*pr, sp) / sizeof(float), kNaN),
                       kOutGuard);
    ASSERT_TRUE(dw::with_kernel_size(ms[j].r, ms[j].r, [&](auto rr, auto ss) {
      constexpr int R = decltype(rr)::value, S = decltype(ss)::value;
      launch(dim3(unsigned(dw::ceil_div(pr->c, t->planes)), unsigned(sp.chunks)), t->smem_bytes(),
             [&] {
               dw::depthwise_bwd_filter_kernel<float, R, S>(fx.data(), fg[j].data(), p1.data(),
                                                            one.data(), nullptr, *pr, *t, sp);
             });
      if (sp.chunks > 1)
        launch(dim3(unsigned(dw::ceil_div(pr->c * (R * S + 1), dw::kThreads))), 0, [&] {
          dw::depthwise_bwd_filter_finish_kernel<float>(p1.data(), sp.chunks, pr->c, R * S,
                                                        one.data(), nullptr);
        });
    }));
    EXPECT_TRUE(gdw[j].guards_intact()) << "group filter gradient wrote outside dw " << j;
    EXPECT_EQ(gdw[j].body(), one.body()) << "filter gradient of member " << j;
    EXPECT_LE(test::normalized_error(gdw[j].body(), tdw[j].to_vector()), 1e-5) << j;
  }
  EXPECT_EQ(gf->finish_entries > 0, chunked > 0);
}

TEST(DepthwiseEmulation, GroupFilterGradientsRepeatTheSingleKernelsBits) {
  const std::vector<FilterMemberCase> darts_s1{
      {3, 1, 1, 1}, {5, 2, 1, 1}, {3, 2, 2, 1}, {5, 4, 2, 1}},
      darts_s2{{3, 1, 1, 2}, {5, 2, 1, 2}, {3, 2, 2, 2}, {5, 4, 2, 2}};
  check_group_filter("the DARTS four", {2, 3, 32, 32}, darts_s1, true);
  check_group_filter("the DARTS four, stride 2, odd sizes", {2, 3, 13, 11}, darts_s2, true);
  check_group_filter("several channels per block", {3, 7, 8, 8}, darts_s1, false);
  // Stride 1 members in 4 chunks, the stride-2 one in 1 (added into dw directly): the finish
  // covers only the chunked members' entries.
  check_group_filter("chunked and direct members", {1, 2, 64, 64},
                     {{3, 1, 1, 1}, {5, 2, 1, 2}, {3, 2, 2, 1}}, true);
  check_group_filter("one chunk each", {1, 2, 4, 4}, {{3, 1, 1, 1}, {5, 2, 1, 1}}, false);
  // Refused: an unsupported kernel size, too many members, an empty batch.
  const Shape x{2, 4, 8, 8}, w3{4, 1, 3, 3}, w7{4, 1, 7, 7}, y1{2, 4, 8, 8};
  const Conv2dParams p1 = params(1, 1, 1, 4), p7 = params(1, 3, 1, 4);
  EXPECT_FALSE(dw::make_group_filter(x, {w3, w7}, {y1, y1}, {p1, p7}));
  EXPECT_FALSE(dw::make_group_filter(x, std::vector<Shape>(9, w3), std::vector<Shape>(9, y1),
                                     std::vector<Conv2dParams>(9, p1)));
  EXPECT_FALSE(dw::make_group_filter(Shape{0, 4, 8, 8}, {w3}, {Shape{0, 4, 8, 8}}, {p1}));
  EXPECT_TRUE(dw::make_group_filter(x, {w3}, {y1}, {p1}));
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

// The kernels' cover (depthwise::covers, make_group) and the cost model's rule
// (src/kernel_rules.h) agree at the DARTS shapes and on the refusals: grouped, multiplier 2,
// a 4x4 kernel; a 1-channel 3x3 convolution (groups 1) is depthwise to both. The group takes
// 3x3 and 5x5 members only.
TEST(DepthwiseEmulation, CoverIsTheCostModelsRule) {
  struct Probe {
    Shape x, w;
    Conv2dParams p;
  };
  const Probe probes[] = {
      {{64, 16, 32, 32}, {16, 1, 3, 3}, Conv2dParams::make(1, 1, 1, 16)},
      {{64, 16, 32, 32}, {16, 1, 5, 5}, Conv2dParams::make(1, 4, 2, 16)},
      {{64, 32, 16, 16}, {32, 1, 5, 5}, Conv2dParams::make(2, 2, 1, 32)},
      {{2, 8, 9, 9}, {8, 1, 7, 7}, Conv2dParams::make(1, 3, 1, 8)},
      {{2, 8, 9, 9}, {8, 1, 3, 5}, Conv2dParams::make(1, 1, 1, 8)},
      {{3, 1, 6, 5}, {1, 1, 3, 3}, Conv2dParams::make(1, 1, 1, 1)},
      {{2, 8, 8, 8}, {8, 2, 3, 3}, Conv2dParams::make(1, 1, 1, 4)},
      {{2, 8, 8, 8}, {16, 1, 3, 3}, Conv2dParams::make(1, 1, 1, 8)},
      {{2, 8, 8, 8}, {8, 1, 4, 4}, Conv2dParams::make(1, 1, 1, 8)},
  };
  for (const Probe& pb : probes) {
    SCOPED_TRACE(detail::cat("x ", pb.x, " w ", pb.w, " groups ", pb.p.groups));
    const Shape y = ops::conv2d_output_shape(pb.x, pb.w, pb.p);
    const bool rule = kernel_rules::own_depthwise(pb.x, pb.w, pb.p);
    for (auto d :
         {dw::Direction::Forward, dw::Direction::BackwardData, dw::Direction::BackwardFilter})
      EXPECT_EQ(dw::covers(d, pb.x, pb.w, y, pb.p), rule);
    const bool group =
        dw::make_group(dw::Direction::Forward, pb.x, {pb.w}, {y}, {pb.p}).has_value();
    EXPECT_EQ(group, rule && kernel_rules::group_kernel_size(pb.w[2], pb.w[3]));
  }
}

}  // namespace
}  // namespace cudarts
