// 2-D max and average pooling kernels (internal; launchers in pool.cu): templates on the element
// type T, the CPU's arithmetic (src/cpu/cpu_norm_pool.cpp: the maximum as std::max takes it, the
// average as a double sum over the window's valid elements divided by their count, the first
// maximum of a window in row-major order receiving its gradient, each dx element's
// contributions added in window order). Included by pool.cu and by
// tests/test_pool_emulation.cpp, which runs them as host code. Deterministic, no atomics.
#pragma once
#include <cmath>
#include <cstdint>

#include "pool.cuh"

namespace cudarts::cuda::pool {

// The valid rows [h0, h1) and columns [w0, w1) of window (pi, qi), and its unclipped origin.
struct PoolWindow {
  int hs, ws, h0, h1, w0, w1;
};
__host__ __device__ inline PoolWindow pool_window(const PoolProblem& pr, int pi, int qi) {
  PoolWindow win;
  win.hs = pi * pr.stride_h - pr.pad_h;
  win.ws = qi * pr.stride_w - pr.pad_w;
  win.h0 = win.hs > 0 ? win.hs : 0;
  win.w0 = win.ws > 0 ? win.ws : 0;
  win.h1 = win.hs + pr.kernel_h < pr.h ? win.hs + pr.kernel_h : pr.h;
  win.w1 = win.ws + pr.kernel_w < pr.w ? win.ws + pr.kernel_w : pr.w;
  return win;
}

// plane = e / size and at = e % size, in 32-bit arithmetic when e and size fit (a 64-bit
// division is a long software sequence on the GPU; these kernels do one or two per element).
struct PlaneIndex {
  int64_t plane;
  int at;
};
__host__ __device__ inline PlaneIndex plane_index(int64_t e, int64_t size) {
  if (e <= 0xffffffffll && size <= 0xffffffffll) {
    const uint32_t q = uint32_t(e) / uint32_t(size);
    return {int64_t(q), int(uint32_t(e) - q * uint32_t(size))};
  }
  const int64_t q = e / size;
  return {q, int(e - q * size)};
}

// The window of output position o of a plane.
__host__ __device__ inline PoolWindow output_window(const PoolProblem& pr, int o) {
  return pool_window(pr, o / pr.q, o % pr.q);
}

template <class T>
__device__ inline float pool_load(const T* p) {
  return float(*p);
}

// y[e] for e in a grid-stride loop: the window's maximum (from -inf, out = out < v ? v : out,
// std::max's rule: NaN never wins) or its average (double sum in row-major order / count).
template <class T, bool kMax>
__global__ void pool_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, const PoolProblem pr) {
  const int64_t total = pr.planes * pr.out_plane();
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const PlaneIndex ix = plane_index(e, pr.out_plane());
    const PoolWindow win = output_window(pr, ix.at);
    const T* src = x + ix.plane * pr.in_plane();
    float out;
    if (kMax) {
      out = -INFINITY;
      for (int a = win.h0; a < win.h1; ++a)
        for (int b = win.w0; b < win.w1; ++b) {
          const float v = pool_load(src + a * pr.w + b);
          out = out < v ? v : out;
        }
    } else {
      double s = 0.0;
      for (int a = win.h0; a < win.h1; ++a)
        for (int b = win.w0; b < win.w1; ++b) s += pool_load(src + a * pr.w + b);
      out = float(s / double((win.h1 - win.h0) * (win.w1 - win.w0)));
    }
    y[e] = T(out);
  }
}

// Max pooling's backward, pass 1: arg[e] = the offset (a - hs) * kernel_w + (b - ws) of window
// e's first maximum (the CPU's selection: the first valid element, replaced by any later one
// that is greater; a NaN first element keeps its place).
template <class T>
__global__ void pool_argmax_kernel(const T* __restrict__ x, uint8_t* __restrict__ arg,
                                   const PoolProblem pr) {
  const int64_t total = pr.planes * pr.out_plane();
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const PlaneIndex ix = plane_index(e, pr.out_plane());
    const PoolWindow win = output_window(pr, ix.at);
    const T* src = x + ix.plane * pr.in_plane();
    int best_a = win.h0, best_b = win.w0;
    float best_v = pool_load(src + win.h0 * pr.w + win.w0);
    for (int a = win.h0; a < win.h1; ++a)
      for (int b = win.w0; b < win.w1; ++b) {
        const float v = pool_load(src + a * pr.w + b);
        const bool better = v > best_v;
        best_a = better ? a : best_a;
        best_b = better ? b : best_b;
        best_v = better ? v : best_v;
      }
    arg[e] = uint8_t((best_a - win.hs) * pr.kernel_w + (best_b - win.ws));
  }
}

// The first window index covering input position `a` along one axis: the smallest p with
// p * stride - pad + kernel > a, i.e. ceil((a + pad - kernel + 1) / stride), at least 0.
__device__ inline int first_window(int a, int pad, int kernel, int stride) {
  const int t = a + pad - kernel + 1;
  return t <= 0 ? 0 : (t + stride - 1) / stride;
}

// dx[e] for e in a grid-stride loop: the sum over the windows (pi, qi) covering it, in
// row-major window order (the CPU's order of additions), of dy[pi, qi] where the window's
// maximum is this element (kMax: arg from pass 1) or of dy / count (average, the share computed
// in float as the CPU does).
template <class T, bool kMax>
__global__ void pool_bwd_kernel(const T* __restrict__ dy, const uint8_t* __restrict__ arg,
                                T* __restrict__ dx, const PoolProblem pr) {
  const int64_t total = pr.planes * pr.in_plane();
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const PlaneIndex ix = plane_index(e, pr.in_plane());
    const int64_t plane = ix.plane;
    const int a = ix.at / pr.w, b = ix.at % pr.w;
    const int p0 = first_window(a, pr.pad_h, pr.kernel_h, pr.stride_h);
    const int q0 = first_window(b, pr.pad_w, pr.kernel_w, pr.stride_w);
    const int64_t out0 = plane * pr.out_plane();
    float acc = 0.0f;
    for (int pi = p0; pi < pr.p && pi * pr.stride_h - pr.pad_h <= a; ++pi)
      for (int qi = q0; qi < pr.q && qi * pr.stride_w - pr.pad_w <= b; ++qi) {
        const int64_t o = out0 + int64_t(pi) * pr.q + qi;
        const float g = pool_load(dy + o);
        if (kMax) {
          const int hs = pi * pr.stride_h - pr.pad_h, ws = qi * pr.stride_w - pr.pad_w;
          if (int(arg[o]) == (a - hs) * pr.kernel_w + (b - ws)) acc += g;
        } else {
          const PoolWindow win = pool_window(pr, pi, qi);
          acc += g / float((win.h1 - win.h0) * (win.w1 - win.w0));
        }
      }
    dx[e] = T(acc);
  }
}

}  // namespace cudarts::cuda::pool
