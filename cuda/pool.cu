// The library's 2-D pooling (float32): checked entry points over pool_kernels.cuh. y and dx are
// written (=). CPU twin: src/cpu/cpu_norm_pool.cpp (the same arithmetic and the same order, so
// the same bits). Max pooling's backward takes two launches: each window's argmax into a byte
// scratch, then a gather per dx element; no atomics.
#include "check.h"
#include "launch.cuh"
#include "pool.cuh"
#include "pool_kernels.cuh"

namespace cudarts::cuda::pool {

size_t backward_scratch_bytes(const Shape& y, const Pool2dParams& p) {
  return p.mode == PoolMode::Max ? size_t(y.numel()) : 0;
}

void forward(const Tensor& x, Tensor& y, const Pool2dParams& p, cudaStream_t stream) {
  const auto pr = make_problem(x.shape(), y.shape(), p);
  CUDARTS_CHECK(pr.has_value(), "pool2d_fwd: the own pooling kernels do not cover x ", x.shape(),
                ", y ", y.shape());
  const int grid = grid_for(y.numel());
  if (p.mode == PoolMode::Max)
    pool_fwd_kernel<float, true><<<grid, kBlock, 0, stream>>>(x.data(), y.data(), *pr);
  else
    pool_fwd_kernel<float, false><<<grid, kBlock, 0, stream>>>(x.data(), y.data(), *pr);
  CUDARTS_LAUNCH_CHECK("pool_fwd_kernel", "(x ", x.shape(), ", y ", y.shape(), ")");
}

void backward(const Tensor& x, const Tensor& dy, Tensor& dx, const Pool2dParams& p, void* scratch,
              cudaStream_t stream) {
  const auto pr = make_problem(x.shape(), dy.shape(), p);
  CUDARTS_CHECK(pr.has_value(), "pool2d_bwd: the own pooling kernels do not cover x ", x.shape(),
                ", dy ", dy.shape());
  const int grid = grid_for(x.numel());
  if (p.mode == PoolMode::Max) {
    CUDARTS_CHECK(scratch != nullptr, "pool2d_bwd: max pooling needs ", dy.numel(),
                  " bytes of scratch, none given");
    auto* arg = static_cast<uint8_t*>(scratch);
    pool_argmax_kernel<float><<<grid_for(dy.numel()), kBlock, 0, stream>>>(x.data(), arg, *pr);
    CUDARTS_LAUNCH_CHECK("pool_argmax_kernel", "(x ", x.shape(), ", dy ", dy.shape(), ")");
    pool_bwd_kernel<float, true><<<grid, kBlock, 0, stream>>>(dy.data(), arg, dx.data(), *pr);
  } else {
    pool_bwd_kernel<float, false><<<grid, kBlock, 0, stream>>>(dy.data(), nullptr, dx.data(), *pr);
  }
  CUDARTS_LAUNCH_CHECK("pool_bwd_kernel", "(dx ", dx.shape(), ", dy ", dy.shape(), ")");
}

}  // namespace cudarts::cuda::pool
