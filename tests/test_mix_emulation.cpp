// The MixedOp mixing kernels (cuda/mix_kernels.cuh: mix_fwd, mix_bwd, add_n, the scores' first
// pass, mix_bwd_scores, softmax_many, arch_grad_many, channel_shuffle) run as host code under the
// emulation of cuda_emulation.h, in the launch geometry of cuda/nas_kernels.cu, against the CPU ops
// (ops::mix_fwd, mix_bwd, add_n, mix_scores, mix_bwd_scores on a CPU context). The scores' second
// pass (sum_partials_kernel, run on an H100 with the first version) is a fixed-order sum of each
// row here. Buffers are framed by guards; a null entry must be neither read (its pointer is null)
// nor written. Built with the CUDA backend (it needs the CUDA headers), runs without a GPU.
#include <cmath>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "launch.cuh"
#include "test_util.h"

#include "emulated_attributes.h"

#include "mix_kernels.cuh"

namespace cudarts {
namespace {

namespace mx = cuda::mix;
using F = emu::Framed<float>;
using D = emu::Framed<double>;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// Candidates 0 .. k-1 of n elements; `null` lists the null ones (Zero candidates).
void run_case(int k, int64_t n, const std::vector<int>& null) {
  SCOPED_TRACE(detail::cat("K = ", k, ", n = ", n));
  Context ctx;
  auto is_null = [&](int i) { return std::find(null.begin(), null.end(), i) != null.end(); };
  std::vector<std::vector<float>> xv;
  std::vector<F> fx;
  std::vector<Tensor> xt;
  mx::MixInputs in{};
  for (int i = 0; i < k; ++i) {
    xv.push_back(test::random_vector(size_t(n), 80 + uint32_t(i)));
    fx.push_back(emu::framed(xv.back(), kNaN));
    xt.push_back(Tensor::from_vector(ctx, Shape{n}, xv.back()));
  }
  std::vector<const Tensor*> xs;
  for (int i = 0; i < k; ++i) {
    in.x[i] = is_null(i) ? nullptr : fx[size_t(i)].data();
    xs.push_back(is_null(i) ? nullptr : &xt[size_t(i)]);
  }
  std::vector<float> wv;
  for (int i = 0; i < k; ++i) wv.push_back(0.5f + 0.125f * float(i));
  const std::vector<float> dyv = test::random_vector(size_t(n), 91);
  F fw = emu::framed(wv, kNaN), fdy = emu::framed(dyv, kNaN);
  Tensor w = Tensor::from_vector(ctx, Shape{k}, wv), dy = Tensor::from_vector(ctx, Shape{n}, dyv);
  const unsigned blocks = unsigned(cuda::grid_for(n));

  // mix_fwd.
  Tensor y = Tensor::empty(ctx, Shape{n});
  ops::mix_fwd(ctx, w, xs, y);
  F fy = emu::framed(std::vector<float>(size_t(n), kNaN), emu::kOutGuard);
  emu::run_grid(dim3(blocks), [&] { mx::mix_fwd_kernel(fw.data(), in, k, n, fy.data()); });
  EXPECT_TRUE(fy.guards_intact());
  EXPECT_LT(emu::rel_error(fy.body(), y.to_vector()), 1e-6);

  // mix_bwd: a null candidate's gradient is not given and keeps its values.
  std::vector<Tensor> dt;
  std::vector<Tensor*> dxs;
  std::vector<F> fd;
  mx::MixOutputs out{};
  for (int i = 0; i < k; ++i) {
    dt.push_back(Tensor::empty(ctx, Shape{n}));
    fd.push_back(
        emu::framed(std::vector<float>(size_t(n), is_null(i) ? 7.0f : kNaN), emu::kOutGuard));
  }
  for (int i = 0; i < k; ++i) {
    dxs.push_back(is_null(i) ? nullptr : &dt[size_t(i)]);
    out.x[i] = is_null(i) ? nullptr : fd[size_t(i)].data();
  }
  ops::mix_bwd(ctx, w, dy, dxs);
  emu::run_grid(dim3(blocks), [&] { mx::mix_bwd_kernel(fw.data(), fdy.data(), out, k, n); });
  auto check_grads = [&] {
    for (int i = 0; i < k; ++i) {
      EXPECT_TRUE(fd[size_t(i)].guards_intact()) << i;
      if (is_null(i))
        EXPECT_EQ(fd[size_t(i)].body(), std::vector<float>(size_t(n), 7.0f)) << i;
      else
        EXPECT_EQ(fd[size_t(i)].body(), dt[size_t(i)].to_vector()) << i;  // one product: exact
    }
  };
  check_grads();

  // The scores: per-block partials (grid (B, K)), then each row summed in order.
  const int64_t parts = cuda::partial_count(n);
  Tensor g = Tensor::empty(ctx, Shape{k});
  ops::mix_scores(ctx, dy, xs, g);
  D partials = emu::framed(std::vector<double>(size_t(k * parts), NAN), double(emu::kOutGuard));
  emu::run_grid(dim3(unsigned(parts), unsigned(k)),
                [&] { mx::mix_scores_partials_kernel(fdy.data(), in, n, partials.data()); });
  EXPECT_TRUE(partials.guards_intact());
  const std::vector<double> pv = partials.body();
  const std::vector<float> gc = g.to_vector();
  for (int i = 0; i < k; ++i) {
    double s = 0.0;
    for (int64_t b = 0; b < parts; ++b) s += pv[size_t(i * parts + b)];
    EXPECT_NEAR(s, gc[size_t(i)], 1e-5 * (1.0 + std::abs(gc[size_t(i)]))) << "score " << i;
  }

  // mix_bwd_scores (k <= 8): the gradients, and partials with mix_scores' bits (same blocks,
  // same order).
  if (k <= mx::kMaxFusedScores) {
    for (int i = 0; i < k; ++i)
      fd[size_t(i)] =
          emu::framed(std::vector<float>(size_t(n), is_null(i) ? 7.0f : kNaN), emu::kOutGuard);
    for (int i = 0; i < k; ++i) out.x[i] = is_null(i) ? nullptr : fd[size_t(i)].data();
    D fused = emu::framed(std::vector<double>(size_t(k * parts), NAN), double(emu::kOutGuard));
    emu::run_grid(dim3(unsigned(parts)), [&] {
      mx::mix_bwd_scores_kernel(fw.data(), fdy.data(), in, out, k, n, fused.data());
    });
    EXPECT_TRUE(fused.guards_intact());
    EXPECT_EQ(fused.body(), pv);
    check_grads();
  }
}

// add_n of `terms` tensors in the launcher's chunks: the first 64, then y and the next 63.
void run_add_n(int terms, int64_t n) {
  SCOPED_TRACE(detail::cat(terms, " terms, n = ", n));
  Context ctx;
  std::vector<F> fx;
  std::vector<Tensor> xt;
  std::vector<const Tensor*> xs;
  for (int i = 0; i < terms; ++i) {
    const std::vector<float> v = test::random_vector(size_t(n), 100 + uint32_t(i));
    fx.push_back(emu::framed(v, kNaN));
    xt.push_back(Tensor::from_vector(ctx, Shape{n}, v));
  }
  for (auto& t : xt) xs.push_back(&t);
  Tensor y = Tensor::empty(ctx, Shape{n});
  ops::add_n(ctx, xs, y);
  F fy = emu::framed(std::vector<float>(size_t(n), kNaN), emu::kOutGuard);
  int done = 0;
  while (done < terms) {
    mx::MixInputs part{};
    int m = 0;
    if (done > 0) part.x[m++] = fy.data();
    while (m < mx::kMaxMixInputs && done < terms) part.x[m++] = fx[size_t(done++)].data();
    emu::run_grid(dim3(unsigned(cuda::grid_for(n))),
                  [&] { mx::add_n_kernel(part, m, n, fy.data()); });
  }
  EXPECT_TRUE(fy.guards_intact());
  EXPECT_EQ(fy.body(), y.to_vector());  // left to right in float, as the CPU: the same bits
}

// softmax_many and arch_grad_many: rows of 8, 3, 8 and 1 entries; rows 0 and 2 add to one
// gradient (one lane, in row order), as the launcher groups them.
void run_rows() {
  Context ctx;
  const std::vector<int64_t> len{8, 3, 8, 1};
  const std::vector<int> lane{0, 1, 0, 2};
  std::vector<F> fa, fg, fp, fd;
  std::vector<Tensor> ta, tg, td;
  mx::SoftmaxRows sr{};
  mx::ArchGradRows ar{};
  for (size_t r = 0; r < len.size(); ++r) {
    const std::vector<float> a = test::random_vector(size_t(len[r]), 120 + uint32_t(r), 2.0f),
                             g = test::random_vector(size_t(len[r]), 130 + uint32_t(r));
    fa.push_back(emu::framed(a, kNaN));
    fg.push_back(emu::framed(g, kNaN));
    fp.push_back(emu::framed(std::vector<float>(size_t(len[r]), kNaN), emu::kOutGuard));
    fd.push_back(emu::framed(std::vector<float>(size_t(len[r]), 0.5f), emu::kOutGuard));
    ta.push_back(Tensor::from_vector(ctx, Shape{len[r]}, a));
    tg.push_back(Tensor::from_vector(ctx, Shape{len[r]}, g));
    td.push_back(Tensor::full(ctx, Shape{len[r]}, 0.5f));
  }
  for (size_t r = 0; r < len.size(); ++r) {
    sr.logits[r] = fa[r].data();
    sr.probs[r] = fp[r].data();
    sr.k[r] = int(len[r]);
    ar.alpha[r] = fa[r].data();
    ar.g[r] = fg[r].data();
    ar.dalpha[r] = fd[size_t(r == 2 ? 0 : r)].data();  // row 2 adds to row 0's gradient
    ar.k[r] = int(len[r]);
    ar.lane[r] = lane[r];
  }
  emu::run_blocks(dim3(1), mx::kMaxRows, [&] { mx::softmax_many_kernel(sr, int(len.size())); });
  emu::run_blocks(dim3(1), mx::kMaxRows,
                  [&] { mx::arch_grad_many_kernel(ar, int(len.size()), 3); });
  for (size_t r = 0; r < len.size(); ++r) {
    Tensor p = Tensor::empty(ctx, Shape{len[r]});
    ops::softmax(ctx, ta[r], p);
    EXPECT_TRUE(fp[r].guards_intact() && fd[r].guards_intact()) << r;
    EXPECT_LT(emu::rel_error(fp[r].body(), p.to_vector()), 1e-7) << "softmax row " << r;
  }
  ops::arch_grad_many(ctx, {&ta[0], &ta[1], &ta[2], &ta[3]}, {&tg[0], &tg[1], &tg[2], &tg[3]},
                      {&td[0], &td[1], &td[0], &td[3]});
  for (size_t r : {size_t(0), size_t(1), size_t(3)})
    EXPECT_LT(emu::rel_error(fd[r].body(), td[r].to_vector()), 1e-7) << "gradient " << r;
  EXPECT_EQ(fd[2].body(), std::vector<float>(8, 0.5f));  // nobody's gradient: untouched
}

// PC-DARTS's channel shuffle of a (3, 12, 5, 7) tensor in 2, 3, 4 and 12 groups (and 1: a copy),
// 5 blocks of the launcher's geometry, against the CPU op.
void run_shuffle() {
  Context ctx;
  const Shape s{3, 12, 5, 7};
  const std::vector<float> xv = test::random_vector(size_t(s.numel()), 140);
  Tensor x = Tensor::from_vector(ctx, s, xv);
  F fx = emu::framed(xv, kNaN);
  for (int groups : {1, 2, 3, 4, 12}) {
    Tensor y = Tensor::empty(ctx, s);
    ops::channel_shuffle(ctx, x, groups, y);
    F fy = emu::framed(std::vector<float>(size_t(s.numel()), kNaN), emu::kOutGuard);
    emu::run_grid(dim3(unsigned(cuda::grid_for(s.numel()))), [&] {
      mx::channel_shuffle_kernel(fx.data(), s[0], s[1], s[2] * s[3], groups, fy.data());
    });
    EXPECT_TRUE(fy.guards_intact()) << groups;
    EXPECT_EQ(fy.body(), y.to_vector()) << groups << " groups";
  }
}

TEST(MixEmulation, KernelsMatchTheCpuOps) {
  run_case(4, 8 * 16 * 8 * 8, {0});  // 32 partial sums per score, a Zero candidate first
  run_case(8, 3 * 5 * 7 * 9, {1, 6});
  run_case(10, 2 * 3 * 4 * 5, {0});  // past the fused kernel's 8: the two kernels
  run_shuffle();
  run_case(1, 7, {});
  run_add_n(3, 1000);
  run_add_n(70, 300);  // two launches, the second continuing from y
  run_rows();
}

}  // namespace
}  // namespace cudarts
