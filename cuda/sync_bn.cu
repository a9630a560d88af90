// Synchronised BatchNorm's per-rank pieces (ops.h: batchnorm_moments, batchnorm_moments_finish,
// batchnorm_bwd_sums, batchnorm_bwd_apply; CPU twins in src/cpu/cpu_norm_pool.cpp). The
// per-channel sums run one block per channel, each thread accumulating in double over a fixed
// stride, then a fixed-order tree in shared memory: deterministic, no atomics.
// Status: compiles, passes the host emulation test (tests/test_sync_bn_emulation.cpp); not yet
// run on a GPU (perf/DEVICE_LOG.md).
#include "check.h"
#include "cuda_backend.h"
#include "launch.cuh"
#include "sync_bn_kernels.cuh"

namespace cudarts::cuda {

using namespace sync_bn;  // the kernels (sync_bn_kernels.cuh)

void CudaBackend::batchnorm_moments(const Tensor& x, const Tensor& shift, Tensor& moments) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  if (c == 0) return;
  moments_kernel<float><<<unsigned(c), kChannelThreads, 0, stream_>>>(x.data(), shift.data(), n, c,
                                                                      hw, moments.data());
  CUDARTS_LAUNCH_CHECK("moments_kernel", "(x ", x.shape(), ")");
}

void CudaBackend::batchnorm_moments_finish(const Tensor& moments, const Tensor& shift, double count,
                                           Tensor& mean, Tensor& var, Tensor& invstd,
                                           Tensor* running_mean, Tensor* running_var,
                                           const BatchNormParams& p) {
  const int64_t c = moments.dim(1);
  if (c == 0) return;
  moments_finish_kernel<float><<<unsigned((c + kBlock - 1) / kBlock), kBlock, 0, stream_>>>(
      moments.data(), shift.data(), count, c, mean.data(), var.data(), invstd.data(),
      running_mean ? running_mean->data() : nullptr, running_var ? running_var->data() : nullptr,
      p.eps, p.momentum);
  CUDARTS_LAUNCH_CHECK("moments_finish_kernel", "(", c, " channels)");
}

void CudaBackend::batchnorm_bwd_sums(const Tensor& dy, const Tensor& x, const Tensor& mean,
                                     const Tensor& invstd, Tensor& sums) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3);
  if (c == 0) return;
  bwd_sums_kernel<float><<<unsigned(c), kChannelThreads, 0, stream_>>>(
      dy.data(), x.data(), mean.data(), invstd.data(), n, c, hw, sums.data());
  CUDARTS_LAUNCH_CHECK("bwd_sums_kernel", "(x ", x.shape(), ")");
}

void CudaBackend::batchnorm_bwd_apply(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                                      const Tensor& mean, const Tensor& invstd, const Tensor& sums,
                                      double count, Tensor& dx) {
  const int64_t total = x.numel();
  if (total == 0) return;
  bwd_apply_kernel<float><<<grid_for(total), kBlock, 0, stream_>>>(
      dy.data(), x.data(), gamma ? gamma->data() : nullptr, mean.data(), invstd.data(), sums.data(),
      count, total, x.dim(1), x.dim(2) * x.dim(3), dx.data());
  CUDARTS_LAUNCH_CHECK("bwd_apply_kernel", "(x ", x.shape(), ")");
}

}  // namespace cudarts::cuda
