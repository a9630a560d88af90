// The pointwise (1x1) convolution kernels (internal; launchers in pointwise.cu): templates on
// the element type T, float accumulation. Included by pointwise.cu and by
// tests/test_pointwise_emulation.cpp, which runs them as host code under an emulation of
// blocks and barriers. Layouts and the covered problems: pointwise.cuh.
#pragma once
#include <cstdint>

#include "pointwise.cuh"

namespace cudarts::cuda::pointwise {

template <class T>
__device__ inline float load_f(const T* p) {
  return float(*p);
}

// Where dst pixel o of a map kernel reads src: -1 off the stride grid (data gradient). Stride 1:
// the same offset; else (row, column) in 32-bit arithmetic (planes < 2^31).
template <bool kBackwardData>
__device__ inline int64_t map_source(const Problem& pr, int64_t o) {
  if (pr.stride_h == 1 && pr.stride_w == 1) return o;
  const int dst_w = kBackwardData ? pr.w : pr.q, src_w = kBackwardData ? pr.q : pr.w;
  const int a = int(o) / dst_w, b = int(o) % dst_w;
  if (!kBackwardData) return int64_t(a) * pr.stride_h * src_w + int64_t(b) * pr.stride_w;
  if (a % pr.stride_h == 0 && b % pr.stride_w == 0)
    return int64_t(a / pr.stride_h) * src_w + b / pr.stride_w;
  return -1;
}

// A map kernel's weight stage: staged[c][d] = weight (d0 + d, c0 + c) for c < cn and
// d0 + d < dst_channels, else 0 (forward: w[d Cin + c]; data gradient: w[c Cin + d]), as
// float4 rows of kOut output channels. Every thread of the block takes part.
template <class T, bool kBackwardData, int kOut>
__device__ inline void stage_map_weights(const T* __restrict__ w, const Problem& pr,
                                         int dst_channels, int c0, int cn, int d0,
                                         float4 (*staged)[kOut / 4]) {
  for (int i = int(threadIdx.x); i < kStagedChannels * kOut; i += kThreads) {
    const int c = i / kOut, j = i % kOut, d = d0 + j;
    float v = 0.0f;
    if (c < cn && d < dst_channels) {
      const int64_t idx =
          kBackwardData ? int64_t(c0 + c) * pr.cin + d : int64_t(d) * pr.cin + (c0 + c);
      v = load_f(w + idx);
    }
    reinterpret_cast<float*>(staged[c])[j] = v;
  }
}

// Map kernel, grid map_grid(d, pr, kPix), kThreads threads: thread t of block (bx, by, n)
// computes dst channels by*16 .. +16 at pixels bx*kThreads*kPix + t + k*kThreads, k < kPix
// (kPixelsPerThread in the library; other values are perf/dev/pointwise_bench's variants),
// each a sum over the src channels in order (weights staged in shared
// memory kStagedChannels channels at a time, read back as float4 broadcasts).
// Forward (kBackwardData false): src x (N, Cin, H, W), dst y (N, Cout, P, Q), weight (d, c) =
// w[d Cin + c]; x read as max(x, 0) with relu_input; y = sum + bias[d] when bias is given.
// Backward data: src dy (N, Cout, P, Q), dst dx (N, Cin, H, W), weight (d, c) = w[c Cin + d];
// dx = 0 at pixels off the stride grid, and where mask (x) is given and x <= 0.
template <class T, bool kBackwardData, int kPix = kPixelsPerThread>
__global__ void __launch_bounds__(kThreads)
    pointwise_map_kernel(const T* __restrict__ src, const T* __restrict__ w,
                         const T* __restrict__ bias, const T* __restrict__ mask,
                         T* __restrict__ dst, const Problem pr) {
  __shared__ float4 staged[kStagedChannels][kTileChannels / 4];  // (c, d): weight (d0 + d, c0 + c)
  const Direction dir = kBackwardData ? Direction::BackwardData : Direction::Forward;
  const MapShape m = map_shape(dir, pr);
  const int t = int(threadIdx.x);
  const int d0 = int(blockIdx.y) * kTileChannels;
  const int64_t n = blockIdx.z;
  const int64_t base = int64_t(blockIdx.x) * kThreads * kPix;

  // Where each of the thread's pixels reads src (-1: off the image, or off the stride grid).
  int64_t at[kPix];
#pragma unroll
  for (int k = 0; k < kPix; ++k) {
    const int64_t o = base + t + int64_t(k) * kThreads;
    at[k] = o < m.dst_plane ? map_source<kBackwardData>(pr, o) : -1;
  }

  float acc[kPix][kTileChannels];
#pragma unroll
  for (int k = 0; k < kPix; ++k)
#pragma unroll
    for (int j = 0; j < kTileChannels; ++j) acc[k][j] = 0.0f;

  const T* src_n = src + n * m.src_channels * m.src_plane;
  for (int c0 = 0; c0 < m.src_channels; c0 += kStagedChannels) {
    const int cn = m.src_channels - c0 < kStagedChannels ? m.src_channels - c0 : kStagedChannels;
    __syncthreads();  // the previous stage's weights are read
    stage_map_weights<T, kBackwardData, kTileChannels>(w, pr, m.dst_channels, c0, cn, d0, staged);
    __syncthreads();
    for (int c = 0; c < cn; ++c) {
      const T* plane = src_n + int64_t(c0 + c) * m.src_plane;
      float v[kPix];
#pragma unroll
      for (int k = 0; k < kPix; ++k) {
        v[k] = at[k] >= 0 ? load_f(plane + at[k]) : 0.0f;
        if (!kBackwardData && pr.relu_input) v[k] = v[k] > 0.0f ? v[k] : 0.0f;
      }
      const float4* wr = staged[c];
#pragma unroll
      for (int q = 0; q < kTileChannels / 4; ++q) {
        const float4 wv = wr[q];
#pragma unroll
        for (int k = 0; k < kPix; ++k) {
          acc[k][4 * q + 0] += wv.x * v[k];
          acc[k][4 * q + 1] += wv.y * v[k];
          acc[k][4 * q + 2] += wv.z * v[k];
          acc[k][4 * q + 3] += wv.w * v[k];
        }
      }
    }
  }

  T* dst_n = dst + n * m.dst_channels * m.dst_plane;
  const T* mask_n = mask ? mask + n * m.dst_channels * m.dst_plane : nullptr;
#pragma unroll
  for (int j = 0; j < kTileChannels; ++j) {
    const int d = d0 + j;
    if (d >= m.dst_channels) break;
    const float b = (!kBackwardData && bias) ? load_f(bias + d) : 0.0f;
#pragma unroll
    for (int k = 0; k < kPix; ++k) {
      const int64_t o = base + t + int64_t(k) * kThreads;
      if (o >= m.dst_plane) continue;
      const int64_t idx = int64_t(d) * m.dst_plane + o;
      float r = acc[k][j];
      if (!kBackwardData && bias) r += b;
      if (kBackwardData && (at[k] < 0 || (mask_n && !(load_f(mask_n + idx) > 0.0f)))) r = 0.0f;
      dst_n[idx] = T(r);
    }
  }
}

// Packed map kernel (the library's), grid packed_map_grid(d, pr, kOut), kThreads threads: thread
// t of block (bx, by) computes dst channels by*kOut .. +kOut at pixel g = bx*kThreads + t of the
// (image, pixel) sequence (image g / P, pixel g % P, P = dst pixels per image), each a sum over
// the src channels in order, as pointwise_map_kernel does (the same products in the same order:
// the same bits); the src values of kMapLoads channels are loaded before their products are
// added, so that many loads are in flight per thread. Weights, ReLU, bias, mask and stride grid
// as pointwise_map_kernel.
template <class T, bool kBackwardData, int kOut>
__global__ void __launch_bounds__(kThreads)
    pointwise_packed_map_kernel(const T* __restrict__ src, const T* __restrict__ w,
                                const T* __restrict__ bias, const T* __restrict__ mask,
                                T* __restrict__ dst, const Problem pr) {
  static_assert(kOut % 4 == 0 && kOut <= kTileChannels, "weights are read as float4");
  __shared__ float4 staged[kStagedChannels][kOut / 4];  // (c, d): weight (d0 + d, c0 + c)
  const Direction dir = kBackwardData ? Direction::BackwardData : Direction::Forward;
  const MapShape m = map_shape(dir, pr);
  const int t = int(threadIdx.x);
  const int d0 = int(blockIdx.y) * kOut;
  const int64_t g = int64_t(blockIdx.x) * kThreads + t;
  const bool live = g < pr.n * m.dst_plane;  // dead threads stay for the barriers
  const int64_t n = live ? g / m.dst_plane : 0;
  const int64_t o = live ? g - n * m.dst_plane : 0;

  // Where the pixel reads src (-1: a dead thread, or off the stride grid).
  const int64_t at = live ? map_source<kBackwardData>(pr, o) : -1;
  const bool reads = at >= 0;
  const T* src_px = src + n * m.src_channels * m.src_plane + (reads ? at : 0);

  float acc[kOut];
#pragma unroll
  for (int j = 0; j < kOut; ++j) acc[j] = 0.0f;

  for (int c0 = 0; c0 < m.src_channels; c0 += kStagedChannels) {
    const int cn = m.src_channels - c0 < kStagedChannels ? m.src_channels - c0 : kStagedChannels;
    __syncthreads();  // the previous stage's weights are read
    stage_map_weights<T, kBackwardData, kOut>(w, pr, m.dst_channels, c0, cn, d0, staged);
    __syncthreads();
    const T* plane = src_px + int64_t(c0) * m.src_plane;
    int c = 0;
    for (; c + kMapLoads <= cn; c += kMapLoads) {
      float v[kMapLoads];
#pragma unroll
      for (int u = 0; u < kMapLoads; ++u) {
        v[u] = reads ? load_f(plane + int64_t(c + u) * m.src_plane) : 0.0f;
        if (!kBackwardData && pr.relu_input) v[u] = v[u] > 0.0f ? v[u] : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kMapLoads; ++u) {
        const float4* wr = staged[c + u];
#pragma unroll
        for (int q = 0; q < kOut / 4; ++q) {
          const float4 wv = wr[q];
          acc[4 * q + 0] += wv.x * v[u];
          acc[4 * q + 1] += wv.y * v[u];
          acc[4 * q + 2] += wv.z * v[u];
          acc[4 * q + 3] += wv.w * v[u];
        }
      }
    }
    for (; c < cn; ++c) {
      float v = reads ? load_f(plane + int64_t(c) * m.src_plane) : 0.0f;
      if (!kBackwardData && pr.relu_input) v = v > 0.0f ? v : 0.0f;
      const float4* wr = staged[c];
#pragma unroll
      for (int q = 0; q < kOut / 4; ++q) {
        const float4 wv = wr[q];
        acc[4 * q + 0] += wv.x * v;
        acc[4 * q + 1] += wv.y * v;
        acc[4 * q + 2] += wv.z * v;
        acc[4 * q + 3] += wv.w * v;
      }
    }
  }

  if (!live) return;  // no barrier follows
  const int64_t out0 = n * m.dst_channels * m.dst_plane + o;
  const bool masked_out = kBackwardData && !reads;
#pragma unroll
  for (int j = 0; j < kOut; ++j) {
    const int d = d0 + j;
    if (d >= m.dst_channels) break;
    const int64_t idx = out0 + int64_t(d) * m.dst_plane;
    float r = acc[j];
    if (!kBackwardData && bias) r += load_f(bias + d);
    if (masked_out || (kBackwardData && mask && !(load_f(mask + idx) > 0.0f))) r = 0.0f;
    dst[idx] = T(r);
  }
}

// Filter gradient, stage 1, grid (co_tiles * ci_tiles, chunks), kThreads threads: thread
// t = 16 j + i of block (tile, chunk) sums dy[n, co, o] * x'[n, ci, o] (x' = x at the strided
// input pixel, max(x, 0) with relu_input; co = tile's co0 + j, ci = ci0 + i) over the chunk's
// units in order, each unit's 64 pixels in order (both staged in shared memory, rows padded to
// kUnitStride; the next unit's values are loaded into registers while the current one is summed).
// One chunk: dw[co Cin + ci] += sum; else partials[(chunk Cout + co) Cin + ci] = sum.
template <class T>
__global__ void __launch_bounds__(kThreads)
    pointwise_bwd_filter_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                float* __restrict__ partials, T* __restrict__ dw, const Problem pr,
                                const FilterSplit sp) {
  __shared__ float dys[kTileChannels][kUnitStride];
  __shared__ float xs[kTileChannels][kUnitStride];
  const int t = int(threadIdx.x);
  const int j = t / kTileChannels, i = t % kTileChannels;
  const int co0 = int(blockIdx.x / unsigned(sp.ci_tiles)) * kTileChannels;
  const int ci0 = int(blockIdx.x % unsigned(sp.ci_tiles)) * kTileChannels;
  const int64_t chunk = blockIdx.y;
  const int64_t plane_out = pr.out_plane(), plane_in = pr.in_plane();
  const int64_t tiles_per_image = ceil_div(plane_out, kUnitPixels);
  const int64_t u_begin = chunk * sp.units_per_chunk;
  const int64_t u_end =
      u_begin + sp.units_per_chunk < sp.units ? u_begin + sp.units_per_chunk : sp.units;

  // The thread's kStage elements of a unit: loaded into registers one unit ahead (in flight
  // while the current unit's products are added), stored to the tiles after the barrier.
  constexpr int kStage = kTileChannels * kUnitPixels / kThreads;
  static_assert(kStage * kThreads == kTileChannels * kUnitPixels, "whole stages per thread");
  float g[kStage], v[kStage];
  const auto load_unit = [&](int64_t u) {
    const int64_t n = u / tiles_per_image;
    const int64_t o0 = (u % tiles_per_image) * kUnitPixels;
#pragma unroll
    for (int s = 0; s < kStage; ++s) {
      const int e = t + s * kThreads;
      const int row = e / kUnitPixels, k = e % kUnitPixels;
      const int64_t o = o0 + k;
      g[s] = 0.0f;
      v[s] = 0.0f;
      if (o < plane_out) {
        if (co0 + row < pr.cout) g[s] = load_f(dy + (n * pr.cout + co0 + row) * plane_out + o);
        if (ci0 + row < pr.cin) {
          int64_t at = o;  // stride 1: the same offset; else (row, column), 32-bit
          if (pr.stride_h != 1 || pr.stride_w != 1) {
            const int a = int(o) / pr.q, b = int(o) % pr.q;
            at = int64_t(a) * pr.stride_h * pr.w + int64_t(b) * pr.stride_w;
          }
          v[s] = load_f(x + (n * pr.cin + ci0 + row) * plane_in + at);
          if (pr.relu_input) v[s] = v[s] > 0.0f ? v[s] : 0.0f;
        }
      }
    }
  };

  float acc = 0.0f;
  if (u_begin < u_end) load_unit(u_begin);
  for (int64_t u = u_begin; u < u_end; ++u) {
    __syncthreads();  // the previous unit's tiles are read
#pragma unroll
    for (int s = 0; s < kStage; ++s) {
      const int e = t + s * kThreads;
      dys[e / kUnitPixels][e % kUnitPixels] = g[s];
      xs[e / kUnitPixels][e % kUnitPixels] = v[s];
    }
    __syncthreads();
    if (u + 1 < u_end) load_unit(u + 1);
#pragma unroll 16
    for (int k = 0; k < kUnitPixels; ++k) acc += dys[j][k] * xs[i][k];
  }

  const int co = co0 + j, ci = ci0 + i;
  if (co >= pr.cout || ci >= pr.cin) return;
  const int64_t entry = int64_t(co) * pr.cin + ci;
  if (sp.chunks == 1) {
    dw[entry] = T(load_f(dw + entry) + acc);
  } else {
    partials[chunk * int64_t(pr.cout) * pr.cin + entry] = acc;
  }
}

// Filter gradient, stage 2, grid ceil(Cout Cin / 32), kThreads threads: entry e = 32 bx + lane
// (lane = t % 32); lane group l = t / 32 sums chunks l, l + kFinishLanes, ... in order, then
// the kFinishLanes sums are added in order l = 0, 1, ... and dw[e] += total.
template <class T>
__global__ void __launch_bounds__(kThreads)
    pointwise_bwd_filter_finish_kernel(const float* __restrict__ partials, T* __restrict__ dw,
                                       int64_t entries, int64_t chunks) {
  __shared__ float sums[kFinishLanes][32];
  const int t = int(threadIdx.x);
  const int lane = t % 32, l = t / 32;
  const int64_t e = int64_t(blockIdx.x) * 32 + lane;
  float s = 0.0f;
  if (e < entries)
    for (int64_t c = l; c < chunks; c += kFinishLanes) s += partials[c * entries + e];
  sums[l][lane] = s;
  __syncthreads();
  if (l != 0 || e >= entries) return;
  float total = 0.0f;
#pragma unroll
  for (int g = 0; g < kFinishLanes; ++g) total += sums[g][lane];
  dw[e] = T(load_f(dw + e) + total);
}

}  // namespace cudarts::cuda::pointwise
