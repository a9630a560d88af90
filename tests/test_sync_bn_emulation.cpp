// Synchronised BatchNorm's per-rank kernels (cuda/sync_bn_kernels.cuh: moments, their finish,
// the backward sums and apply) run as host code under the emulation of cuda_emulation.h, in the
// launch geometry of cuda/sync_bn.cu (one block per channel for the sums), against the CPU ops
// (ops::batchnorm_moments, _moments_finish, _bwd_sums, _bwd_apply on a CPU context), with the
// counts of three ranks. Buffers are framed by guards. Built with the CUDA backend (it needs the
// CUDA headers), runs without a GPU.
#include <cmath>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "launch.cuh"
#include "test_util.h"

#include "emulated_attributes.h"

#include "sync_bn_kernels.cuh"

namespace cudarts {
namespace {

namespace sb = cuda::sync_bn;
using F = emu::Framed<float>;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

F output(int64_t n) {
  return emu::framed(std::vector<float>(size_t(n), kNaN), emu::kOutGuard);
}

void run_case(const Shape& s) {
  SCOPED_TRACE(s.str());
  static_assert(sb::kChannelThreads == emu::kThreads);
  Context ctx;
  const int64_t n = s[0], c = s[1], hw = s[2] * s[3], total = s.numel();
  const double count = 3.0 * double(n * hw);  // as if three ranks had contributed
  std::vector<float> xv = test::random_vector(size_t(total), 5, 2.0f);
  for (float& v : xv) v += 1.5f;
  const std::vector<float> dyv = test::random_vector(size_t(total), 6),
                           shiftv = test::random_vector(size_t(c), 7);
  Tensor x = Tensor::from_vector(ctx, s, xv), dy = Tensor::from_vector(ctx, s, dyv),
         shift = Tensor::from_vector(ctx, Shape{c}, shiftv);
  F fx = emu::framed(xv, kNaN), fdy = emu::framed(dyv, kNaN), fshift = emu::framed(shiftv, kNaN);

  // moments (2, C) about the shift.
  Tensor moments = Tensor::empty(ctx, Shape{2, c});
  ops::batchnorm_moments(ctx, x, shift, moments);
  F fm = output(2 * c);
  emu::run_grid(dim3(unsigned(c)),
                [&] { sb::moments_kernel<float>(fx.data(), fshift.data(), n, c, hw, fm.data()); });
  EXPECT_TRUE(fm.guards_intact());
  EXPECT_LT(emu::rel_error(fm.body(), moments.to_vector()), 1e-6);

  // Their finish, with the running statistics, from the same moments.
  const BatchNormParams bp{0.1f, 1e-5f};
  Tensor mean = Tensor::empty(ctx, Shape{c}), var = Tensor::empty(ctx, Shape{c}),
         invstd = Tensor::empty(ctx, Shape{c}), rm = Tensor::full(ctx, Shape{c}, 0.5f),
         rv = Tensor::full(ctx, Shape{c}, 2.0f);
  ops::batchnorm_moments_finish(ctx, moments, shift, count, mean, var, invstd, &rm, &rv, bp);
  F fmoments = emu::framed(moments.to_vector(), kNaN), fmean = output(c), fvar = output(c),
    finv = output(c);
  F frm = emu::framed(std::vector<float>(size_t(c), 0.5f), emu::kOutGuard),
    frv = emu::framed(std::vector<float>(size_t(c), 2.0f), emu::kOutGuard);
  emu::run_grid(dim3(unsigned((c + cuda::kBlock - 1) / cuda::kBlock)), [&] {
    sb::moments_finish_kernel<float>(fmoments.data(), fshift.data(), count, c, fmean.data(),
                                     fvar.data(), finv.data(), frm.data(), frv.data(), bp.eps,
                                     bp.momentum);
  });
  for (F* f : {&fmean, &fvar, &finv, &frm, &frv}) EXPECT_TRUE(f->guards_intact());
  EXPECT_LT(emu::rel_error(fmean.body(), mean.to_vector()), 1e-6);
  EXPECT_LT(emu::rel_error(fvar.body(), var.to_vector()), 1e-6);
  EXPECT_LT(emu::rel_error(finv.body(), invstd.to_vector()), 1e-6);
  EXPECT_LT(emu::rel_error(frm.body(), rm.to_vector()), 1e-6);
  EXPECT_LT(emu::rel_error(frv.body(), rv.to_vector()), 1e-6);

  // The backward: sums (2, C), then dx with gamma.
  const std::vector<float> gammav = test::random_vector(size_t(c), 8);
  Tensor gamma = Tensor::from_vector(ctx, Shape{c}, gammav), sums = Tensor::empty(ctx, Shape{2, c});
  ops::batchnorm_bwd_sums(ctx, dy, x, mean, invstd, sums);
  F fmean_in = emu::framed(mean.to_vector(), kNaN), finv_in = emu::framed(invstd.to_vector(), kNaN);
  F fsums = output(2 * c);
  emu::run_grid(dim3(unsigned(c)), [&] {
    sb::bwd_sums_kernel<float>(fdy.data(), fx.data(), fmean_in.data(), finv_in.data(), n, c, hw,
                               fsums.data());
  });
  EXPECT_TRUE(fsums.guards_intact());
  EXPECT_LT(emu::rel_error(fsums.body(), sums.to_vector()), 1e-6);
  Tensor dx = Tensor::empty(ctx, s);
  ops::batchnorm_bwd_apply(ctx, dy, x, &gamma, mean, invstd, sums, count, dx);
  F fgamma = emu::framed(gammav, kNaN), fsums_in = emu::framed(sums.to_vector(), kNaN),
    fdx = output(total);
  emu::run_grid(dim3(unsigned(cuda::grid_for(total))), [&] {
    sb::bwd_apply_kernel<float>(fdy.data(), fx.data(), fgamma.data(), fmean_in.data(),
                                finv_in.data(), fsums_in.data(), count, total, c, hw, fdx.data());
  });
  EXPECT_TRUE(fdx.guards_intact());
  EXPECT_LT(emu::rel_error(fdx.body(), dx.to_vector()), 1e-6);
}

TEST(SyncBnEmulation, KernelsMatchTheCpuOps) {
  run_case(Shape{4, 8, 6, 6});
  run_case(Shape{2, 3, 9, 7});
  run_case(Shape{64, 3, 1, 1});  // fewer values per image than threads
}

}  // namespace
}  // namespace cudarts
