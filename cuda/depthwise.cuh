// Depthwise 2-D convolution on the GPU (internal): which convolutions the own kernels cover,
// their launch geometry (a pure function of the shapes) and the float32 entry points.
// Contract as conv2d_* in ops.h: y and dx are written (=), dw and dbias accumulate (+=).
// Kernels: depthwise_kernels.cuh; CPU twin: src/cpu/cpu_conv.cpp (depthwise_plane_*).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "cudarts/ops.h"
#include "kernel_rules.h"

namespace cudarts::cuda::depthwise {

// ---------------------------------------------------------------- launch geometry constants
constexpr int kThreads = 256;                  // threads of every tile kernel's block
constexpr int kWarpSize = 32;                  // lanes of a warp
constexpr int64_t kTileOutputs = 1024;         // outputs of one plane tile, at most
constexpr int64_t kMaxTileWidth = 64;          // columns of one plane tile, at most
constexpr int64_t kMaxPlanesPerBlock = 64;     // planes (or channels) sharing one block, at most
constexpr size_t kMaxSharedBytes = 48 * 1024;  // dynamic shared memory of a block (no opt-in)
constexpr int kOutputsInFlight = 4;            // independent outputs per thread and step
constexpr int64_t kFilterBlockWork = 4096;     // dy elements per filter-gradient block, target
constexpr int64_t kMinFilterBlocks = 256;      // filter-gradient blocks, at least (when possible)
constexpr int64_t kMaxGridY = 65535;           // gridDim.y limit
constexpr int64_t kMaxGridX = 0x7fffffff;      // gridDim.x limit
constexpr int64_t kMaxExtent = int64_t(1) << 30;  // any extent, padded extent or dilated kernel

enum class Direction { Forward, BackwardData, BackwardFilter };

// One depthwise convolution, shapes only: x / dx (N, C, H, W), w / dw (C, 1, R, S),
// y / dy (N, C, P, Q); cross-correlation, input row = p * stride - pad + r * dilation.
struct Problem {
  int64_t n, c;
  int h, w;
  int p, q;
  int r, s;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool relu_input;  // Conv2dParams::relu_input: x is read as max(x, 0); dx masked where x <= 0
  __host__ __device__ int64_t in_plane() const { return int64_t(h) * w; }
  __host__ __device__ int64_t out_plane() const { return int64_t(p) * q; }
};

// How a kernel covers its output. A block serves `planes` planes (forward, backward data: planes
// n * C + c; backward filter: channels) at one tile position; kThreads / planes threads serve
// each plane. The tile is tile_h x tile_w outputs of the kernel's output (y, dx, or dy for the
// filter gradient, which reads it); the kernel's re-read input (x, dy, x) is staged in shared
// memory as an in_h x in_w tile per plane, zero outside the image.
struct Tiling {
  int tile_h, tile_w;
  int in_h, in_w;
  int planes;
  int tiles_h, tiles_w;  // tiles per plane
  size_t tile_bytes;     // staged tiles: planes * in_h * in_w elements (rounded up to 16 bytes)
  size_t reduce_bytes;   // backward filter: per-warp tap sums (planes * leaders * (R*S+1) floats)
  __host__ __device__ size_t smem_bytes() const { return tile_bytes + reduce_bytes; }
  __host__ __device__ int threads_per_plane() const { return kThreads / planes; }
  __host__ __device__ int64_t tiles() const { return int64_t(tiles_h) * tiles_w; }
};

// Backward filter, stage 1: a channel group's work is `units` (sample, tile) pairs, split into
// `chunks` runs of units_per_chunk consecutive units, one block each; every block writes one
// partial sum per (channel, tap). Stage 2 adds the chunks in order 0, 1, ... into dw (skipped,
// and stage 1 adds into dw itself, when chunks == 1).
struct FilterSplit {
  int64_t units;
  int64_t units_per_chunk;
  int64_t chunks;
};

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Kernel sizes with a compiled kernel (R x S): src/kernel_rules.h (the cost model's rule too).
inline bool kernel_size_supported(int64_t r, int64_t s) {
  return kernel_rules::depthwise_kernel_size(r, s);
}

// The problem when the convolution is depthwise with multiplier 1 and a compiled kernel size
// (kernel_rules::own_depthwise) and every extent fits the kernels' int arithmetic; nullopt
// otherwise. The shapes are the validated ones of ops.cpp.
inline std::optional<Problem> make_problem(const Shape& x, const Shape& w, const Shape& y,
                                           const Conv2dParams& prm) {
  if (!kernel_rules::own_depthwise(x, w, prm) || y.ndim() != 4) return std::nullopt;
  const int64_t c = x[1];
  if (y[1] != c) return std::nullopt;
  const int64_t extents[] = {x[2],
                             x[3],
                             y[2],
                             y[3],
                             x[2] + 2 * int64_t(prm.pad_h),
                             x[3] + 2 * int64_t(prm.pad_w),
                             (w[2] - 1) * int64_t(prm.dilation_h) + 1,
                             (w[3] - 1) * int64_t(prm.dilation_w) + 1,
                             int64_t(prm.stride_h) * y[2],
                             int64_t(prm.stride_w) * y[3]};
  for (int64_t e : extents)
    if (e >= kMaxExtent) return std::nullopt;
  if (x[2] * x[3] > kMaxGridX || y[2] * y[3] > kMaxGridX) return std::nullopt;  // int offsets
  return Problem{x[0],      c,         int(x[2]),      int(x[3]),      int(y[2]),
                 int(y[3]), int(w[2]), int(w[3]),      prm.stride_h,   prm.stride_w,
                 prm.pad_h, prm.pad_w, prm.dilation_h, prm.dilation_w, prm.relu_input};
}

inline int64_t pow2_floor(int64_t v) {
  int64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}
inline int64_t pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

// Staged input extent for `tile` outputs along one axis. Forward and backward filter read x at
// (tile - 1) * stride + (k - 1) * dilation + 1 positions; backward data reads the dy positions
// p with p * stride in a window of tile - 1 + (k - 1) * dilation + 1 positions: at most
// (tile - 1 + (k - 1) * dilation) / stride + 1 of them.
inline int64_t staged_extent(Direction d, int64_t tile, int64_t k, int64_t stride, int64_t dil) {
  if (d == Direction::BackwardData) return (tile - 1 + (k - 1) * dil) / stride + 1;
  return (tile - 1) * stride + (k - 1) * dil + 1;
}

// The tiling of one direction: the largest tile up to kTileOutputs outputs (whole planes when
// they are that small, then several planes per block, a power of two), halved (planes first,
// then rows, then columns) until the staged tiles fit kMaxSharedBytes. nullopt when not even a
// 1x1 tile fits or the grid would be too large: then cuDNN serves the convolution.
inline std::optional<Tiling> plan_tiling(Direction d, const Problem& pr, size_t elem_bytes) {
  const bool bwd_data = d == Direction::BackwardData, filter = d == Direction::BackwardFilter;
  const int64_t out_h = bwd_data ? pr.h : pr.p, out_w = bwd_data ? pr.w : pr.q;
  const int64_t group = filter ? pr.c : pr.n * pr.c;  // what `planes` counts
  if (out_h < 1 || out_w < 1 || group < 1) return std::nullopt;
  int64_t tile_w = std::min(out_w, kMaxTileWidth);
  int64_t tile_h = std::min(out_h, std::max<int64_t>(1, kTileOutputs / tile_w));
  int64_t planes = 1;
  if (tile_h == out_h && tile_w == out_w)
    planes = std::min(
        {pow2_floor(kTileOutputs / (out_h * out_w)), kMaxPlanesPerBlock, pow2_ceil(group)});
  const int64_t taps = int64_t(pr.r) * pr.s + 1;  // backward filter: R*S taps and the bias
  for (;;) {
    const int64_t in_h = staged_extent(d, tile_h, pr.r, pr.stride_h, pr.dil_h);
    const int64_t in_w = staged_extent(d, tile_w, pr.s, pr.stride_w, pr.dil_w);
    const int64_t limit = int64_t(kMaxSharedBytes);
    if (in_h <= limit && in_w <= limit) {
      const int64_t tile_bytes = (planes * in_h * in_w * int64_t(elem_bytes) + 15) / 16 * 16;
      const int64_t width = std::min<int64_t>(kThreads / planes, kWarpSize);
      const int64_t reduce_bytes = filter ? (kThreads / width) * taps * 4 : 0;
      if (tile_bytes + reduce_bytes <= limit) {
        Tiling t{};
        t.tile_h = int(tile_h);
        t.tile_w = int(tile_w);
        t.in_h = int(in_h);
        t.in_w = int(in_w);
        t.planes = int(planes);
        t.tiles_h = int(ceil_div(out_h, tile_h));
        t.tiles_w = int(ceil_div(out_w, tile_w));
        t.tile_bytes = size_t(tile_bytes);
        t.reduce_bytes = size_t(reduce_bytes);
        if (!filter && t.tiles() > kMaxGridY) return std::nullopt;
        if (ceil_div(group, planes) > kMaxGridX) return std::nullopt;
        return t;
      }
    }
    if (planes > 1)
      planes /= 2;
    else if (tile_h > 1)
      tile_h = (tile_h + 1) / 2;
    else if (tile_w > 1)
      tile_w = (tile_w + 1) / 2;
    else
      return std::nullopt;
  }
}

// The stage-1 split of the filter gradient: enough chunks that each block has about
// `block_work` dy elements and the grid has at least `min_blocks` blocks (never more chunks than
// units, never more than kMaxGridY). Depends on the shapes only, so the summation order does.
inline FilterSplit plan_filter_split(const Problem& pr, const Tiling& t,
                                     int64_t block_work = kFilterBlockWork,
                                     int64_t min_blocks = kMinFilterBlocks) {
  const int64_t units = pr.n * t.tiles();
  const int64_t groups = ceil_div(pr.c, t.planes);
  const int64_t unit_work = int64_t(t.planes) * t.tile_h * t.tile_w;
  int64_t chunks = std::max(ceil_div(units * unit_work, block_work), ceil_div(min_blocks, groups));
  chunks = std::max<int64_t>(1, std::min(chunks, units));
  int64_t per = std::max(ceil_div(units, chunks), ceil_div(units, kMaxGridY));
  return {units, per, ceil_div(units, per)};
}

// Bytes of stage-1 partial sums the filter gradient needs: (chunks, C, R*S+1) floats, or 0
// when one chunk adds into dw directly.
inline size_t filter_partials_bytes(const Problem& pr, const FilterSplit& sp) {
  if (sp.chunks <= 1) return 0;
  return size_t(sp.chunks * pr.c * (int64_t(pr.r) * pr.s + 1)) * sizeof(float);
}

// ---------------------------------------------------------------- groups
// Several depthwise convolutions of one input with one output shape and stride (an edge's
// leading convolutions, ops::depthwise_group_fwd / depthwise_group_bwd_data) in one kernel:
// forward stages the input tile once for all of them; backward data stages each member's dy
// tile in turn and keeps one running sum per dx element (the priors, then each member's masked
// gradient, in order), written once.
constexpr int kMaxGroup = kernel_rules::kMaxGroup;    // convolutions of one group
constexpr int kMaxPriors = kernel_rules::kMaxPriors;  // prior gradients the group backward sums

// A member: its kernel, padding and dilation (input, output, stride and ReLU are the group's).
struct GroupMember {
  int r, s, pad_h, pad_w, dil_h, dil_w;
};

// `window`: the group's input, output, stride and ReLU, with a kernel (dilation 1) whose staged
// extent covers every member's (forward: from the largest padding, pad_h / pad_w; backward
// data: the largest dilated kernel): what the tiling is planned for.
struct GroupProblem {
  Problem window;
  int count;
  GroupMember m[kMaxGroup];
};

// Member kernel sizes the group kernels are compiled for (the DARTS space's; src/kernel_rules.h).
inline bool group_size_supported(int64_t r, int64_t s) {
  return kernel_rules::group_kernel_size(r, s);
}

// The group when the group kernels serve it: 1 to kMaxGroup members, each one make_problem
// covers with a group_size_supported kernel, all with member 0's output shape, stride and ReLU;
// nullopt otherwise (the convolutions then run one by one).
inline std::optional<GroupProblem> make_group(Direction d, const Shape& x,
                                              const std::vector<Shape>& ws,
                                              const std::vector<Shape>& ys,
                                              const std::vector<Conv2dParams>& ps) {
  if (ws.empty() || ws.size() > size_t(kMaxGroup) || ys.size() != ws.size() ||
      ps.size() != ws.size())
    return std::nullopt;
  GroupProblem g{};
  g.count = int(ws.size());
  for (size_t j = 0; j < ws.size(); ++j) {
    const std::optional<Problem> pr = make_problem(x, ws[j], ys[j], ps[j]);
    if (!pr || !group_size_supported(pr->r, pr->s)) return std::nullopt;
    if (j == 0) g.window = *pr;
    const Problem& f = g.window;
    if (pr->p != f.p || pr->q != f.q || pr->stride_h != f.stride_h || pr->stride_w != f.stride_w ||
        pr->relu_input != f.relu_input)
      return std::nullopt;
    g.m[j] = {pr->r, pr->s, pr->pad_h, pr->pad_w, pr->dil_h, pr->dil_w};
  }
  Problem& w = g.window;
  w.dil_h = w.dil_w = 1;
  int pad_h = 0, pad_w = 0, ext_h = 1, ext_w = 1;
  for (int j = 0; j < g.count; ++j)
    pad_h = std::max(pad_h, g.m[j].pad_h), pad_w = std::max(pad_w, g.m[j].pad_w);
  for (int j = 0; j < g.count; ++j) {
    const GroupMember& m = g.m[j];
    const int dil_ext_h = (m.r - 1) * m.dil_h + 1, dil_ext_w = (m.s - 1) * m.dil_w + 1;
    if (d == Direction::Forward) {  // member j's taps start pad_h - m.pad_h rows into the window
      ext_h = std::max(ext_h, pad_h - m.pad_h + dil_ext_h);
      ext_w = std::max(ext_w, pad_w - m.pad_w + dil_ext_w);
    } else {
      ext_h = std::max(ext_h, dil_ext_h);
      ext_w = std::max(ext_w, dil_ext_w);
    }
  }
  w.r = ext_h;
  w.s = ext_w;
  w.pad_h = d == Direction::Forward ? pad_h : 0;
  w.pad_w = d == Direction::Forward ? pad_w : 0;
  return g;
}

// The group's tiling: plan_tiling of the window, refused (nullopt) when a thread would serve more
// than kOutputsInFlight outputs of a tile (the group backward keeps each of its running sums in
// a register for the whole kernel).
inline std::optional<Tiling> plan_group_tiling(Direction d, const GroupProblem& g,
                                               size_t elem_bytes) {
  const std::optional<Tiling> t = plan_tiling(d, g.window, elem_bytes);
  if (!t || int64_t(t->tile_h) * t->tile_w > int64_t(kOutputsInFlight) * t->threads_per_plane())
    return std::nullopt;
  return t;
}

// A second tile buffer (the next tile copied while the current one is read: the group backward
// data, the filter gradients) fits the shared memory of a block: 2 tiles and the reduce space.
inline bool double_buffer_fits(const Tiling& t) {
  return 2 * t.tile_bytes + t.reduce_bytes <= kMaxSharedBytes;
}

// The filter gradients of a group (ops::depthwise_group_bwd_filter): each member keeps the
// problem, tiling and split of its single filter gradient, so its per-block partial sums and
// their fixed-order finish are the single kernels' (the same bits). One launch runs every
// member's stage-1 blocks (blockIdx.z: the member; blocks beyond a member's grid exit), one more
// adds the partials of the members with several chunks into their dw.
struct FilterMember {
  Problem problem;
  Tiling tiling;
  FilterSplit split;
  int64_t partials_at;  // first float of the member's partials in the group's scratch
  int64_t finish_at;    // first (channel, tap) entry of the member in the finish kernel's range
};
struct GroupFilter {
  int count;
  FilterMember m[kMaxGroup];
  int64_t blocks_x, blocks_y;  // stage-1 grid: the largest channel-group and chunk counts
  int64_t partial_floats;      // scratch floats (0: every member adds into dw directly)
  int64_t finish_entries;      // (channel, tap) entries the finish kernel sums (0: no finish)
};

// The group when the group kernels serve its filter gradients: 1 to kMaxGroup members over one
// input x, each one make_problem covers with a group_size_supported kernel and plan_tiling plans
// (as conv2d_bwd_filter's own kernel would), a non-empty batch; nullopt otherwise (then the
// filter gradients run one by one).
inline std::optional<GroupFilter> make_group_filter(const Shape& x, const std::vector<Shape>& dws,
                                                    const std::vector<Shape>& dys,
                                                    const std::vector<Conv2dParams>& ps) {
  if (dws.empty() || dws.size() > size_t(kMaxGroup) || dys.size() != dws.size() ||
      ps.size() != dws.size())
    return std::nullopt;
  GroupFilter g{};
  g.count = int(dws.size());
  for (size_t j = 0; j < dws.size(); ++j) {
    const std::optional<Problem> pr = make_problem(x, dws[j], dys[j], ps[j]);
    if (!pr || pr->n == 0 || !group_size_supported(pr->r, pr->s)) return std::nullopt;
    const std::optional<Tiling> t = plan_tiling(Direction::BackwardFilter, *pr, sizeof(float));
    if (!t) return std::nullopt;
    FilterMember& m = g.m[j];
    m.problem = *pr;
    m.tiling = *t;
    m.split = plan_filter_split(*pr, *t);
    m.partials_at = g.partial_floats;
    m.finish_at = g.finish_entries;
    if (m.split.chunks > 1) {
      g.partial_floats += m.split.chunks * pr->c * (int64_t(pr->r) * pr->s + 1);
      g.finish_entries += pr->c * int64_t(pr->r) * pr->s;
    }
    g.blocks_x = std::max(g.blocks_x, ceil_div(pr->c, t->planes));
    g.blocks_y = std::max(g.blocks_y, m.split.chunks);
  }
  return g;
}

inline size_t group_filter_scratch_bytes(const GroupFilter& g) {
  return size_t(g.partial_floats) * sizeof(float);
}

// ---------------------------------------------------------------- entry points (depthwise.cu)

// True when the own kernels serve this convolution in this direction: make_problem and
// plan_tiling succeed for float32. A pure function of the shapes and parameters.
bool covers(Direction d, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p);

// Bytes of device scratch backward_filter needs for these shapes (0: none).
size_t filter_scratch_bytes(const Shape& x, const Shape& dw, const Shape& dy,
                            const Conv2dParams& p);

// Float32 entry points, queued on `stream`. Each checks covers() (throws NotSupported when the
// shapes are not covered) and launches; nothing else is checked here (ops.cpp validated).
void forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, const Conv2dParams& p,
             cudaStream_t stream);
// x: the forward input when p.relu_input (the mask), else nullptr.
void backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                   const Tensor* x, cudaStream_t stream);
// scratch: filter_scratch_bytes(...) bytes of device memory (nullptr when that is 0).
void backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                     const Conv2dParams& p, void* scratch, cudaStream_t stream);

// The group entry points (ops::depthwise_group_fwd / depthwise_group_bwd_data): queue the group
// kernel and return true when it serves the group (make_group and plan_group_tiling succeed;
// backward data also needs at most kMaxPriors priors), else launch nothing and return false
// (the caller then runs the convolutions one by one). The group is planned once per call.
bool group_forward(const Tensor& x, const std::vector<const Tensor*>& ws,
                   const std::vector<Conv2dParams>& ps, const std::vector<Tensor*>& ys,
                   cudaStream_t stream);
// x: the forward input when relu_input (the mask), else nullptr.
bool group_backward_data(const std::vector<const Tensor*>& dys,
                         const std::vector<const Tensor*>& ws, const std::vector<Conv2dParams>& ps,
                         const Tensor* x, const std::vector<const Tensor*>& priors, Tensor& dx,
                         cudaStream_t stream);
// The group's filter gradients (dws[j] += ..., no bias) as make_group_filter planned them;
// scratch: group_filter_scratch_bytes(g) bytes of device memory (nullptr when that is 0).
void group_backward_filter(const GroupFilter& g, const Tensor& x,
                           const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dws,
                           void* scratch, cudaStream_t stream);

}  // namespace cudarts::cuda::depthwise
