// The sampled methods' kernels (cuda/sample_kernels.cuh: Gumbel ranking, GDAS's soft sample and
// its backward, batch sum, moving-average scores, the log-sum-exp and rescale over a ranking or
// a mask) run as host code under the emulation of cuda_emulation.h, in the launch geometry of
// cuda/nas_kernels.cu (serial kernels in one thread), against the CPU ops on a CPU context. The
// moving-average scores' second pass (sum_partials_kernel, run on an H100 with the first
// version) is a fixed-order sum of each row here. Buffers are framed by guards. The device-side
// answers to invalid rankings (NaN outputs, documented in nas_kernels.cu), which the CPU refuses
// with an exception, are checked against that contract. Built with the CUDA backend (it needs
// the CUDA headers), runs without a GPU.
#include <cmath>
#include <limits>
#include <numeric>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "launch.cuh"
#include "test_util.h"

#include "emulated_attributes.h"

#include "sample_kernels.cuh"

namespace cudarts {
namespace {

namespace sk = cuda::sample;
using F = emu::Framed<float>;
using I = emu::Framed<int32_t>;
using D = emu::Framed<double>;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kIntGuard = -777;

F input(const std::vector<float>& v) {
  return emu::framed(v, kNaN);
}
F output(size_t n, float fill = kNaN) {
  return emu::framed(std::vector<float>(n, fill), emu::kOutGuard);
}
I ints(const std::vector<int32_t>& v) {
  return emu::framed(v, kIntGuard);
}
bool int_guards_intact(const I& f) {
  for (int64_t i = 0; i < emu::kGuard; ++i)
    if (f.all[size_t(i)] != kIntGuard || f.all[f.all.size() - 1 - size_t(i)] != kIntGuard)
      return false;
  return true;
}
bool all_nan(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isnan(x); });
}

// Gumbel ranking of segments of 8, 8, 3, 5, 1 and 300 logits (two blocks for the last), with
// tied keys, without and with a replay shift of the offset; then GDAS's soft sample of the
// second segment (its argmax is that segment's first ranked entry) and its backward.
TEST(SampleEmulation, GumbelRankingAndSoftSampleMatchTheCpuOps) {
  Context ctx;
  const std::vector<int32_t> offsets{0, 8, 16, 19, 24, 25, 325};
  const int64_t total = offsets.back(), segments = int64_t(offsets.size()) - 1;
  std::vector<float> logits = test::random_vector(size_t(total), 7, 2.0f);
  // Keys that tie (the noise makes finite keys distinct): -inf logits, and NaN ones, whose keys
  // sort as -inf; ties go to the lower index.
  logits[2] = logits[5] = -std::numeric_limits<float>::infinity();
  logits[6] = kNaN;
  Tensor lt = Tensor::from_vector(ctx, Shape{total}, logits);
  Tensor ot = Tensor::from_vector_i32(ctx, Shape{int64_t(offsets.size())}, offsets);
  F fl = input(logits);
  I fo = ints(offsets);
  const uint64_t seed = 1234, offset = 56;
  for (const uint64_t shift : {uint64_t(0), uint64_t(1) << 33}) {
    SCOPED_TRACE(detail::cat("shift ", shift));
    Tensor rt = Tensor::empty(ctx, Shape{total}, DType::I32);
    ops::gumbel_rank(ctx, lt, ot, seed, offset + shift, rt);
    I fr = ints(std::vector<int32_t>(size_t(total), -5));
    const uint64_t* shift_ptr = shift ? &shift : nullptr;
    emu::run_grid(dim3(unsigned(cuda::grid_for(total))), [&] {
      sk::gumbel_rank_kernel(fl.data(), fo.data(), segments, total, seed, offset, shift_ptr,
                             fr.data());
    });
    EXPECT_TRUE(int_guards_intact(fr));
    const std::vector<int32_t> want = rt.to_vector_i32();
    EXPECT_EQ(fr.body(), want);

    // The soft sample of segment 1 (logits 8 .. 16 drawn as elements first = 8 ..).
    const int64_t first = 8, k = 8;
    const float tau = 0.7f;
    std::vector<float> seg(logits.begin() + first, logits.begin() + first + k);
    Tensor st = Tensor::from_vector(ctx, Shape{k}, seg), soft = Tensor::empty(ctx, Shape{k});
    ops::gumbel_softmax(ctx, st, seed, offset + shift, first, tau, soft);
    F fs = input(seg), fsoft = output(size_t(k));
    emu::run_serial([&] {
      sk::gumbel_softmax_kernel(fs.data(), k, seed, offset, shift_ptr, first, tau, fsoft.data());
    });
    EXPECT_TRUE(fsoft.guards_intact());
    const std::vector<float> sv = soft.to_vector(), got = fsoft.body();
    EXPECT_LT(emu::rel_error(got, sv), 1e-7);
    EXPECT_NEAR(std::accumulate(got.begin(), got.end(), 0.0), 1.0, 1e-6);
    EXPECT_EQ(std::max_element(got.begin(), got.end()) - got.begin(), want[size_t(first)]);

    // Its backward adds to a non-zero dlogits.
    const std::vector<float> dsoft = test::random_vector(size_t(k), 11),
                             d0 = test::random_vector(size_t(k), 12);
    Tensor dst = Tensor::from_vector(ctx, Shape{k}, dsoft),
           dl = Tensor::from_vector(ctx, Shape{k}, d0);
    ops::gumbel_softmax_bwd(ctx, st, soft, dst, tau, dl);
    F fsv = input(sv), fds = input(dsoft), fdl = emu::framed(d0, emu::kOutGuard);
    emu::run_serial([&] {
      sk::gumbel_softmax_bwd_kernel(fs.data(), fsv.data(), fds.data(), k, tau, fdl.data());
    });
    EXPECT_TRUE(fdl.guards_intact());
    EXPECT_LT(emu::rel_error(fdl.body(), dl.to_vector()), 1e-7);
  }
  // Offsets that do not cover the logits (the CPU refuses them): uncovered positions get -1,
  // nothing outside the ranking is written.
  const std::vector<int32_t> partial{0, 8, 16};
  I fp = ints(partial);
  I fr = ints(std::vector<int32_t>(size_t(total), -5));
  emu::run_grid(dim3(unsigned(cuda::grid_for(total))), [&] {
    sk::gumbel_rank_kernel(fl.data(), fp.data(), 2, total, seed, offset, nullptr, fr.data());
  });
  EXPECT_TRUE(int_guards_intact(fr));
  const std::vector<int32_t> r = fr.body();
  for (int64_t j = 16; j < total; ++j) ASSERT_EQ(r[size_t(j)], -1) << j;
  std::vector<int32_t> head(r.begin(), r.begin() + 8);
  std::sort(head.begin(), head.end());
  for (int j = 0; j < 8; ++j) EXPECT_EQ(head[size_t(j)], j);  // still a permutation
}

// MovingAverage: the batch sum of a (5, 3, 10, 10) batch (two blocks of 256 threads) and the
// moving-average scores of K = 4 candidates with k_eval = 2 (two partial sums per row), then an
// invalid ranking: g is NaN, m is left as it was.
TEST(SampleEmulation, BatchSumAndMovingAverageScoresMatchTheCpuOps) {
  Context ctx;
  const int64_t n = 5, s = 3 * 10 * 10, k = 4;
  const std::vector<float> xv = test::random_vector(size_t(n * s), 21);
  Tensor x = Tensor::from_vector(ctx, Shape{n, 3, 10, 10}, xv),
         sum = Tensor::empty(ctx, Shape{3, 10, 10});
  ops::batch_sum(ctx, x, 0.25f, sum);
  F fx = input(xv), fsum = output(size_t(s));
  emu::run_grid(dim3(unsigned(cuda::grid_for(s))),
                [&] { sk::batch_sum_kernel(fx.data(), n, s, 0.25f, fsum.data()); });
  EXPECT_TRUE(fsum.guards_intact());
  EXPECT_LT(emu::rel_error(fsum.body(), sum.to_vector()), 1e-7);

  const std::vector<float> dyv = test::random_vector(size_t(s), 22),
                           muv = test::random_vector(size_t(k * s), 23),
                           mv = test::random_vector(size_t(k * s), 24);
  const std::vector<int32_t> ranking{2, 0, 3, 1};
  const int k_eval = 2;
  const float lr = 0.1f;
  Tensor dy = Tensor::from_vector(ctx, Shape{s}, dyv),
         mu = Tensor::from_vector(ctx, Shape{k, s}, muv),
         m = Tensor::from_vector(ctx, Shape{k, s}, mv), g = Tensor::empty(ctx, Shape{k});
  Tensor rt = Tensor::from_vector_i32(ctx, Shape{k}, ranking);
  ops::ma_update_scores(ctx, dy, mu, m, rt, k_eval, lr, g);
  const int64_t blocks = cuda::partial_count(s);
  ASSERT_EQ(blocks, 2);
  auto run = [&](const std::vector<int32_t>& rank, F& fm, std::vector<double>& partials) {
    F fdy = input(dyv), fmu = input(muv);
    I fr = ints(rank);
    D fp = emu::framed(std::vector<double>(size_t(k * blocks), 0.0), double(emu::kOutGuard));
    emu::run_grid(dim3(unsigned(blocks), unsigned(k)), [&] {
      sk::ma_update_partials_kernel(fdy.data(), fmu.data(), fm.data(), fr.data(), k_eval, k, s, lr,
                                    fp.data());
    });
    EXPECT_TRUE(fp.guards_intact() && fm.guards_intact());
    partials = fp.body();
  };
  F fm = emu::framed(mv, emu::kOutGuard);
  std::vector<double> partials;
  run(ranking, fm, partials);
  std::vector<float> gv(static_cast<size_t>(k));
  for (int64_t row = 0; row < k; ++row) {
    double t = 0.0;
    for (int64_t b = 0; b < blocks; ++b) t += partials[size_t(row * blocks + b)];
    gv[size_t(row)] = float(t);
  }
  EXPECT_LT(emu::rel_error(gv, g.to_vector()), 1e-7);
  EXPECT_LT(emu::rel_error(fm.body(), m.to_vector()), 1e-7);
  EXPECT_NE(fm.body(), mv);  // the evaluated rows moved

  F fm2 = emu::framed(mv, emu::kOutGuard);
  run({2, 9, 3, 1}, fm2, partials);  // 9 is not a candidate
  EXPECT_EQ(fm2.body(), mv);
  for (double p : partials) EXPECT_TRUE(std::isnan(p));
}

// ProxylessNAS: the log-sum-exp and rescale over ranking[0 .. 3) of K = 6, the same over a mask
// built by mark_ranked from two rankings (MixedOps sharing one alpha), an empty mask (-inf, no
// change), and invalid rankings (NaN answers).
TEST(SampleEmulation, LogSumExpAndRescaleMatchTheCpuOps) {
  Context ctx;
  const int64_t k = 6;
  const std::vector<float> av = test::random_vector(size_t(k), 31, 3.0f);
  const std::vector<int32_t> r1{4, 1, 5, 0, 2, 3}, r2{1, 2, 0, 3, 4, 5};
  const int count = 3;
  Tensor a = Tensor::from_vector(ctx, Shape{k}, av), lse = Tensor::empty(ctx, Shape{1});
  Tensor rt1 = Tensor::from_vector_i32(ctx, Shape{k}, r1),
         rt2 = Tensor::from_vector_i32(ctx, Shape{k}, r2);
  ops::masked_logsumexp(ctx, a, rt1, count, lse);
  F fa = emu::framed(av, emu::kOutGuard), flse = output(1);
  I fr1 = ints(r1), fr2 = ints(r2);
  emu::run_serial(
      [&] { sk::masked_logsumexp_kernel(fa.data(), fr1.data(), count, k, flse.data()); });
  EXPECT_TRUE(flse.guards_intact());
  EXPECT_LT(emu::rel_error(flse.body(), lse.to_vector()), 1e-7);

  const std::vector<float> old{0.75f};
  Tensor lo = Tensor::from_vector(ctx, Shape{1}, old);
  F flo = input(old);
  ops::proxyless_rescale(ctx, a, rt1, count, lo);
  emu::run_serial(
      [&] { sk::proxyless_rescale_kernel(fa.data(), fr1.data(), count, k, flo.data()); });
  EXPECT_TRUE(fa.guards_intact());
  EXPECT_LT(emu::rel_error(fa.body(), a.to_vector()), 1e-7);
  EXPECT_EQ(fa.body()[3], av[3]);  // outside the set: untouched

  // The mask of two rankings, then its log-sum-exp and rescale.
  Tensor mask = Tensor::zeros(ctx, Shape{k});
  ops::mark_ranked(ctx, rt1, 2, mask);
  ops::mark_ranked(ctx, rt2, 2, mask);
  F fmask = emu::framed(std::vector<float>(size_t(k), 0.0f), emu::kOutGuard);
  emu::run_serial([&] { sk::mark_ranked_kernel(fr1.data(), 2, k, fmask.data()); });
  emu::run_serial([&] { sk::mark_ranked_kernel(fr2.data(), 2, k, fmask.data()); });
  EXPECT_TRUE(fmask.guards_intact());
  EXPECT_EQ(fmask.body(), mask.to_vector());
  EXPECT_EQ(fmask.body(), (std::vector<float>{0, 1, 1, 0, 1, 0}));  // {4, 1} and {1, 2}
  Tensor b = Tensor::from_vector(ctx, Shape{k}, av), mlse = Tensor::empty(ctx, Shape{1});
  ops::mask_logsumexp(ctx, b, mask, mlse);
  F fb = emu::framed(av, emu::kOutGuard), fmlse = output(1);
  F fmask_in = input(fmask.body());
  emu::run_serial([&] { sk::mask_logsumexp_kernel(fb.data(), fmask_in.data(), k, fmlse.data()); });
  EXPECT_LT(emu::rel_error(fmlse.body(), mlse.to_vector()), 1e-7);
  ops::mask_rescale(ctx, b, mask, lo);
  emu::run_serial([&] { sk::mask_rescale_kernel(fb.data(), fmask_in.data(), k, flo.data()); });
  EXPECT_TRUE(fb.guards_intact());
  EXPECT_LT(emu::rel_error(fb.body(), b.to_vector()), 1e-7);
  EXPECT_EQ(fb.body()[0], av[0]);

  // An empty mask: -inf, alpha unchanged (as on the CPU).
  Tensor empty_mask = Tensor::zeros(ctx, Shape{k});
  Tensor c = Tensor::from_vector(ctx, Shape{k}, av);
  ops::mask_logsumexp(ctx, c, empty_mask, mlse);
  ops::mask_rescale(ctx, c, empty_mask, lo);
  F fe = input(std::vector<float>(size_t(k), 0.0f)), fc = emu::framed(av, emu::kOutGuard);
  emu::run_serial([&] { sk::mask_logsumexp_kernel(fc.data(), fe.data(), k, fmlse.data()); });
  emu::run_serial([&] { sk::mask_rescale_kernel(fc.data(), fe.data(), k, flo.data()); });
  EXPECT_EQ(fmlse.body()[0], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(mlse.to_vector()[0], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(fc.body(), av);
  EXPECT_EQ(c.to_vector(), av);

  // Invalid rankings (an entry outside [0, K)): the CPU refuses them; the kernels answer NaN.
  const std::vector<int32_t> bad{1, 6, 0};
  I fbad = ints(bad);
  Tensor bt = Tensor::from_vector_i32(ctx, Shape{3}, bad);
  EXPECT_THROW(ops::masked_logsumexp(ctx, a, bt, 3, lse), Error);
  emu::run_serial([&] { sk::masked_logsumexp_kernel(fb.data(), fbad.data(), 3, k, flse.data()); });
  EXPECT_TRUE(std::isnan(flse.body()[0]));
  F fd = emu::framed(av, emu::kOutGuard), fmd = output(size_t(k), 0.0f);
  emu::run_serial([&] { sk::proxyless_rescale_kernel(fd.data(), fbad.data(), 3, k, flo.data()); });
  emu::run_serial([&] { sk::mark_ranked_kernel(fbad.data(), 3, k, fmd.data()); });
  EXPECT_TRUE(fd.guards_intact() && fmd.guards_intact());
  EXPECT_TRUE(all_nan(fd.body()));
  EXPECT_TRUE(all_nan(fmd.body()));
}

}  // namespace
}  // namespace cudarts
