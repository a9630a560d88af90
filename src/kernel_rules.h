// Which convolutions the CUDA backend's own kernels take, by structure (internal, CUDA-free):
// the one rule that cuda/depthwise.cuh and cuda/pointwise.cuh apply (before their extent, grid
// and shared-memory limits) and that the cost model in ops.cpp counts launches by, so the two
// cannot drift apart. Shapes as ops.cpp validated them: x (N, C, H, W), w (K, C / groups, R, S).
#pragma once
#include <cstdint>

#include "cudarts/ops.h"

namespace cudarts::kernel_rules {

// Depthwise kernel sizes (R x S) with a compiled kernel: 1x1, 3x3, 3x5, 5x3, 5x5, 7x7.
inline bool depthwise_kernel_size(int64_t r, int64_t s) {
  return (r == s && (r == 1 || r == 3 || r == 5 || r == 7)) || (r == 3 && s == 5) ||
         (r == 5 && s == 3);
}

// A depthwise convolution with multiplier 1 (groups == C_in == K, weight (C, 1, R, S)) and a
// compiled kernel size.
inline bool own_depthwise(const Shape& x, const Shape& w, const Conv2dParams& p) {
  return x.ndim() == 4 && w.ndim() == 4 && p.groups == x[1] && w[0] == x[1] && w[1] == 1 &&
         depthwise_kernel_size(w[2], w[3]);
}

// A group of an edge's leading depthwise convolutions in one kernel (ops::depthwise_group_*):
// at most kMaxGroup members, each 3x3 or 5x5 (with one output shape and stride, checked where
// the shapes are), at most kMaxPriors prior gradients in the backward.
constexpr int kMaxGroup = 8;
constexpr int kMaxPriors = 8;
inline bool group_kernel_size(int64_t r, int64_t s) {
  return r == s && (r == 3 || r == 5);
}

// A dense 1x1 convolution without padding (groups 1, weight (K, C, 1, 1)), at most 65535
// images (the gridDim.z of the per-image map kernel, which only pointwise_bench still launches:
// the library's packed kernel and filter gradient have no such limit; the limit goes with that
// kernel once a GPU run has compared them); with a bias gradient the filter gradient is not
// taken (`bias_gradient`).
inline bool own_pointwise(const Shape& x, const Shape& w, const Conv2dParams& p,
                          bool bias_gradient) {
  return x.ndim() == 4 && w.ndim() == 4 && p.groups == 1 && w[2] == 1 && w[3] == 1 &&
         w[1] == x[1] && p.pad_h == 0 && p.pad_w == 0 && p.stride_h >= 1 && p.stride_w >= 1 &&
         x[0] >= 1 && x[0] <= 65535 && !bias_gradient;
}

}  // namespace cudarts::kernel_rules
