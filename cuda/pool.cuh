// 2-D pooling on the GPU (internal): which poolings the own kernels cover and the float32 entry
// points. Contract as pool2d_* in ops.h: y and dx are written (=). Kernels: pool_kernels.cuh;
// CPU twin: src/cpu/cpu_norm_pool.cpp. Why own kernels: cuDNN's pooling ran at 10 us (forward)
// and 26 us (backward) a call for the search network's 4 MB maps on an H200 (DEVICE_LOG.md,
// 2026-12-04), 10-12x their traffic.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <optional>

#include "cudarts/ops.h"

namespace cudarts::cuda::pool {

constexpr int kMaxWindow = 255;  // kernel_h * kernel_w: a window offset fits the uint8 argmax

// One pooling, shapes only: x / dx (N, C, H, W), y / dy (N, C, P, Q); window (p, q) covers
// rows p * stride_h - pad_h + [0, kernel_h) and columns likewise, clipped to the image.
struct PoolProblem {
  int64_t planes;  // N * C
  int h, w, p, q;
  int kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
  __host__ __device__ int64_t in_plane() const { return int64_t(h) * w; }
  __host__ __device__ int64_t out_plane() const { return int64_t(p) * q; }
};

// The problem when the own kernels cover the pooling: a window of at most 255 elements (the
// argmax is a byte) and extents the int arithmetic holds; nullopt otherwise (cuDNN serves it).
// The shapes are the validated ones of ops.cpp.
inline std::optional<PoolProblem> make_problem(const Shape& x, const Shape& y,
                                               const Pool2dParams& p) {
  if (x.ndim() != 4 || y.ndim() != 4 || x[0] != y[0] || x[1] != y[1]) return std::nullopt;
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.kernel_h * p.kernel_w > kMaxWindow) return std::nullopt;
  const int64_t limit = int64_t(1) << 30;
  for (int64_t e : {x[2], x[3], y[2], y[3]})
    if (e < 1 || e >= limit) return std::nullopt;
  if (x[2] * x[3] >= (int64_t(1) << 31) || x[0] * x[1] < 1) return std::nullopt;
  return PoolProblem{x[0] * x[1], int(x[2]),  int(x[3]),  int(y[2]), int(y[3]), p.kernel_h,
                     p.kernel_w,  p.stride_h, p.stride_w, p.pad_h,   p.pad_w};
}
// Scratch bytes the backward needs (max pooling: one byte per window; average: none).
size_t backward_scratch_bytes(const Shape& y, const Pool2dParams& p);
void forward(const Tensor& x, Tensor& y, const Pool2dParams& p, cudaStream_t stream);
// dx from x and dy; `scratch` holds backward_scratch_bytes() bytes.
void backward(const Tensor& x, const Tensor& dy, Tensor& dx, const Pool2dParams& p, void* scratch,
              cudaStream_t stream);

}  // namespace cudarts::cuda::pool
