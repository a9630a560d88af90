// An edge's normalised mix (ops.h: batchnorm_stats, mix_norm_fwd, mix_norm_bwd; CPU twins in
// src/cpu/cpu_norm_pool.cpp; docs/DESIGN.md section 6): the statistics of every normed candidate
// in one pass, the normalisation inside the mix, and the BatchNorm backward inside the mix's
// backward, so no candidate's normalised output is ever written.
// Reductions are deterministic: each channel's values are split over a number of blocks that
// depends on the sizes only, every block sums in double (CUB, fixed order), and a second kernel
// adds the blocks' partial sums in block order. No atomics.
// Status: compiles, passes the host emulation test (tests/test_norm_mix_emulation.cpp); not yet
// run on a GPU (perf/DEVICE_LOG.md).
#include <cstdint>

#include "check.h"
#include "cuda_backend.h"
#include "launch.cuh"
#include "norm_mix_kernels.cuh"
#include "reduce.cuh"

namespace cudarts::cuda {

namespace {

using namespace norm_mix;

uint64_t normed_mask(const std::vector<const Tensor*>& xs, const std::vector<bool>& normed,
                     const char* op) {
  if (xs.size() > size_t(kMaxNormMix))
    throw NotSupported(detail::cat("cuda backend: ", op, " takes at most ", kMaxNormMix,
                                   " candidates, got ", xs.size()));
  uint64_t m = 0;
  for (size_t i = 0; i < xs.size(); ++i)
    if (xs[i] && normed[i]) m |= uint64_t(1) << i;
  return m;
}

template <class T, class List, class P>
List table(const std::vector<P*>& ps) {
  List out{};
  for (size_t i = 0; i < ps.size(); ++i) out.x[i] = ps[i] ? ps[i]->data() : nullptr;
  return out;
}

}  // namespace

void CudaBackend::batchnorm_stats(const std::vector<const Tensor*>& xs,
                                  const std::vector<bool>& normed, Tensor& mean, Tensor& invstd,
                                  const std::vector<Tensor*>& running_means,
                                  const std::vector<Tensor*>& running_vars,
                                  const BatchNormParams& p) {
  const uint64_t mask = normed_mask(xs, normed, "batchnorm_stats");
  const Tensor& x0 = *first_present(xs);
  const int64_t k = int64_t(xs.size()), n = x0.dim(0), c = x0.dim(1), hw = x0.dim(2) * x0.dim(3);
  if (c == 0) return;
  const int64_t splits = norm_splits(n * hw);
  Buffer partials(allocator_, size_t(k * c * splits * 2) * sizeof(double));
  double* pp = static_cast<double*>(partials.data());
  if (mask != 0 && n * hw > 0) {
    norm_stats_partials_kernel<float>
        <<<dim3(unsigned(splits), unsigned(c), unsigned(k)), kReduceBlock, 0, stream_>>>(
            table<float, NormInputs<float>>(xs), mask, n, c, hw, pp);
    CUDARTS_LAUNCH_CHECK("norm_stats_partials_kernel", "(", k, " x ", x0.shape(), ")");
  }
  norm_stats_finish_kernel<float><<<grid_for(k * c), kBlock, 0, stream_>>>(
      pp, mask, k, c, splits, double(n * hw), table<float, NormOutputs<float>>(running_means),
      table<float, NormOutputs<float>>(running_vars), p.eps, p.momentum, mean.data(),
      invstd.data());
  CUDARTS_LAUNCH_CHECK("norm_stats_finish_kernel", "(", k, " x ", c, " channels)");
}

void CudaBackend::mix_norm_fwd(const Tensor& weights, const std::vector<const Tensor*>& xs,
                               const std::vector<bool>& normed, const Tensor& mean,
                               const Tensor& invstd, Tensor& y) {
  const uint64_t mask = normed_mask(xs, normed, "mix_norm_fwd");
  const int64_t total = y.numel();
  if (total == 0) return;
  mix_norm_fwd_kernel<float><<<grid_for(total), kBlock, 0, stream_>>>(
      weights.data(), table<float, NormInputs<float>>(xs), mask, int(xs.size()), mean.data(),
      invstd.data(), total, y.dim(1), y.dim(2) * y.dim(3), y.data());
  CUDARTS_LAUNCH_CHECK("mix_norm_fwd_kernel", "(", xs.size(), " x ", y.shape(), ")");
}

void CudaBackend::mix_norm_bwd(const Tensor& weights, const Tensor& dy,
                               const std::vector<const Tensor*>& xs,
                               const std::vector<bool>& normed, const Tensor& mean,
                               const Tensor& invstd, const std::vector<Tensor*>& dxs, Tensor* g) {
  const uint64_t mask = normed_mask(xs, normed, "mix_norm_bwd");
  uint64_t wanted = mask;  // the candidates whose sums are needed: normed, and scored ones
  if (g)
    for (size_t i = 0; i < xs.size(); ++i)
      if (xs[i]) wanted |= uint64_t(1) << i;
  const int64_t k = int64_t(xs.size()), n = dy.dim(0), c = dy.dim(1), hw = dy.dim(2) * dy.dim(3);
  const int64_t total = dy.numel();
  if (total == 0 || c == 0) {
    if (g) fill(*g, 0.0f);
    return;
  }
  const int64_t splits = norm_splits(n * hw);
  // One scratch buffer: the per-split partial sums, the per-candidate totals (doubles), then the
  // per-candidate coefficients (floats).
  const size_t partial_count = size_t(c * splits * (1 + k)), total_count = size_t(k * c);
  Buffer scratch(allocator_, (partial_count + total_count) * sizeof(double) +
                                 size_t(k * c * 3) * sizeof(float));
  double* pp = static_cast<double*>(scratch.data());
  double* totals = pp + partial_count;
  float* coef = reinterpret_cast<float*>(totals + total_count);
  const NormInputs<float> in = table<float, NormInputs<float>>(xs);
  for (int64_t j0 = 0; j0 < k; j0 += kSumsGroup) {
    mix_norm_sums_kernel<float><<<dim3(unsigned(splits), unsigned(c)), kReduceBlock, 0, stream_>>>(
        dy.data(), in, mask, wanted, int(j0), int(k), mean.data(), invstd.data(), n, c, hw, pp);
    CUDARTS_LAUNCH_CHECK("mix_norm_sums_kernel", "(", k, " x ", dy.shape(), ")");
  }
  mix_norm_coef_kernel<float><<<grid_for(k * c), kBlock, 0, stream_>>>(
      pp, weights.data(), mask, wanted, k, c, splits, double(n * hw), invstd.data(), totals, coef);
  CUDARTS_LAUNCH_CHECK("mix_norm_coef_kernel", "(", k, " x ", c, " channels)");
  mix_norm_apply_kernel<float><<<grid_for(total), kBlock, 0, stream_>>>(
      weights.data(), dy.data(), in, table<float, NormOutputs<float>>(dxs), mask, int(k),
      mean.data(), invstd.data(), coef, totals, total, c, hw, g ? g->data() : nullptr);
  CUDARTS_LAUNCH_CHECK("mix_norm_apply_kernel", "(", k, " x ", dy.shape(), ")");
}

}  // namespace cudarts::cuda
