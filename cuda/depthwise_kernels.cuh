// Depthwise convolution kernels and their launchers (internal; the geometry is planned in
// depthwise.cuh). Templates on the element type T (compute in float) and the kernel size R x S,
// so the weights and the tap sums live in registers. y and dx are written (=); dw and dbias
// accumulate (+=). No atomics: every sum runs in an order fixed by the shapes.
//
// Included by depthwise.cu (the library's instances), perf/dev/depthwise_bench.cu (the same
// kernels with other parameters) and tests/test_depthwise_emulation.cpp (the kernels run as host
// code under an emulation of blocks, barriers and shuffles); internal linkage, so each binary
// has its own copy.
#pragma once
#include <type_traits>

#ifndef CUDARTS_KERNEL_EMULATION
#include <cuda_pipeline.h>
#endif

#include "check.h"
#include "depthwise.cuh"

namespace cudarts::cuda::depthwise {
namespace {

// Asynchronous global -> shared copies of one 4-byte element (cp.async on sm_80 and later, through
// cuda_pipeline.h), their commit as one group, and the wait for all but the `kPending` most
// recent groups. Under the host emulation (CUDARTS_KERNEL_EMULATION) a copy happens at once and
// commit and wait do nothing: the same values in the same places.
#ifdef CUDARTS_KERNEL_EMULATION
template <class T>
inline void copy_async(T* dst_shared, const T* src_global) {
  *dst_shared = *src_global;
}
inline void copy_async_commit() {}
template <int kPending>
inline void copy_async_wait() {}
#else
template <class T>
__device__ __forceinline__ void copy_async(T* dst_shared, const T* src_global) {
  static_assert(sizeof(T) == 4, "cp.async copies 4, 8 or 16 bytes");
  __pipeline_memcpy_async(dst_shared, src_global, sizeof(T));
}
__device__ __forceinline__ void copy_async_commit() {
  __pipeline_commit();
}
template <int kPending>
__device__ __forceinline__ void copy_async_wait() {
  __pipeline_wait_prior(kPending);
}
#endif

template <class T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// ceil(a / b) for b > 0 and any sign of a.
__device__ __forceinline__ int ceil_div_signed(int a, int b) {
  return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

// The (row, column) of tile item `first` and of the items after it, `step` apart: one division
// for the first, then one carry per step (no integer division per item).
struct TileCursor {
  int oh, ow, step_oh, step_ow, width;
  __device__ TileCursor(int first, int step, int tile_w)
      : oh(first / tile_w),
        ow(first % tile_w),
        step_oh(step / tile_w),
        step_ow(step % tile_w),
        width(tile_w) {}
  __device__ void advance() {
    ow += step_ow;
    oh += step_oh;
    if (ow >= width) ow -= width, ++oh;
  }
};

// Stages `planes` tiles of in_h x in_w elements into `tile` (row-major, tile after tile): the
// window starting at (row0, col0) of source planes first_plane + i, i < planes (plane stride
// src_h * src_w elements). Elements outside the source plane, and whole tiles i >= valid, are 0.
// With `relu` each element is staged as max(v, 0) (v > 0 ? v : 0, relu_fwd's rule): a fused
// ReLU. Every thread of the block takes part; the caller synchronises. kCursor: element i's
// (tile, row, column) is kept and advanced by kThreads with one carry per digit instead of two
// integer divisions per element; the filter gradients take the divisions (their register cap of
// __launch_bounds__(kThreads, 4) would spill the cursor). The same elements either way.
// kAsync (no ReLU): the elements inside the source are copied asynchronously (copy_async, not
// committed here), the zeros stored at once; the caller commits, waits and synchronises.
template <class T, bool kCursor = true, bool kAsync = false>
__device__ __forceinline__ void stage_tiles(const T* __restrict__ src, int64_t first_plane,
                                            int valid, int planes, int src_h, int src_w, int row0,
                                            int col0, int in_h, int in_w, bool relu,
                                            T* __restrict__ tile) {
  const int per_tile = in_h * in_w, total = planes * per_tile;
  const int64_t plane_size = int64_t(src_h) * src_w;
  // Element i = pl * per_tile + ih * in_w + iw; advanced by kThreads = (d_pl, d_ih, d_iw).
  int pl = int(threadIdx.x) / per_tile, ih = (int(threadIdx.x) % per_tile) / in_w,
      iw = int(threadIdx.x) % in_w;
  const int d_pl = kThreads / per_tile, d_ih = (kThreads % per_tile) / in_w, d_iw = kThreads % in_w;
  for (int i = threadIdx.x; i < total; i += kThreads) {
    if (!kCursor) {
      pl = i / per_tile;
      const int rem = i - pl * per_tile;
      ih = rem / in_w;
      iw = rem - ih * in_w;
    }
    const int gh = row0 + ih, gw = col0 + iw;
    const bool inside = pl < valid && gh >= 0 && gh < src_h && gw >= 0 && gw < src_w;
    if constexpr (kAsync) {
      if (inside)
        copy_async(tile + i, src + ((first_plane + pl) * plane_size + int64_t(gh) * src_w + gw));
      else
        tile[i] = T(0.0f);
    } else {
      T v = T(0.0f);
      if (inside) v = src[(first_plane + pl) * plane_size + int64_t(gh) * src_w + gw];
      if (relu && !(to_float(v) > 0.0f)) v = T(0.0f);
      tile[i] = v;
    }
    if (kCursor) {
      iw += d_iw;
      ih += d_ih;
      pl += d_pl;
      if (iw >= in_w) iw -= in_w, ++ih;
      if (ih >= in_h) ih -= in_h, ++pl;
    }
  }
}

// The planes and tile of a tile kernel's block (grid: plane groups, then tiles): the first plane,
// how many of the block's planes exist, and the tile's first output row and column.
struct BlockTile {
  int64_t plane0;
  int valid, row0, col0;
};
__device__ __forceinline__ BlockTile block_tile(int64_t planes_total, const Tiling& t) {
  const int64_t plane0 = int64_t(blockIdx.x) * t.planes;
  const int tile_row = int(blockIdx.y) / t.tiles_w, tile_col = int(blockIdx.y) % t.tiles_w;
  return {plane0, int(min64(t.planes, planes_total - plane0)), tile_row * t.tile_h,
          tile_col * t.tile_w};
}

// The forward kernels' staging: the x window of the block's output tile (the ReLU applied when
// fused). The caller synchronises.
template <class T>
__device__ __forceinline__ void stage_forward_input(const T* __restrict__ x, const Problem& pr,
                                                    const Tiling& t, const BlockTile& b,
                                                    T* __restrict__ tiles) {
  stage_tiles(x, b.plane0, b.valid, t.planes, pr.h, pr.w, b.row0 * pr.stride_h - pr.pad_h,
              b.col0 * pr.stride_w - pr.pad_w, t.in_h, t.in_w, pr.relu_input, tiles);
}

// ---------------------------------------------------------------- forward
// One plane's outputs of a tile from its staged input `in` (the tile's window, tap (0, 0) of
// output (0, 0) at in[0]): out[p, q] = sum over taps r, then s, of w[r, s] in[...] (fmaf, float),
// plus b last. The thread serves outputs lane, lane + per_plane, ..., V at a time (V independent
// accumulators; output i of the slot goes to thread i % per_plane, so neighbouring threads read
// neighbouring shared-memory words). Shared by the single and the group forward kernels, so a
// convolution gives the same bits in both.
template <class T, int R, int S, int V>
__device__ __forceinline__ void plane_forward(const T* __restrict__ in, const T* __restrict__ w,
                                              float b, T* __restrict__ out, int dil_h, int dil_w,
                                              const Problem& pr, const Tiling& t, int oh0, int ow0,
                                              int lane, int per_plane) {
  float wr[R * S];
#pragma unroll
  for (int k = 0; k < R * S; ++k) wr[k] = to_float(w[k]);
  const int count = t.tile_h * t.tile_w, row_step = dil_h * t.in_w;
  TileCursor cur(lane, per_plane, t.tile_w);  // items lane, lane + per_plane, ... in order
  for (int base = lane; base < count; base += V * per_plane) {
    int off[V], dst[V];
    bool ok[V];
    float acc[V];
#pragma unroll
    for (int v = 0; v < V; ++v, cur.advance()) {
      const int item = base + v * per_plane;
      const int oh = cur.oh, ow = cur.ow;
      ok[v] = item < count && oh0 + oh < pr.p && ow0 + ow < pr.q;
      off[v] = ok[v] ? oh * pr.stride_h * t.in_w + ow * pr.stride_w : 0;  // 0: a safe address
      dst[v] = ok[v] ? (oh0 + oh) * pr.q + ow0 + ow : 0;
      acc[v] = 0.0f;
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const int tap = r * row_step + s * dil_w;
#pragma unroll
        for (int v = 0; v < V; ++v)
          acc[v] = fmaf(wr[r * S + s], to_float(in[off[v] + tap]), acc[v]);
      }
#pragma unroll
    for (int v = 0; v < V; ++v)
      if (ok[v]) out[dst[v]] = T(acc[v] + b);
  }
}

// y[n,c,p,q] = sum_{r,s} w[c,r,s] x[n,c, p*sh - ph + r*dh, q*sw - pw + s*dw] (+ bias[c]).
// Grid (ceil(N*C / planes), tiles); the block stages its planes' x tiles once, each thread keeps
// its plane's R*S weights in registers and computes its outputs V at a time (V independent
// accumulators; output i of the slot goes to thread i % threads_per_plane, so neighbouring
// threads read neighbouring shared-memory words). Taps in order r, then s; bias last.
template <class T, int R, int S, int V>
__global__ void __launch_bounds__(kThreads)
    depthwise_fwd_kernel(const T* __restrict__ x,     // (N, C, H, W)
                         const T* __restrict__ w,     // (C, 1, R, S)
                         const T* __restrict__ bias,  // (C) or nullptr
                         T* __restrict__ y,           // (N, C, P, Q)
                         Problem pr, Tiling t) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tiles = reinterpret_cast<T*>(smem);
  const BlockTile b = block_tile(pr.n * pr.c, t);
  const int64_t plane0 = b.plane0;
  const int valid = b.valid, oh0 = b.row0, ow0 = b.col0;
  stage_forward_input(x, pr, t, b, tiles);
  __syncthreads();

  const int per_plane = kThreads / t.planes;
  const int slot = threadIdx.x / per_plane, lane = threadIdx.x % per_plane;
  if (slot >= valid) return;  // no barrier follows
  const int64_t plane = plane0 + slot;
  const int64_t ch = plane % pr.c;
  plane_forward<T, R, S, V>(tiles + slot * (t.in_h * t.in_w), w + ch * (R * S),
                            bias ? to_float(bias[ch]) : 0.0f, y + plane * pr.out_plane(), pr.dil_h,
                            pr.dil_w, pr, t, oh0, ow0, lane, per_plane);
}

// ---------------------------------------------------------------- backward data
// The dx items base, base + per_plane, ... (V of them) of one plane's tile at (h0, w0), gathered
// from the staged dy tile `in` (rows from p_lo, columns from q_lo, in_w wide): acc[v] = sum over
// taps r, then s, of wr[r, s] dy[...] (fmaf, float); ok[v]: the item is inside dx, dst[v] its
// offset in the plane. Shared by the single and the group kernels (the same bits in both).
// kUnitStride: the convolution has stride 1 in both directions, known at compile time, so the
// taps need no divisibility test and no division (R + S integer divisions per output otherwise,
// which cost more than the R * S multiply-adds); the same positions, the same bits.
template <class T, int R, int S, int V, bool kUnitStride = false>
__device__ __forceinline__ void plane_gather(const T* __restrict__ in, const float (&wr)[R * S],
                                             int base, int p_lo, int q_lo, int pad_h, int pad_w,
                                             int dil_h, int dil_w, int in_w, const Problem& pr,
                                             const Tiling& t, int h0, int w0, int per_plane,
                                             float (&acc)[V], bool (&ok)[V], int (&dst)[V]) {
  const int count = t.tile_h * t.tile_w;
  // Offsets of dx row / column 0 of the tile from the first staged dy row / column, in input
  // positions: row h0 + oh meets staged dy row (oh + row_base - r*dh) / sh through tap r.
  const int row_base = h0 + pad_h - p_lo * pr.stride_h;
  const int col_base = w0 + pad_w - q_lo * pr.stride_w;
  TileCursor cur(base, per_plane, t.tile_w);
#pragma unroll
  for (int v = 0; v < V; ++v, cur.advance()) {
    const int item = base + v * per_plane;
    const int oh = cur.oh, ow = cur.ow;
    ok[v] = item < count && h0 + oh < pr.h && w0 + ow < pr.w;
    dst[v] = ok[v] ? (h0 + oh) * pr.w + w0 + ow : 0;
    acc[v] = 0.0f;
    if (!ok[v]) continue;
    int row[R], col[S];  // staged offsets of the tap's dy element; -1: no dy element
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int a = oh + row_base - r * dil_h;  // <= tile_h - 1 + (R-1) dh: row < in_h
      row[r] = (a >= 0 && (kUnitStride || a % pr.stride_h == 0))
                   ? (kUnitStride ? a : a / pr.stride_h) * in_w
                   : -1;
    }
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int a = ow + col_base - s * dil_w;
      col[s] = (a >= 0 && (kUnitStride || a % pr.stride_w == 0))
                   ? (kUnitStride ? a : a / pr.stride_w)
                   : -1;
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const bool hit = row[r] >= 0 && col[s] >= 0;
        const float g = hit ? to_float(in[row[r] + col[s]]) : 0.0f;
        acc[v] = fmaf(wr[r * S + s], g, acc[v]);
      }
  }
}

// dx[n,c,h,w] = sum over taps (r, s) with h + ph - r*dh = p*sh, w + pw - s*dw = q*sw, 0 <= p < P,
// 0 <= q < Q, of w[c,r,s] dy[n,c,p,q]: a gather, each dx element written once, taps in order r,
// then s. The block stages the dy rows p_lo .. p_lo + in_h - 1 (and columns likewise) that can
// reach its dx tile; p_lo = ceil((h0 + ph - (R-1) dh) / sh) is the first. Row and column
// divisibility are tested apart (R + S tests per output instead of R * S). With a fused ReLU
// (mask = the forward input x) an element is written as 0 where x <= 0 (relu_bwd's rule).
// kUnitStride: plane_gather's (launchers: with_stride_kind). Kernels up to 5x5 at 4 blocks per
// SM: the 5x5 instances took 80 registers (3 blocks), with the bound 64, no spills (ptxas -v,
// sm_90; 7x7 would spill 84-132 bytes: 2 blocks, its 128 registers as before). Compiles; its time
// on a GPU not yet measured (2026-12-04, evening).
template <class T, int R, int S, int V, bool kUnitStride = false>
__global__ void __launch_bounds__(kThreads, (R * S <= 25) ? 4 : 2)
    depthwise_bwd_data_kernel(const T* __restrict__ dy,    // (N, C, P, Q)
                              const T* __restrict__ w,     // (C, 1, R, S)
                              const T* __restrict__ mask,  // (N, C, H, W) or nullptr
                              T* __restrict__ dx,          // (N, C, H, W)
                              Problem pr, Tiling t) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tiles = reinterpret_cast<T*>(smem);
  const BlockTile b = block_tile(pr.n * pr.c, t);
  const int64_t plane0 = b.plane0;
  const int valid = b.valid, h0 = b.row0, w0 = b.col0;
  const int p_lo = ceil_div_signed(h0 + pr.pad_h - (R - 1) * pr.dil_h, pr.stride_h);
  const int q_lo = ceil_div_signed(w0 + pr.pad_w - (S - 1) * pr.dil_w, pr.stride_w);
  stage_tiles(dy, plane0, valid, t.planes, pr.p, pr.q, p_lo, q_lo, t.in_h, t.in_w, false, tiles);
  __syncthreads();

  const int per_plane = kThreads / t.planes;
  const int slot = threadIdx.x / per_plane, lane = threadIdx.x % per_plane;
  if (slot >= valid) return;  // no barrier follows
  const int64_t plane = plane0 + slot;
  const int64_t ch = plane % pr.c;
  float wr[R * S];
#pragma unroll
  for (int k = 0; k < R * S; ++k) wr[k] = to_float(w[ch * (R * S) + k]);
  const T* in = tiles + slot * (t.in_h * t.in_w);
  T* out = dx + plane * pr.in_plane();
  const T* keep = mask ? mask + plane * pr.in_plane() : nullptr;
  const int count = t.tile_h * t.tile_w;
  for (int base = lane; base < count; base += V * per_plane) {
    float acc[V];
    bool ok[V];
    int dst[V];
    plane_gather<T, R, S, V, kUnitStride>(in, wr, base, p_lo, q_lo, pr.pad_h, pr.pad_w, pr.dil_h,
                                          pr.dil_w, t.in_w, pr, t, h0, w0, per_plane, acc, ok, dst);
#pragma unroll
    for (int v = 0; v < V; ++v)
      if (ok[v]) out[dst[v]] = (keep && !(to_float(keep[dst[v]]) > 0.0f)) ? T(0.0f) : T(acc[v]);
  }
}

// ---------------------------------------------------------------- backward filter
// Stage 1. Grid (ceil(C / planes), chunks). Block (group, chunk) serves channels
// c0 .. c0 + planes - 1 over the units (sample, tile) of its chunk, in order: it stages the x
// tiles of those channels, each thread reads its dy elements straight from global memory (each
// is used once, by one thread) and adds dy * x into R*S tap sums and dy into a bias sum, all in
// registers. Then per channel: an xor-shuffle tree over groups of min(threads per channel, 32)
// lanes, the group leaders' sums through shared memory, summed in leader order. With one chunk
// the result is added into dw / dbias, else written to partials (chunks, C, R*S+1).
// One unit of filter_block with the thread's dy values loaded before the x tile is staged, so
// both loads are in flight together (depthwise_bench's filter variant 4, kPreload): the items
// lane, lane + per_plane, ... (at most kOutputsInFlight: a tile has at most kTileOutputs outputs
// over its planes) and their products in filter_block's order, so the same bits. It takes
// 20-60 % more registers (ptxas, sm_90). Every thread calls it (barriers inside).
template <class T, int R, int S>
__device__ __forceinline__ void filter_unit_preloaded(const T* __restrict__ x,
                                                      const T* __restrict__ dy, const Problem& pr,
                                                      const Tiling& t, int64_t n, int64_t c0,
                                                      int valid, int slot, int lane, int per_plane,
                                                      int oh0, int ow0, T* tiles, const T* in,
                                                      float (&acc)[R * S + 1]) {
  static_assert(kTileOutputs <= int64_t(kOutputsInFlight) * kThreads, "items per thread");
  constexpr int K = R * S;
  const int count = t.tile_h * t.tile_w, row_step = pr.dil_h * t.in_w;
  const T* g = dy + (n * pr.c + c0 + (slot < valid ? slot : 0)) * pr.out_plane();
  float gv[kOutputsInFlight];
  int at[kOutputsInFlight];  // the item's offset in the staged tile, -1: none
#pragma unroll
  for (int v = 0; v < kOutputsInFlight; ++v) {
    const int item = lane + v * per_plane;
    const int oh = item / t.tile_w, ow = item % t.tile_w;
    const bool has = slot < valid && item < count && oh0 + oh < pr.p && ow0 + ow < pr.q;
    at[v] = has ? oh * pr.stride_h * t.in_w + ow * pr.stride_w : -1;
    gv[v] = has ? to_float(g[(oh0 + oh) * pr.q + ow0 + ow]) : 0.0f;
  }
  __syncthreads();  // the previous unit's tiles are no longer read
  stage_tiles<T, false>(x, n * pr.c + c0, valid, t.planes, pr.h, pr.w, oh0 * pr.stride_h - pr.pad_h,
                        ow0 * pr.stride_w - pr.pad_w, t.in_h, t.in_w, pr.relu_input, tiles);
  __syncthreads();
#pragma unroll
  for (int v = 0; v < kOutputsInFlight; ++v) {
    if (at[v] < 0) continue;
    const T* src = in + at[v];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int s = 0; s < S; ++s)
        acc[r * S + s] = fmaf(gv[v], to_float(src[r * row_step + s * pr.dil_w]), acc[r * S + s]);
    acc[K] += gv[v];
  }
}

// One unit's items of filter_block (lane, lane + per_plane, ... of the tile at (oh0, ow0)): their
// dy values from g (the plane's dy), their taps from the staged x tile `in`, each item's
// products added in tap order. `relu_on_read`: the tile holds x itself and the fused ReLU is
// applied as a tap is read (the pipelined staging copies x as it is); max(v, 0) either way.
template <class T, int R, int S>
__device__ __forceinline__ void filter_items(const T* in, const T* __restrict__ g,
                                             const Problem& pr, const Tiling& t, int lane,
                                             int per_plane, int oh0, int ow0, bool relu_on_read,
                                             float (&acc)[R * S + 1]) {
  constexpr int K = R * S;
  const int count = t.tile_h * t.tile_w, row_step = pr.dil_h * t.in_w;
  for (int item = lane; item < count; item += per_plane) {
    const int oh = item / t.tile_w, ow = item % t.tile_w;
    if (oh0 + oh >= pr.p || ow0 + ow >= pr.q) continue;
    const float gv = to_float(g[(oh0 + oh) * pr.q + ow0 + ow]);
    const T* src = in + oh * pr.stride_h * t.in_w + ow * pr.stride_w;
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int s = 0; s < S; ++s) {
        float v = to_float(src[r * row_step + s * pr.dil_w]);
        if (relu_on_read && !(v > 0.0f)) v = 0.0f;
        acc[r * S + s] = fmaf(gv, v, acc[r * S + s]);
      }
    acc[K] += gv;
  }
}

// The block of channel group `cgroup` and chunk `chunk` (the single kernel's blockIdx.x and .y),
// its shared memory at smem; shared by the single and the group kernels, so a convolution's
// partial sums are the same bits in both.
template <class T, int R, int S, bool kPreload = false, bool kPipelined = false>
__device__ __forceinline__ void filter_block(const T* __restrict__ x, const T* __restrict__ dy,
                                             float* __restrict__ partials, T* __restrict__ dw,
                                             T* __restrict__ dbias, const Problem& pr,
                                             const Tiling& t, const FilterSplit& sp, int64_t cgroup,
                                             int64_t chunk, unsigned char* smem) {
  constexpr int K = R * S, KT = K + 1;
  T* tiles = reinterpret_cast<T*>(smem);
  // kPipelined: two tile buffers (filter_double_buffer_fits), the leader sums after them.
  float* leader_sums = reinterpret_cast<float*>(smem + (kPipelined ? 2 : 1) * t.tile_bytes);
  const int64_t c0 = cgroup * t.planes;
  const int valid = int(min64(t.planes, pr.c - c0));
  const int per_plane = kThreads / t.planes;
  const int slot = threadIdx.x / per_plane, lane = threadIdx.x % per_plane;
  const int64_t u_begin = chunk * sp.units_per_chunk;
  const int64_t u_end = min64(sp.units, u_begin + sp.units_per_chunk);
  const int64_t tiles_per_plane = t.tiles();
  const T* in = tiles + slot * (t.in_h * t.in_w);

  float acc[KT];
#pragma unroll
  for (int k = 0; k < KT; ++k) acc[k] = 0.0f;
  if constexpr (kPipelined) {
    // The next unit's x tile copied asynchronously (as it is: the ReLU applied on read) into
    // the other buffer while this unit's products are added; the same products in the same
    // order, so the same bits.
    const int64_t buffer = int64_t(t.tile_bytes / sizeof(T));
    const auto stage_unit = [&](int64_t u, T* into) {
      const int64_t n = u / tiles_per_plane;
      const int tile = int(u - n * tiles_per_plane);
      const int oh0 = (tile / t.tiles_w) * t.tile_h, ow0 = (tile % t.tiles_w) * t.tile_w;
      stage_tiles<T, false, true>(x, n * pr.c + c0, valid, t.planes, pr.h, pr.w,
                                  oh0 * pr.stride_h - pr.pad_h, ow0 * pr.stride_w - pr.pad_w,
                                  t.in_h, t.in_w, false, into);
      copy_async_commit();
    };
    if (u_begin < u_end) stage_unit(u_begin, tiles);
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int k = int((u - u_begin) & 1);
      if (u + 1 < u_end) {
        stage_unit(u + 1, tiles + (k ^ 1) * buffer);
        copy_async_wait<1>();
      } else {
        copy_async_wait<0>();
      }
      __syncthreads();  // unit u's tile is complete for every thread
      if (slot < valid) {
        const int64_t n = u / tiles_per_plane;
        const int tile = int(u - n * tiles_per_plane);
        const int oh0 = (tile / t.tiles_w) * t.tile_h, ow0 = (tile % t.tiles_w) * t.tile_w;
        filter_items<T, R, S>(tiles + k * buffer + slot * (t.in_h * t.in_w),
                              dy + (n * pr.c + c0 + slot) * pr.out_plane(), pr, t, lane, per_plane,
                              oh0, ow0, pr.relu_input, acc);
      }
      __syncthreads();  // this buffer is read before unit u + 2 is copied into it
    }
  }
  for (int64_t u = u_begin; u < u_end && !kPipelined; ++u) {
    const int64_t n = u / tiles_per_plane;
    const int tile = int(u - n * tiles_per_plane);
    const int oh0 = (tile / t.tiles_w) * t.tile_h, ow0 = (tile % t.tiles_w) * t.tile_w;
    if constexpr (kPreload) {
      filter_unit_preloaded<T, R, S>(x, dy, pr, t, n, c0, valid, slot, lane, per_plane, oh0, ow0,
                                     tiles, in, acc);
      continue;
    }
    __syncthreads();  // the previous unit's tiles are no longer read
    stage_tiles<T, false>(x, n * pr.c + c0, valid, t.planes, pr.h, pr.w,
                          oh0 * pr.stride_h - pr.pad_h, ow0 * pr.stride_w - pr.pad_w, t.in_h,
                          t.in_w, pr.relu_input, tiles);
    __syncthreads();
    if (slot < valid)
      filter_items<T, R, S>(in, dy + (n * pr.c + c0 + slot) * pr.out_plane(), pr, t, lane,
                            per_plane, oh0, ow0, false, acc);
  }

  // Every thread arrives here (no early exit above), so the full-warp shuffles are safe.
  const int width = per_plane < kWarpSize ? per_plane : kWarpSize;
  for (int o = width / 2; o > 0; o >>= 1)
#pragma unroll
    for (int k = 0; k < KT; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], o);
  if (threadIdx.x % width == 0) {
    float* dst = leader_sums + (threadIdx.x / width) * KT;
#pragma unroll
    for (int k = 0; k < KT; ++k) dst[k] = acc[k];
  }
  __syncthreads();
  const int leaders = per_plane / width;  // per channel
  for (int i = threadIdx.x; i < valid * KT; i += kThreads) {
    const int sl = i / KT, k = i % KT;
    float sum = 0.0f;
    for (int j = 0; j < leaders; ++j) sum += leader_sums[(sl * leaders + j) * KT + k];
    const int64_t ch = c0 + sl;
    if (sp.chunks == 1) {
      if (k < K)
        dw[ch * K + k] = T(to_float(dw[ch * K + k]) + sum);
      else if (dbias)
        dbias[ch] = T(to_float(dbias[ch]) + sum);
    } else {
      partials[(chunk * pr.c + ch) * KT + k] = sum;
    }
  }
}

template <class T, int R, int S, bool kPreload = false, bool kPipelined = false>
__global__ void __launch_bounds__(kThreads)
    depthwise_bwd_filter_kernel(const T* __restrict__ x,       // (N, C, H, W)
                                const T* __restrict__ dy,      // (N, C, P, Q)
                                float* __restrict__ partials,  // (chunks, C, R*S+1) or unused
                                T* __restrict__ dw,            // (C, 1, R, S), +=
                                T* __restrict__ dbias,         // (C) or nullptr, +=
                                Problem pr, Tiling t, FilterSplit sp) {
  extern __shared__ __align__(16) unsigned char smem[];
  filter_block<T, R, S, kPreload, kPipelined>(x, dy, partials, dw, dbias, pr, t, sp, blockIdx.x,
                                              blockIdx.y, smem);
}

// Stage 2: dw[c, tap] += sum over chunks j = 0, 1, ... of partials[j, c, tap] (tap < taps), and
// dbias[c] += the same sum of the bias slot (tap == taps) when dbias is given. One thread per
// (channel, tap), grid-stride.
template <class T>
__global__ void __launch_bounds__(kThreads)
    depthwise_bwd_filter_finish_kernel(const float* __restrict__ partials,  // (chunks, C, taps+1)
                                       int64_t chunks, int64_t channels, int taps,
                                       T* __restrict__ dw,     // (C, 1, R, S), +=
                                       T* __restrict__ dbias)  // (C) or nullptr, +=
{
  const int kt = taps + 1;
  const int64_t total = channels * kt;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = i / kt;
    const int k = int(i - ch * kt);
    if (k == taps && !dbias) continue;
    float sum = 0.0f;
    for (int64_t j = 0; j < chunks; ++j) sum += partials[(j * channels + ch) * kt + k];
    if (k < taps)
      dw[ch * taps + k] = T(to_float(dw[ch * taps + k]) + sum);
    else
      dbias[ch] = T(to_float(dbias[ch]) + sum);
  }
}

// ---------------------------------------------------------------- groups
// The members' pointers, passed by value in the kernel parameters.
template <class T>
struct GroupInputs {
  const T* x[kMaxGroup];
};
template <class T>
struct GroupOutputs {
  T* x[kMaxGroup];
};
template <class T>
struct PriorInputs {
  const T* x[kMaxPriors];
};

// Every member's forward from one staged input tile: ys[j] as depthwise_fwd_kernel (no bias)
// computes it, bit for bit (plane_forward). Grid and tiling of the group's window; the window's
// padding is the largest, so member j's taps start (pad - pad_j) rows / columns in.
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    depthwise_group_fwd_kernel(const T* __restrict__ x,                     // (N, C, H, W)
                               const __grid_constant__ GroupInputs<T> ws,   // (C, 1, R_j, S_j)
                               const __grid_constant__ GroupOutputs<T> ys,  // (N, C, P, Q)
                               GroupProblem g, Tiling t) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tiles = reinterpret_cast<T*>(smem);
  const Problem& pr = g.window;
  const BlockTile b = block_tile(pr.n * pr.c, t);
  const int64_t plane0 = b.plane0;
  const int valid = b.valid, oh0 = b.row0, ow0 = b.col0;
  stage_forward_input(x, pr, t, b, tiles);
  __syncthreads();

  const int per_plane = kThreads / t.planes;
  const int slot = threadIdx.x / per_plane, lane = threadIdx.x % per_plane;
  if (slot >= valid) return;  // no barrier follows
  const int64_t plane = plane0 + slot;
  const int64_t ch = plane % pr.c;
  for (int j = 0; j < g.count; ++j) {
    const GroupMember m = g.m[j];
    const T* in =
        tiles + slot * (t.in_h * t.in_w) + (pr.pad_h - m.pad_h) * t.in_w + (pr.pad_w - m.pad_w);
    T* out = ys.x[j] + plane * pr.out_plane();
    if (m.r == 3)
      plane_forward<T, 3, 3, V>(in, ws.x[j] + ch * 9, 0.0f, out, m.dil_h, m.dil_w, pr, t, oh0, ow0,
                                lane, per_plane);
    else
      plane_forward<T, 5, 5, V>(in, ws.x[j] + ch * 25, 0.0f, out, m.dil_h, m.dil_w, pr, t, oh0, ow0,
                                lane, per_plane);
  }
}

// One member's gradients gathered for the thread's items (plane_gather with the member's kernel).
template <class T, int R, int V, bool kUnitStride>
__device__ __forceinline__ void member_gather(const T* in, const T* w, const GroupMember& m,
                                              int p_lo, int q_lo, int in_w, const Problem& pr,
                                              const Tiling& t, int h0, int w0, int lane,
                                              int per_plane, float (&acc)[V]) {
  float wr[R * R];
#pragma unroll
  for (int k = 0; k < R * R; ++k) wr[k] = to_float(w[k]);
  bool ok[V];
  int dst[V];
  plane_gather<T, R, R, V, kUnitStride>(in, wr, lane, p_lo, q_lo, m.pad_h, m.pad_w, m.dil_h,
                                        m.dil_w, in_w, pr, t, h0, w0, per_plane, acc, ok, dst);
}

// dx = ((priors[0] + priors[1] + ...) + d_0) + d_1 + ..., d_j member j's input gradient as
// depthwise_bwd_data_kernel writes it (masked where mask <= 0): the sum add_n forms over the
// priors and the d_j, bit for bit, each dx element written once. The thread's items are lane,
// lane + per_plane, ... (at most V: plan_group_tiling), their running sums in registers while the
// members' dy tiles are staged in turn (each from its own first row p_lo_j, column q_lo_j).
// kDoubleBuffer (the launcher's choice when two tiles fit the shared memory): member j + 1's
// tile is copied asynchronously into the second buffer while member j's gradient is gathered
// from the first (and member 0's while the priors are read), so the block does not wait for a
// tile's loads at every member; the same operations in the same order, so the same bits.
// At least 3 blocks per SM: without the bound 104-105 registers (2 blocks of 256 threads, each
// waiting at a barrier per member while its next tile is loaded); with it 80 registers (ptxas
// -v, sm_90; 4 blocks would spill 40-56 bytes). Compiles; its time on a GPU not yet measured
// (2026-12-04, evening).
template <class T, int V, bool kUnitStride = false, bool kDoubleBuffer = false>
__global__ void __launch_bounds__(kThreads, 3)
    depthwise_group_bwd_data_kernel(const __grid_constant__ GroupInputs<T> dys,  // (N, C, P, Q)
                                    const __grid_constant__ GroupInputs<T> ws,   // (C, 1, R_j, S_j)
                                    const T* __restrict__ mask,  // (N, C, H, W) or nullptr
                                    const __grid_constant__ PriorInputs<T> priors, int prior_count,
                                    T* __restrict__ dx,  // (N, C, H, W)
                                    GroupProblem g, Tiling t) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tiles = reinterpret_cast<T*>(smem);
  const int64_t buffer = int64_t(t.tile_bytes / sizeof(T));  // elements of one buffer
  const Problem& pr = g.window;
  const BlockTile b = block_tile(pr.n * pr.c, t);
  const int64_t plane0 = b.plane0;
  const int valid = b.valid, h0 = b.row0, w0 = b.col0;
  const int per_plane = kThreads / t.planes;
  const int slot = threadIdx.x / per_plane, lane = threadIdx.x % per_plane;
  const bool active = slot < valid;  // every thread stays for the barriers
  const int64_t plane = plane0 + (active ? slot : 0);
  const int64_t ch = plane % pr.c;
  const int64_t at = plane * pr.in_plane();
  const int count = t.tile_h * t.tile_w;
  // Member j's staged window: in_h x in_w dy values from row p_lo, column q_lo.
  const auto window = [&](int j, int& in_h, int& in_w, int& p_lo, int& q_lo) {
    const GroupMember& m = g.m[j];
    in_h = (t.tile_h - 1 + (m.r - 1) * m.dil_h) / pr.stride_h + 1;
    in_w = (t.tile_w - 1 + (m.s - 1) * m.dil_w) / pr.stride_w + 1;
    p_lo = ceil_div_signed(h0 + m.pad_h - (m.r - 1) * m.dil_h, pr.stride_h);
    q_lo = ceil_div_signed(w0 + m.pad_w - (m.s - 1) * m.dil_w, pr.stride_w);
  };
  const auto stage_async = [&](int j, T* into) {
    int in_h, in_w, p_lo, q_lo;
    window(j, in_h, in_w, p_lo, q_lo);
    stage_tiles<T, true, true>(dys.x[j], plane0, valid, t.planes, pr.p, pr.q, p_lo, q_lo, in_h,
                               in_w, false, into);
    copy_async_commit();
  };
  if constexpr (kDoubleBuffer) stage_async(0, tiles);  // in flight while the priors are read
  bool ok[V];
  int dst[V];
  float total[V];
  TileCursor cur(lane, per_plane, t.tile_w);
#pragma unroll
  for (int v = 0; v < V; ++v, cur.advance()) {
    const int item = lane + v * per_plane;
    const int oh = cur.oh, ow = cur.ow;
    ok[v] = active && item < count && h0 + oh < pr.h && w0 + ow < pr.w;
    dst[v] = ok[v] ? (h0 + oh) * pr.w + w0 + ow : 0;
    float sum = 0.0f;
    if (ok[v] && prior_count > 0) {
      sum = to_float(priors.x[0][at + dst[v]]);
      for (int k = 1; k < prior_count; ++k) sum += to_float(priors.x[k][at + dst[v]]);
    }
    total[v] = sum;
  }
  for (int j = 0; j < g.count; ++j) {
    const GroupMember m = g.m[j];
    int in_h, in_w, p_lo, q_lo;
    window(j, in_h, in_w, p_lo, q_lo);
    T* staged = tiles;
    if constexpr (kDoubleBuffer) {
      // Member j + 1 into the other buffer (free: every thread passed the barrier after member
      // j - 1's gather), then wait for member j's copies only.
      staged = tiles + (j & 1) * buffer;
      if (j + 1 < g.count) {
        stage_async(j + 1, tiles + ((j + 1) & 1) * buffer);
        copy_async_wait<1>();
      } else {
        copy_async_wait<0>();
      }
      __syncthreads();  // member j's tile, copies and zeros, is complete for every thread
    } else {
      __syncthreads();  // the previous member's tiles are no longer read
      stage_tiles(dys.x[j], plane0, valid, t.planes, pr.p, pr.q, p_lo, q_lo, in_h, in_w, false,
                  tiles);
      __syncthreads();
    }
    if (active) {
      const T* in = staged + slot * (in_h * in_w);
      float acc[V];
      if (m.r == 3)
        member_gather<T, 3, V, kUnitStride>(in, ws.x[j] + ch * 9, m, p_lo, q_lo, in_w, pr, t, h0,
                                            w0, lane, per_plane, acc);
      else
        member_gather<T, 5, V, kUnitStride>(in, ws.x[j] + ch * 25, m, p_lo, q_lo, in_w, pr, t, h0,
                                            w0, lane, per_plane, acc);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (!ok[v]) continue;
        const float d = (mask && !(to_float(mask[at + dst[v]]) > 0.0f)) ? 0.0f : acc[v];
        total[v] = (j == 0 && prior_count == 0) ? d : total[v] + d;
      }
    }
    if constexpr (kDoubleBuffer) __syncthreads();  // this buffer is read before j + 2 reuses it
  }
#pragma unroll
  for (int v = 0; v < V; ++v)
    if (ok[v]) dx[at + dst[v]] = T(total[v]);
}

// Every member's stage-1 blocks of the filter gradient (blockIdx.z: the member, blockIdx.x / .y
// its channel group and chunk as in depthwise_bwd_filter_kernel; the blocks beyond a member's
// grid exit at once, before any barrier): member j's partials at partials + partials_at_j, or
// added into dws[j] when it has one chunk. No bias. At least 4 blocks per SM: without the bound
// the two inlined kernel sizes take 117 registers (2 blocks); with it 64, no spills (ptxas -v,
// sm_90), the single 5x5 kernel's occupancy.
template <class T, bool kPipelined = false>
__global__ void __launch_bounds__(kThreads, 4) depthwise_group_bwd_filter_kernel(
    const T* __restrict__ x,                      // (N, C, H, W)
    const __grid_constant__ GroupInputs<T> dys,   // (N, C, P_j, Q_j)
    float* __restrict__ partials,                 // the members' partials
    const __grid_constant__ GroupOutputs<T> dws,  // (C, 1, R_j, S_j), +=
    const __grid_constant__ GroupFilter g) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int j = int(blockIdx.z);
  const FilterMember& m = g.m[j];
  if (int64_t(blockIdx.x) >= ceil_div(m.problem.c, m.tiling.planes) ||
      int64_t(blockIdx.y) >= m.split.chunks)
    return;
  float* part = m.split.chunks > 1 ? partials + m.partials_at : nullptr;
  if (m.problem.r == 3)
    filter_block<T, 3, 3, false, kPipelined>(x, dys.x[j], part, dws.x[j], nullptr, m.problem,
                                             m.tiling, m.split, blockIdx.x, blockIdx.y, smem);
  else
    filter_block<T, 5, 5, false, kPipelined>(x, dys.x[j], part, dws.x[j], nullptr, m.problem,
                                             m.tiling, m.split, blockIdx.x, blockIdx.y, smem);
}

// Stage 2 for every member with several chunks: entry e of member j (its finish_at_j .. +C*R*S)
// is dws[j][e] += the sum over chunks 0, 1, ... of its partials, as
// depthwise_bwd_filter_finish_kernel adds them. One thread per entry, grid-stride.
template <class T>
__global__ void __launch_bounds__(kThreads)
    depthwise_group_bwd_filter_finish_kernel(const float* __restrict__ partials,
                                             const __grid_constant__ GroupOutputs<T> dws,
                                             const __grid_constant__ GroupFilter g) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.finish_entries;
       i += int64_t(gridDim.x) * blockDim.x) {
    int j = 0;  // the last member starting at or before i (one without chunks has no entries)
    for (int k = 1; k < g.count; ++k)
      if (g.m[k].finish_at <= i) j = k;
    const FilterMember& m = g.m[j];
    const int taps = m.problem.r * m.problem.s, kt = taps + 1;
    const int64_t e = i - m.finish_at, ch = e / taps;
    const int k = int(e - ch * taps);
    const float* src = partials + m.partials_at;
    float sum = 0.0f;
    for (int64_t c = 0; c < m.split.chunks; ++c) sum += src[(c * m.problem.c + ch) * kt + k];
    T* dw = dws.x[j];
    dw[e] = T(to_float(dw[e]) + sum);
  }
}

// ---------------------------------------------------------------- launchers

// Calls f(std::integral_constant<int, R>, std::integral_constant<int, S>) for a supported kernel
// size (kernel_size_supported); false for any other.
template <class F>
bool with_kernel_size(int r, int s, F&& f) {
  using I1 = std::integral_constant<int, 1>;
  using I3 = std::integral_constant<int, 3>;
  using I5 = std::integral_constant<int, 5>;
  using I7 = std::integral_constant<int, 7>;
  if (r == 1 && s == 1) return f(I1{}, I1{}), true;
  if (r == 3 && s == 3) return f(I3{}, I3{}), true;
  if (r == 3 && s == 5) return f(I3{}, I5{}), true;
  if (r == 5 && s == 3) return f(I5{}, I3{}), true;
  if (r == 5 && s == 5) return f(I5{}, I5{}), true;
  if (r == 7 && s == 7) return f(I7{}, I7{}), true;
  return false;
}

// Calls f(std::true_type) when the convolution has stride 1 in both directions (the gather
// kernels' kUnitStride instance), else f(std::false_type).
template <class F>
void with_stride_kind(const Problem& pr, F&& f) {
  if (pr.stride_h == 1 && pr.stride_w == 1)
    f(std::true_type{});
  else
    f(std::false_type{});
}

inline dim3 tile_grid(const Problem& pr, const Tiling& t) {
  return dim3(unsigned(ceil_div(pr.n * pr.c, t.planes)), unsigned(t.tiles()));
}

// Host-compiled for tests/test_depthwise_emulation.cpp, the kernels above are plain C++; the
// launches below need nvcc.
#if defined(__CUDACC__)
template <class T, int R, int S, int V>
void launch_forward(const T* x, const T* w, const T* bias, T* y, const Problem& pr, const Tiling& t,
                    cudaStream_t stream) {
  depthwise_fwd_kernel<T, R, S, V>
      <<<tile_grid(pr, t), kThreads, t.smem_bytes(), stream>>>(x, w, bias, y, pr, t);
  CUDARTS_LAUNCH_CHECK("depthwise_fwd_kernel", "(x ", pr.n, "x", pr.c, "x", pr.h, "x", pr.w,
                       ", kernel ", R, "x", S, ", ", t.planes, " planes of ", t.tile_h, "x",
                       t.tile_w, " per block, ", t.smem_bytes(), " bytes of shared memory)");
}

// mask: the forward input x when pr.relu_input, else nullptr.
template <class T, int R, int S, int V>
void launch_backward_data(const T* dy, const T* w, const T* mask, T* dx, const Problem& pr,
                          const Tiling& t, cudaStream_t stream) {
  with_stride_kind(pr, [&](auto unit) {
    depthwise_bwd_data_kernel<T, R, S, V, decltype(unit)::value>
        <<<tile_grid(pr, t), kThreads, t.smem_bytes(), stream>>>(dy, w, mask, dx, pr, t);
  });
  CUDARTS_LAUNCH_CHECK("depthwise_bwd_data_kernel", "(dx ", pr.n, "x", pr.c, "x", pr.h, "x", pr.w,
                       ", kernel ", R, "x", S, ", ", t.planes, " planes of ", t.tile_h, "x",
                       t.tile_w, " per block, ", t.smem_bytes(), " bytes of shared memory)");
}

// partials: filter_partials_bytes(pr, sp) bytes (unused when sp.chunks == 1). kPreload: the
// bench's variant 4 (filter_block); kAllowTwoBuffers false: one x tile buffer even where two fit
// (the bench's variant 5, the library's kernel before 2026-12-04 evening).
template <class T, int R, int S, bool kPreload = false, bool kAllowTwoBuffers = true>
void launch_backward_filter(const T* x, const T* dy, T* dw, T* dbias, float* partials,
                            const Problem& pr, const Tiling& t, const FilterSplit& sp,
                            cudaStream_t stream) {
  const dim3 grid(unsigned(ceil_div(pr.c, t.planes)), unsigned(sp.chunks));
  // Two x tile buffers (the next unit's copied while the current one is read) where they fit.
  const bool two = kAllowTwoBuffers && !kPreload && sizeof(T) == 4 && double_buffer_fits(t);
  const size_t smem = t.smem_bytes() + (two ? t.tile_bytes : 0);
  if (two)
    depthwise_bwd_filter_kernel<T, R, S, false, true>
        <<<grid, kThreads, smem, stream>>>(x, dy, partials, dw, dbias, pr, t, sp);
  else
    depthwise_bwd_filter_kernel<T, R, S, kPreload, false>
        <<<grid, kThreads, smem, stream>>>(x, dy, partials, dw, dbias, pr, t, sp);
  CUDARTS_LAUNCH_CHECK("depthwise_bwd_filter_kernel", "(x ", pr.n, "x", pr.c, "x", pr.h, "x", pr.w,
                       ", kernel ", R, "x", S, ", ", t.planes, " channels of ", t.tile_h, "x",
                       t.tile_w, " per block, ", sp.chunks, " chunks, ", two ? "two buffers, " : "",
                       smem, " bytes of shared memory)");
  if (sp.chunks == 1) return;
  const int64_t total = pr.c * (R * S + 1);
  const int64_t blocks = std::min<int64_t>(ceil_div(total, kThreads), kMaxGridY);
  depthwise_bwd_filter_finish_kernel<T>
      <<<unsigned(blocks), kThreads, 0, stream>>>(partials, sp.chunks, pr.c, R * S, dw, dbias);
  CUDARTS_LAUNCH_CHECK("depthwise_bwd_filter_finish_kernel", "(", pr.c, " channels, ", sp.chunks,
                       " chunks)");
}

template <class T, int V>
void launch_group_forward(const T* x, const GroupInputs<T>& ws, const GroupOutputs<T>& ys,
                          const GroupProblem& g, const Tiling& t, cudaStream_t stream) {
  depthwise_group_fwd_kernel<T, V>
      <<<tile_grid(g.window, t), kThreads, t.smem_bytes(), stream>>>(x, ws, ys, g, t);
  CUDARTS_LAUNCH_CHECK("depthwise_group_fwd_kernel", "(x ", g.window.n, "x", g.window.c, "x",
                       g.window.h, "x", g.window.w, ", ", g.count, " convolutions, ", t.planes,
                       " planes of ", t.tile_h, "x", t.tile_w, " per block, ", t.smem_bytes(),
                       " bytes of shared memory)");
}

template <class T, int V>
void launch_group_backward_data(const GroupInputs<T>& dys, const GroupInputs<T>& ws, const T* mask,
                                const PriorInputs<T>& priors, int prior_count, T* dx,
                                const GroupProblem& g, const Tiling& t, cudaStream_t stream) {
  // Two tile buffers (the next member's tile copied while the current one is read) where they
  // fit; cp.async takes 4-byte elements.
  const bool two = sizeof(T) == 4 && double_buffer_fits(t);
  const size_t smem = two ? 2 * t.tile_bytes : t.smem_bytes();
  with_stride_kind(g.window, [&](auto unit) {
    if (two)
      depthwise_group_bwd_data_kernel<T, V, decltype(unit)::value, true>
          <<<tile_grid(g.window, t), kThreads, smem, stream>>>(dys, ws, mask, priors, prior_count,
                                                               dx, g, t);
    else
      depthwise_group_bwd_data_kernel<T, V, decltype(unit)::value, false>
          <<<tile_grid(g.window, t), kThreads, smem, stream>>>(dys, ws, mask, priors, prior_count,
                                                               dx, g, t);
  });
  CUDARTS_LAUNCH_CHECK("depthwise_group_bwd_data_kernel", "(dx ", g.window.n, "x", g.window.c, "x",
                       g.window.h, "x", g.window.w, ", ", g.count, " convolutions, ", prior_count,
                       " priors, ", t.planes, " planes of ", t.tile_h, "x", t.tile_w,
                       " per block, ", two ? "two buffers, " : "", smem,
                       " bytes of shared memory)");
}

// scratch: group_filter_scratch_bytes(g) bytes (unused when g.partial_floats == 0).
template <class T>
void launch_group_backward_filter(const T* x, const GroupInputs<T>& dys, const GroupOutputs<T>& dws,
                                  float* partials, const GroupFilter& g, cudaStream_t stream) {
  // Two x tile buffers per block (filter_block's kPipelined) when every member's fit.
  bool two = sizeof(T) == 4;
  for (int j = 0; j < g.count; ++j) two = two && double_buffer_fits(g.m[j].tiling);
  size_t smem = 0;
  for (int j = 0; j < g.count; ++j)
    smem = std::max(smem, g.m[j].tiling.smem_bytes() + (two ? g.m[j].tiling.tile_bytes : 0));
  const dim3 grid(unsigned(g.blocks_x), unsigned(g.blocks_y), unsigned(g.count));
  if (two)
    depthwise_group_bwd_filter_kernel<T, true>
        <<<grid, kThreads, smem, stream>>>(x, dys, partials, dws, g);
  else
    depthwise_group_bwd_filter_kernel<T, false>
        <<<grid, kThreads, smem, stream>>>(x, dys, partials, dws, g);
  CUDARTS_LAUNCH_CHECK("depthwise_group_bwd_filter_kernel", "(x ", g.m[0].problem.n, "x",
                       g.m[0].problem.c, "x", g.m[0].problem.h, "x", g.m[0].problem.w, ", ",
                       g.count, " convolutions, grid ", g.blocks_x, "x", g.blocks_y, "x", g.count,
                       ", ", smem, " bytes of shared memory)");
  if (g.finish_entries == 0) return;
  const int64_t blocks = std::min<int64_t>(ceil_div(g.finish_entries, kThreads), kMaxGridY);
  depthwise_group_bwd_filter_finish_kernel<T>
      <<<unsigned(blocks), kThreads, 0, stream>>>(partials, dws, g);
  CUDARTS_LAUNCH_CHECK("depthwise_group_bwd_filter_finish_kernel", "(", g.count, " convolutions, ",
                       g.finish_entries, " entries)");
}

#endif  // __CUDACC__

}  // namespace
}  // namespace cudarts::cuda::depthwise
