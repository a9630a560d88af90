// Synchronised BatchNorm's per-rank kernels (internal; launchers in sync_bn.cu): per-channel
// sums, one block per channel, each thread accumulating in double over a fixed stride, then a
// fixed-order tree in shared memory. Included by sync_bn.cu and by
// tests/test_sync_bn_emulation.cpp, which runs them as host code under an emulation of blocks
// and barriers; internal linkage.
#pragma once
#include <cstdint>

namespace cudarts::cuda::sync_bn {
namespace {

constexpr int kChannelThreads = 256;

// Sums two values per thread over the block in a fixed order; thread 0 holds the totals.
template <class T>
__device__ void block_sum2(T& a, T& b) {
  __shared__ T sa[kChannelThreads], sb[kChannelThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int s = kChannelThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      sa[threadIdx.x] += sa[threadIdx.x + s];
      sb[threadIdx.x] += sb[threadIdx.x + s];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
}

// moments (2, C) = {sum (x - shift), sum (x - shift)^2} per channel; block = channel.
template <class T>
__global__ void moments_kernel(const T* x, const T* shift, int64_t n, int64_t c, int64_t hw,
                               T* moments) {
  const int64_t ci = blockIdx.x, count = n * hw;
  const double s = double(shift[ci]);
  double m0 = 0.0, m1 = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += kChannelThreads) {
    const int64_t ni = k / hw, j = k % hw;
    const double d = double(x[(ni * c + ci) * hw + j]) - s;
    m0 += d;
    m1 += d * d;
  }
  block_sum2(m0, m1);
  if (threadIdx.x == 0) {
    moments[ci] = T(m0);
    moments[c + ci] = T(m1);
  }
}

template <class T>
__global__ void moments_finish_kernel(const T* moments, const T* shift, double count, int64_t c,
                                      T* mean, T* var, T* invstd, T* running_mean, T* running_var,
                                      float eps, float momentum) {
  const int64_t ci = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ci >= c) return;
  const double d = double(moments[ci]) / count;
  const double m = double(shift[ci]) + d;
  const double v = fmax(double(moments[c + ci]) / count - d * d, 0.0);
  mean[ci] = T(m);
  var[ci] = T(v);
  invstd[ci] = T(1.0 / sqrt(v + double(eps)));
  if (running_mean) {
    running_mean[ci] = T((1.0 - momentum) * double(running_mean[ci]) + momentum * m);
    running_var[ci] =
        T((1.0 - momentum) * double(running_var[ci]) + momentum * v * count / (count - 1.0));
  }
}

template <class T>
__global__ void bwd_sums_kernel(const T* dy, const T* x, const T* mean, const T* invstd, int64_t n,
                                int64_t c, int64_t hw, T* sums) {
  const int64_t ci = blockIdx.x, count = n * hw;
  const double m = double(mean[ci]), is = double(invstd[ci]);
  double s0 = 0.0, s1 = 0.0;
  for (int64_t k = threadIdx.x; k < count; k += kChannelThreads) {
    const int64_t i = ((k / hw) * c + ci) * hw + k % hw;
    s0 += double(dy[i]);
    s1 += double(dy[i]) * (double(x[i]) - m) * is;
  }
  block_sum2(s0, s1);
  if (threadIdx.x == 0) {
    sums[ci] = T(s0);
    sums[c + ci] = T(s1);
  }
}

template <class T>
__global__ void bwd_apply_kernel(const T* dy, const T* x, const T* gamma, const T* mean,
                                 const T* invstd, const T* sums, double count, int64_t total,
                                 int64_t c, int64_t hw, T* dx) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = (i / hw) % c;
    const double is = double(invstd[ci]);
    const double g = gamma ? double(gamma[ci]) : 1.0;
    const double xhat = (double(x[i]) - double(mean[ci])) * is;
    dx[i] = T(g * is *
              (double(dy[i]) - double(sums[ci]) / count - xhat * double(sums[c + ci]) / count));
  }
}

}  // namespace
}  // namespace cudarts::cuda::sync_bn
