// The normalised-mix kernels (cuda/norm_mix_kernels.cuh: batchnorm_stats, mix_norm_fwd,
// mix_norm_bwd) run as host code under the emulation of cuda_emulation.h, in the launch order
// and geometry of cuda/norm_mix.cu, against the CPU ops (ops::batchnorm_stats, mix_norm_fwd,
// mix_norm_bwd on a CPU context). Every buffer is framed by guards (NaN before inputs, a marker
// around outputs), "=" outputs start as NaN, a gradient that is not given must keep its values.
// CUB's block sum is replaced by cuda_emulation.h's fixed-order sum (the same contract). Built with
// the CUDA backend (it needs the CUDA headers), runs without a GPU.
#include <cmath>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "launch.cuh"
#include "test_util.h"

#include "emulated_attributes.h"

#include "norm_mix_kernels.cuh"

namespace cudarts {
namespace {

namespace nm = cuda::norm_mix;
using F = emu::Framed<float>;
using D = emu::Framed<double>;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// The candidates of a case: kind 0 null, 1 plain, 2 normed.
struct Case {
  std::vector<int> kinds;
  Shape shape;
  bool scores, running;
};

void run_case(const Case& cs) {
  const int64_t k = int64_t(cs.kinds.size()), n = cs.shape[0], c = cs.shape[1],
                hw = cs.shape[2] * cs.shape[3], total = cs.shape.numel();
  SCOPED_TRACE(detail::cat("K = ", k, ", ", cs.shape, cs.scores ? ", scores" : "",
                           cs.running ? ", running statistics" : ""));
  Context ctx;
  // Inputs: candidates with a mean and a scale of their own, weights, dy.
  std::vector<std::vector<float>> xv(static_cast<size_t>(k));
  std::vector<F> fx;
  uint64_t mask = 0, wanted = 0;
  for (int64_t i = 0; i < k; ++i) {
    xv[size_t(i)] = test::random_vector(size_t(total), 60 + uint32_t(i), 0.5f + float(i % 3));
    for (float& v : xv[size_t(i)]) v += 0.25f * float(i);
    fx.push_back(emu::framed(xv[size_t(i)], kNaN));
    if (cs.kinds[size_t(i)] == 2) mask |= uint64_t(1) << i;
    if (cs.kinds[size_t(i)] != 0 && (cs.scores || cs.kinds[size_t(i)] == 2))
      wanted |= uint64_t(1) << i;
  }
  std::vector<float> wv(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) wv[size_t(i)] = 1.0f / float(k) + 0.01f * float(i);
  const std::vector<float> dyv = test::random_vector(size_t(total), 71);
  F fw = emu::framed(wv, kNaN), fdy = emu::framed(dyv, kNaN);
  nm::NormInputs<float> in{};
  for (int64_t i = 0; i < k; ++i)
    in.x[i] = cs.kinds[size_t(i)] == 0 ? nullptr : fx[size_t(i)].data();

  // The CPU ops.
  std::vector<Tensor> xt;
  std::vector<const Tensor*> xs;
  std::vector<bool> normed;
  for (int64_t i = 0; i < k; ++i) xt.push_back(Tensor::from_vector(ctx, cs.shape, xv[size_t(i)]));
  for (int64_t i = 0; i < k; ++i) {
    xs.push_back(cs.kinds[size_t(i)] == 0 ? nullptr : &xt[size_t(i)]);
    normed.push_back(cs.kinds[size_t(i)] == 2);
  }
  const BatchNormParams bp{0.1f, 1e-5f};
  std::vector<Tensor> rm, rv;
  std::vector<Tensor*> rmp, rvp;
  for (int64_t i = 0; i < k; ++i) {
    rm.push_back(Tensor::full(ctx, Shape{c}, 0.5f));
    rv.push_back(Tensor::full(ctx, Shape{c}, 2.0f));
  }
  if (cs.running)
    for (int64_t i = 0; i < k; ++i) {
      rmp.push_back(normed[size_t(i)] ? &rm[size_t(i)] : nullptr);
      rvp.push_back(normed[size_t(i)] ? &rv[size_t(i)] : nullptr);
    }
  Tensor mean = Tensor::empty(ctx, Shape{k, c}), invstd = Tensor::empty(ctx, Shape{k, c});
  ops::batchnorm_stats(ctx, xs, normed, mean, invstd, rmp, rvp, bp);
  Tensor wt = Tensor::from_vector(ctx, Shape{k}, wv), y = Tensor::empty(ctx, cs.shape);
  ops::mix_norm_fwd(ctx, wt, xs, normed, mean, invstd, y);
  Tensor dy = Tensor::from_vector(ctx, cs.shape, dyv);
  std::vector<Tensor> dz;
  std::vector<Tensor*> dzp;
  for (int64_t i = 0; i < k; ++i) dz.push_back(Tensor::empty(ctx, cs.shape));
  for (int64_t i = 0; i < k; ++i)
    dzp.push_back(cs.kinds[size_t(i)] == 0 ? nullptr : &dz[size_t(i)]);
  Tensor g = Tensor::empty(ctx, Shape{k});
  ops::mix_norm_bwd(ctx, wt, dy, xs, normed, mean, invstd, dzp, cs.scores ? &g : nullptr);

  // batchnorm_stats: partials, then the finish with the running statistics.
  const int64_t splits = nm::norm_splits(n * hw);
  D partials =
      emu::framed(std::vector<double>(size_t(k * c * splits * 2), NAN), double(emu::kOutGuard));
  emu::run_grid(dim3(unsigned(splits), unsigned(c), unsigned(k)), [&] {
    nm::norm_stats_partials_kernel<float>(in, mask, n, c, hw, partials.data());
  });
  std::vector<F> frm, frv;
  nm::NormOutputs<float> trm{}, trv{};
  for (int64_t i = 0; i < k; ++i) {
    frm.push_back(emu::framed(std::vector<float>(size_t(c), 0.5f), emu::kOutGuard));
    frv.push_back(emu::framed(std::vector<float>(size_t(c), 2.0f), emu::kOutGuard));
  }
  for (int64_t i = 0; i < k; ++i)
    if (cs.running && normed[size_t(i)]) {
      trm.x[i] = frm[size_t(i)].data();
      trv.x[i] = frv[size_t(i)].data();
    }
  F fmean = emu::framed(std::vector<float>(size_t(k * c), kNaN), emu::kOutGuard),
    finv = emu::framed(std::vector<float>(size_t(k * c), kNaN), emu::kOutGuard);
  emu::run_grid(dim3(unsigned(cuda::grid_for(k * c))), [&] {
    nm::norm_stats_finish_kernel<float>(partials.data(), mask, k, c, splits, double(n * hw), trm,
                                        trv, bp.eps, bp.momentum, fmean.data(), finv.data());
  });
  EXPECT_TRUE(partials.guards_intact() && fmean.guards_intact() && finv.guards_intact());
  EXPECT_LT(emu::rel_error(fmean.body(), mean.to_vector()), 1e-6);
  EXPECT_LT(emu::rel_error(finv.body(), invstd.to_vector()), 1e-6);
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_TRUE(frm[size_t(i)].guards_intact() && frv[size_t(i)].guards_intact());
    EXPECT_LT(emu::rel_error(frm[size_t(i)].body(), rm[size_t(i)].to_vector()), 1e-6) << i;
    EXPECT_LT(emu::rel_error(frv[size_t(i)].body(), rv[size_t(i)].to_vector()), 1e-6) << i;
  }

  // mix_norm_fwd.
  F fy = emu::framed(std::vector<float>(size_t(total), kNaN), emu::kOutGuard);
  emu::run_grid(dim3(unsigned(cuda::grid_for(total))), [&] {
    nm::mix_norm_fwd_kernel<float>(fw.data(), in, mask, int(k), fmean.data(), finv.data(), total, c,
                                   hw, fy.data());
  });
  EXPECT_TRUE(fy.guards_intact());
  EXPECT_LT(emu::rel_error(fy.body(), y.to_vector()), 1e-5);

  // mix_norm_bwd: the sums per group of candidates, the coefficients, one pass for the gradients.
  D sums =
      emu::framed(std::vector<double>(size_t(c * splits * (1 + k)), NAN), double(emu::kOutGuard));
  for (int64_t j0 = 0; j0 < k; j0 += 8)
    emu::run_grid(dim3(unsigned(splits), unsigned(c)), [&] {
      nm::mix_norm_sums_kernel<float>(fdy.data(), in, mask, wanted, int(j0), int(k), fmean.data(),
                                      finv.data(), n, c, hw, sums.data());
    });
  D totals = emu::framed(std::vector<double>(size_t(k * c), NAN), double(emu::kOutGuard));
  F coef = emu::framed(std::vector<float>(size_t(k * c * 3), kNaN), emu::kOutGuard);
  emu::run_grid(dim3(unsigned(cuda::grid_for(k * c))), [&] {
    nm::mix_norm_coef_kernel<float>(sums.data(), fw.data(), mask, wanted, k, c, splits,
                                    double(n * hw), finv.data(), totals.data(), coef.data());
  });
  std::vector<F> fdz;
  nm::NormOutputs<float> out{};
  for (int64_t i = 0; i < k; ++i)  // a gradient not given starts (and must stay) at 7
    fdz.push_back(emu::framed(
        std::vector<float>(size_t(total), cs.kinds[size_t(i)] == 0 ? 7.0f : kNaN), emu::kOutGuard));
  for (int64_t i = 0; i < k; ++i)
    if (cs.kinds[size_t(i)] != 0) out.x[i] = fdz[size_t(i)].data();
  F fg = emu::framed(std::vector<float>(size_t(k), kNaN), emu::kOutGuard);
  emu::run_grid(dim3(unsigned(cuda::grid_for(total))), [&] {
    nm::mix_norm_apply_kernel<float>(fw.data(), fdy.data(), in, out, mask, int(k), fmean.data(),
                                     finv.data(), coef.data(), totals.data(), total, c, hw,
                                     cs.scores ? fg.data() : nullptr);
  });
  EXPECT_TRUE(sums.guards_intact() && totals.guards_intact() && coef.guards_intact() &&
              fg.guards_intact());
  for (int64_t i = 0; i < k; ++i) {
    EXPECT_TRUE(fdz[size_t(i)].guards_intact()) << i;
    if (cs.kinds[size_t(i)] == 0) {
      EXPECT_EQ(fdz[size_t(i)].body(), std::vector<float>(size_t(total), 7.0f)) << i;
      continue;
    }
    EXPECT_LT(emu::rel_error(fdz[size_t(i)].body(), dz[size_t(i)].to_vector()), 1e-4)
        << "candidate " << i;
  }
  if (cs.scores) {
    const std::vector<float> gg = fg.body(), gc = g.to_vector();
    for (int64_t i = 0; i < k; ++i)
      EXPECT_NEAR(gg[size_t(i)], gc[size_t(i)], 1e-4 * (1.0 + std::abs(gc[size_t(i)]))) << i;
  }
}

TEST(NormMixEmulation, KernelsMatchTheCpuOps) {
  // Two blocks per channel (48 x 48 x 4 values), a null, a plain and two normed candidates.
  run_case({{0, 1, 2, 2}, Shape{4, 3, 48, 48}, true, true});
  // Ten candidates: the backward sums in two launches; without and with scores.
  std::vector<int> ten;
  for (int i = 0; i < 10; ++i) ten.push_back(i % 4 == 0 ? 0 : (i % 4 == 1 ? 1 : 2));
  run_case({ten, Shape{2, 3, 4, 5}, true, true});
  run_case({ten, Shape{2, 3, 4, 5}, false, true});
  // One normed candidate, odd sizes, Probe statistics (no running statistics).
  run_case({{2}, Shape{3, 2, 5, 7}, false, false});
  // 4x4 maps: a thread's next value (256 further) is 16 images on; several values per thread.
  run_case({{2, 1, 2}, Shape{70, 2, 4, 4}, true, true});
}

}  // namespace
}  // namespace cudarts
