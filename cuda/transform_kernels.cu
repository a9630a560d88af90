// Data-movement kernels of the DARTS pipeline: spatial crop (FactorizedReduce), per-sample
// scaling and Bernoulli drop-path scales, augmentation (crop/flip/cutout), gather.
// CPU twins: src/cpu/cpu_transform.cpp. Compiles; not yet run on a GPU.
#include "cuda_backend.h"
#include "cudarts/philox.h"
#include "launch.cuh"

namespace cudarts::cuda {

namespace {

// y (NC, h, w) = x (NC, xh, xw) window at (top, left).
__global__ void crop2d_fwd_kernel(const float* x, float* y, int64_t nc, int64_t h, int64_t w,
                                  int64_t xh, int64_t xw, int top, int left) {
  const int64_t total = nc * h * w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % w, row = (i / w) % h, plane = i / (w * h);
    y[i] = x[(plane * xh + row + top) * xw + col + left];
  }
}

// dx (NC, xh, xw) = dy inside the window, 0 outside (one thread per dx element).
__global__ void crop2d_bwd_kernel(const float* dy, float* dx, int64_t nc, int64_t h, int64_t w,
                                  int64_t xh, int64_t xw, int top, int left) {
  const int64_t total = nc * xh * xw;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % xw - left, row = (i / xw) % xh - top, plane = i / (xw * xh);
    dx[i] = (row >= 0 && row < h && col >= 0 && col < w) ? dy[(plane * h + row) * w + col] : 0.0f;
  }
}

// y[n, j] = scales[n] * x[n, j]
__global__ void scale_samples_kernel(const float* x, const float* scales, float* y, int64_t n,
                                     int64_t per) {
  const int64_t total = n * per;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = scales[i / per] * x[i];
}

__global__ void bernoulli_scale_kernel(float* out, int64_t n, float keep, uint64_t seed,
                                       uint64_t offset, const uint64_t* shift) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float u = philox_uniform(philox_word(seed, offset, 0, uint64_t(i)));
    out[i] = u < keep ? 1.0f / keep : 0.0f;
  }
}

// One thread per output element; the per-sample draws are recomputed by each thread
// (5 Philox blocks' worth of words), which keeps the kernel free of cross-thread state.
__global__ void augment_kernel(const float* x, float* y, int64_t n, int64_t c, int64_t h, int64_t w,
                               int pad, bool flip_enabled, int cutout, uint64_t seed,
                               uint64_t offset, const uint64_t* shift) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  const int64_t total = n * c * h * w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t col = i % w, row = (i / w) % h, ch = (i / (w * h)) % c, s = i / (w * h * c);
    const uint64_t base = uint64_t(8 * s);
    const int64_t oy =
        int64_t(philox_word(seed, offset, 0, base + 0) % uint32_t(2 * pad + 1)) - pad;
    const int64_t ox =
        int64_t(philox_word(seed, offset, 0, base + 1) % uint32_t(2 * pad + 1)) - pad;
    const bool flip = flip_enabled && (philox_word(seed, offset, 0, base + 2) & 1u);
    const int64_t cy = int64_t(philox_word(seed, offset, 0, base + 3) % uint32_t(h));
    const int64_t cx = int64_t(philox_word(seed, offset, 0, base + 4) % uint32_t(w));
    const int64_t half = cutout / 2;
    const int64_t sy = row + oy, sx = (flip ? w - 1 - col : col) + ox;
    float v = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? x[((s * c + ch) * h + sy) * w + sx] : 0.0f;
    if (cutout > 0 && row >= cy - half && row < cy - half + cutout && col >= cx - half &&
        col < cx - half + cutout)
      v = 0.0f;
    y[i] = v;
  }
}

// dst[i] = src[index[i]]; an out-of-range index writes NaN (no device-side throw).
__global__ void gather_kernel(const float* src, int64_t m, const int32_t* index, float* dst,
                              int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int32_t k = index[i];
    dst[i] = (k >= 0 && k < m) ? src[k] : __int_as_float(0x7fc00000);
  }
}

}  // namespace

void CudaBackend::crop2d_fwd(const Tensor& x, int top, int left, Tensor& y) {
  const int64_t total = y.numel();
  if (total == 0) return;
  crop2d_fwd_kernel<<<grid_for(total), kBlock, 0, stream_>>>(
      x.data(), y.data(), y.dim(0) * y.dim(1), y.dim(2), y.dim(3), x.dim(2), x.dim(3), top, left);
  CUDARTS_LAUNCH_CHECK("crop2d_fwd_kernel", x.describe(), " -> ", y.describe());
}

void CudaBackend::crop2d_bwd(const Tensor& dy, int top, int left, Tensor& dx) {
  const int64_t total = dx.numel();
  if (total == 0) return;
  crop2d_bwd_kernel<<<grid_for(total), kBlock, 0, stream_>>>(
      dy.data(), dx.data(), dy.dim(0) * dy.dim(1), dy.dim(2), dy.dim(3), dx.dim(2), dx.dim(3), top,
      left);
  CUDARTS_LAUNCH_CHECK("crop2d_bwd_kernel", dy.describe(), " -> ", dx.describe());
}

void CudaBackend::scale_samples(const Tensor& x, const Tensor& scales, Tensor& y) {
  const int64_t n = x.dim(0), total = x.numel();
  if (total == 0) return;
  scale_samples_kernel<<<grid_for(total), kBlock, 0, stream_>>>(x.data(), scales.data(), y.data(),
                                                                n, total / n);
  CUDARTS_LAUNCH_CHECK("scale_samples_kernel", x.describe());
}

void CudaBackend::bernoulli_scale(Tensor& out, float keep_prob, uint64_t seed, uint64_t offset,
                                  const uint64_t* shift) {
  const int64_t n = out.numel();
  if (n == 0) return;
  bernoulli_scale_kernel<<<grid_for(n), kBlock, 0, stream_>>>(out.data(), n, keep_prob, seed,
                                                              offset, shift);
  CUDARTS_LAUNCH_CHECK("bernoulli_scale_kernel", out.describe());
}

void CudaBackend::augment(const Tensor& x, Tensor& y, const AugmentParams& p, uint64_t seed,
                          uint64_t offset, const uint64_t* shift) {
  const int64_t total = x.numel();
  if (total == 0) return;
  augment_kernel<<<grid_for(total), kBlock, 0, stream_>>>(x.data(), y.data(), x.dim(0), x.dim(1),
                                                          x.dim(2), x.dim(3), p.pad, p.flip,
                                                          p.cutout, seed, offset, shift);
  CUDARTS_LAUNCH_CHECK("augment_kernel", x.describe());
}

void CudaBackend::gather(const Tensor& src, const Tensor& index, Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  gather_kernel<<<grid_for(n), kBlock, 0, stream_>>>(src.data(), src.numel(), index.data_i32(),
                                                     dst.data(), n);
  CUDARTS_LAUNCH_CHECK("gather_kernel", src.describe(), " by ", index.describe());
}

}  // namespace cudarts::cuda
