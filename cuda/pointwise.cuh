// Pointwise (1x1) 2-D convolution on the GPU (internal): which convolutions the own kernels
// cover, their launch geometry (a pure function of the shapes) and the float32 entry points.
// Contract as conv2d_* in ops.h: y and dx are written (=), dw accumulates (+=). Kernels:
// pointwise_kernels.cuh; CPU twin: src/cpu/cpu_conv.cpp (the dense convolution with R = S = 1).
// Why own kernels: at the search network's shapes (C from 16 to 64, NCHW, strict FP32) cuDNN's
// 1x1 convolutions ran at 90-240 us a call on an H200 (perf/DEVICE_LOG.md, 2026-12-04), 30-100x
// their traffic, and were three quarters of the step's time.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "cudarts/ops.h"
#include "kernel_rules.h"

namespace cudarts::cuda::pointwise {

// ---------------------------------------------------------------- launch geometry constants
constexpr int kThreads = 256;  // threads of every block
// The per-image map kernel (pointwise_bench's v1-v3; the library's until 2026-12-04 evening):
// outputs per thread and channel. 1 (v3) was the fastest at every search and retraining shape on an
// H200 (2026-12-04; 4 pixels: 1.4-3x slower at C >= 64).
constexpr int kPixelsPerThread = 1;
constexpr int kBlockPixels = kThreads * kPixelsPerThread;  // per-image map kernel: block pixels
constexpr int kTileChannels = 16;     // map kernels: output channels of one block, at most;
                                      // filter: side of one dw tile (16 x 16 = kThreads)
constexpr int kStagedChannels = 128;  // map kernels: input channels of weights per stage
// The packed map kernel (the library's): one output pixel per thread, the block's kThreads
// pixels running on over image boundaries (at 8x8 a per-image block left 3/4 of its threads
// idle), kMapLoads input channels loaded before their products are added (in channel order),
// and kOut output channels per thread, chosen per shape: the largest of kTileChannels, 8 and 4
// that still gives kMinMapBlocks blocks (fewer outputs per thread: more threads, each src value
// read by more blocks).
constexpr int kMapLoads = 8;
constexpr int64_t kMinMapBlocks = 256;        // about two blocks per SM of an H100 / H200 (132 SMs)
constexpr int kUnitPixels = 64;               // filter: pixels of one (image, pixel run) unit
constexpr int kUnitStride = kUnitPixels + 1;  // filter: staged row pitch (no bank conflicts)
constexpr int64_t kFilterTargetBlocks = 512;  // filter stage 1: blocks to aim for
constexpr int64_t kMinUnitsPerChunk = 4;      // filter stage 1: units of one block, at least
constexpr int kFinishLanes = kThreads / 32;   // filter stage 2: chunk lanes per entry
constexpr int64_t kMaxGridYZ = 65535;         // gridDim.y and gridDim.z limits
constexpr int64_t kMaxGridX = 0x7fffffff;     // gridDim.x limit
constexpr int64_t kMaxExtent = int64_t(1) << 30;  // any extent or channel count
constexpr int64_t kMaxPlane = int64_t(1) << 31;   // pixels of an input plane (int offsets)

static_assert(kTileChannels * kTileChannels == kThreads, "one dw entry per filter thread");
static_assert(kTileChannels % 4 == 0, "weights are read as float4");

enum class Direction { Forward, BackwardData, BackwardFilter };

// One 1x1 convolution, shapes only: x / dx (N, Cin, H, W), w / dw (Cout, Cin, 1, 1),
// y / dy (N, Cout, P, Q), no padding; output (p, q) reads input (p * stride_h, q * stride_w).
struct Problem {
  int64_t n;
  int cin, cout;
  int h, w;
  int p, q;
  int stride_h, stride_w;
  bool relu_input;  // Conv2dParams::relu_input: x is read as max(x, 0); dx masked where x <= 0
  __host__ __device__ int64_t in_plane() const { return int64_t(h) * w; }
  __host__ __device__ int64_t out_plane() const { return int64_t(p) * q; }
};

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The problem when the convolution is a dense 1x1 one without padding (groups 1, weight
// (Cout, Cin, 1, 1), at most 65535 images: kernel_rules::own_pointwise, the cost model's rule
// too) and every extent fits the kernels' int arithmetic and grid; nullopt otherwise (cuDNN
// serves it). Dilation does not matter for a 1x1 kernel. The shapes are the validated ones of
// ops.cpp.
inline std::optional<Problem> make_problem(const Shape& x, const Shape& w, const Shape& y,
                                           const Conv2dParams& prm) {
  if (!kernel_rules::own_pointwise(x, w, prm, false) || y.ndim() != 4 || y[1] != w[0])
    return std::nullopt;
  const int64_t extents[] = {x[1],
                             w[0],
                             x[2],
                             x[3],
                             y[2],
                             y[3],
                             int64_t(prm.stride_h) * y[2],
                             int64_t(prm.stride_w) * y[3]};
  for (int64_t e : extents)
    if (e < 1 || e >= kMaxExtent) return std::nullopt;
  if (x[0] < 1 || x[0] > kMaxGridYZ) return std::nullopt;  // the per-image kernel's gridDim.z
  if (x[2] * x[3] >= kMaxPlane) return std::nullopt;       // 32-bit offsets within a plane
  if (ceil_div(x[2] * x[3], kBlockPixels) > kMaxGridX) return std::nullopt;
  if (ceil_div(x[0] * std::max(x[2] * x[3], y[2] * y[3]), kThreads) > kMaxGridX)
    return std::nullopt;  // the packed map kernel's gridDim.x
  if (ceil_div(std::max(x[1], w[0]), kTileChannels) > kMaxGridYZ) return std::nullopt;
  return Problem{x[0],      int(x[1]), int(w[0]),    int(x[2]),    int(x[3]),
                 int(y[2]), int(y[3]), prm.stride_h, prm.stride_w, prm.relu_input};
}

// ---------------------------------------------------------------- map kernels (fwd, bwd data)
// The forward and the data gradient are the same map: every output pixel of `dst` is a
// weighted sum over the channels of one pixel of `src` (forward: y from x; backward data: dx
// from dy, zero at the input pixels no output reads when the stride is above 1).
struct MapShape {
  int src_channels, dst_channels;
  int64_t src_plane, dst_plane;
};

__host__ __device__ inline MapShape map_shape(Direction d, const Problem& pr) {
  if (d == Direction::BackwardData) return {pr.cout, pr.cin, pr.out_plane(), pr.in_plane()};
  return {pr.cin, pr.cout, pr.in_plane(), pr.out_plane()};
}

inline dim3 map_grid(Direction d, const Problem& pr, int pixels_per_thread = kPixelsPerThread) {
  const MapShape m = map_shape(d, pr);
  return dim3(unsigned(ceil_div(m.dst_plane, int64_t(kThreads) * pixels_per_thread)),
              unsigned(ceil_div(m.dst_channels, kTileChannels)), unsigned(pr.n));
}

// The packed map kernel's grid for kOut output channels per thread: (N * dst pixels) / kThreads
// blocks along x, the dst channels' kOut-tiles along y.
inline dim3 packed_map_grid(Direction d, const Problem& pr, int outs) {
  const MapShape m = map_shape(d, pr);
  return dim3(unsigned(ceil_div(pr.n * m.dst_plane, kThreads)),
              unsigned(ceil_div(m.dst_channels, outs)));
}

// Output channels per thread of the packed map kernel (a pure function of the shapes): the
// largest of 16, 8 and 4 whose grid has at least kMinMapBlocks blocks, else 4 (16 when the
// channel tiles of 8 or 4 would pass gridDim.y's limit).
inline int map_outputs(Direction d, const Problem& pr) {
  const MapShape m = map_shape(d, pr);
  const int64_t pixel_blocks = ceil_div(pr.n * m.dst_plane, kThreads);
  for (int outs : {kTileChannels, 8}) {
    const int64_t tiles = ceil_div(m.dst_channels, outs);
    if (pixel_blocks * tiles >= kMinMapBlocks) return outs;
    if (ceil_div(m.dst_channels, outs / 2) > kMaxGridYZ) return outs;
  }
  return 4;
}

// ---------------------------------------------------------------- filter gradient
// Stage 1: the reduction over (image, output pixel) is cut into units of kUnitPixels pixels of
// one image (units = N * ceil(P*Q / kUnitPixels)), split into `chunks` runs of
// units_per_chunk consecutive units; block (tile, chunk) writes one partial per dw entry of its
// 16 x 16 tile. Stage 2 adds the chunks in a fixed order into dw (skipped, and stage 1 adds into
// dw itself, when chunks == 1).
struct FilterSplit {
  int64_t units;
  int64_t units_per_chunk;
  int64_t chunks;
  int co_tiles, ci_tiles;
};

// Enough chunks for about kFilterTargetBlocks blocks, each with at least kMinUnitsPerChunk
// units (never more chunks than units or than gridDim.y allows). Shapes only, so the summation
// order is a function of the shapes.
inline FilterSplit plan_filter_split(const Problem& pr, int64_t target_blocks = kFilterTargetBlocks,
                                     int64_t min_units = kMinUnitsPerChunk) {
  FilterSplit s{};
  s.co_tiles = int(ceil_div(pr.cout, kTileChannels));
  s.ci_tiles = int(ceil_div(pr.cin, kTileChannels));
  s.units = pr.n * ceil_div(pr.out_plane(), kUnitPixels);
  const int64_t tiles = int64_t(s.co_tiles) * s.ci_tiles;
  int64_t chunks = std::min(ceil_div(target_blocks, tiles), ceil_div(s.units, min_units));
  chunks = std::max<int64_t>(1, std::min(chunks, s.units));
  s.units_per_chunk = std::max(ceil_div(s.units, chunks), ceil_div(s.units, kMaxGridYZ));
  s.chunks = ceil_div(s.units, s.units_per_chunk);
  return s;
}

inline bool filter_grid_fits(const FilterSplit& s) {
  return int64_t(s.co_tiles) * s.ci_tiles <= kMaxGridX && s.chunks <= kMaxGridYZ &&
         ceil_div(int64_t(s.co_tiles) * s.ci_tiles * kThreads, 32) <= kMaxGridX;
}

// Bytes of stage-1 partials: (chunks, Cout, Cin) floats, or 0 when one chunk adds into dw.
inline size_t filter_partials_bytes(const Problem& pr, const FilterSplit& s) {
  if (s.chunks <= 1) return 0;
  return size_t(s.chunks) * size_t(pr.cout) * size_t(pr.cin) * sizeof(float);
}

// ---------------------------------------------------------------- entry points (float32)
// True when the own kernels serve this convolution in direction d (shapes as ops.cpp validated
// them); with a bias only the forward is covered (the bias in its epilogue; the filter gradient
// with dbias stays on cuDNN).
bool covers(Direction d, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p,
            bool bias);
// y = conv(x, w) (+ bias).
void forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, const Conv2dParams& p,
             cudaStream_t stream);
// dx = conv_transpose(dy, w), masked where x <= 0 when x (the fused ReLU's input) is given.
void backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                   const Tensor* x, cudaStream_t stream);
// Scratch bytes backward_filter needs for these shapes (0: none).
size_t filter_scratch_bytes(const Shape& x, const Shape& dw, const Shape& dy,
                            const Conv2dParams& p);
// dw += corr(x, dy); `partials` holds filter_scratch_bytes() bytes.
void backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw, const Conv2dParams& p,
                     void* partials, cudaStream_t stream);

}  // namespace cudarts::cuda::pointwise
