// The library's pointwise (1x1) convolutions (float32): checked entry points over the kernels
// of pointwise_kernels.cuh. y and dx are written (=); dw accumulates (+=). CPU twin:
// src/cpu/cpu_conv.cpp. Deterministic, no atomics: the filter gradient sums per-block partials
// in a fixed order.
#include "check.h"
#include "pointwise.cuh"
#include "pointwise_kernels.cuh"

namespace cudarts::cuda::pointwise {

namespace {

// The problem of a covered convolution; throws NotSupported otherwise (the caller asks covers()
// first, so this only fires on a dispatch bug).
Problem plan_or_throw(const char* op, const Shape& x, const Shape& w, const Shape& y,
                      const Conv2dParams& p) {
  const std::optional<Problem> pr = make_problem(x, w, y, p);
  if (!pr)
    throw NotSupported(detail::cat("cuda backend: ", op, ": the pointwise kernels do not cover x ",
                                   x, ", w ", w, ", y ", y, " (stride ", p.stride_h, "x",
                                   p.stride_w, ", pad ", p.pad_h, "x", p.pad_w, ", groups ",
                                   p.groups, ")"));
  return *pr;
}

template <class T, bool kBackwardData, int kOut>
void launch_packed(const T* src, const T* w, const T* bias, const T* mask, T* dst,
                   const Problem& pr, cudaStream_t stream) {
  const Direction d = kBackwardData ? Direction::BackwardData : Direction::Forward;
  pointwise_packed_map_kernel<T, kBackwardData, kOut>
      <<<packed_map_grid(d, pr, kOut), kThreads, 0, stream>>>(src, w, bias, mask, dst, pr);
}

// The packed map kernel with map_outputs' output channels per thread.
template <class T, bool kBackwardData>
void launch_map(const T* src, const T* w, const T* bias, const T* mask, T* dst, const Problem& pr,
                cudaStream_t stream) {
  const int outs = map_outputs(kBackwardData ? Direction::BackwardData : Direction::Forward, pr);
  if (outs == kTileChannels)
    launch_packed<T, kBackwardData, kTileChannels>(src, w, bias, mask, dst, pr, stream);
  else if (outs == 8)
    launch_packed<T, kBackwardData, 8>(src, w, bias, mask, dst, pr, stream);
  else
    launch_packed<T, kBackwardData, 4>(src, w, bias, mask, dst, pr, stream);
  CUDARTS_LAUNCH_CHECK("pointwise_packed_map_kernel", "(",
                       kBackwardData ? "backward data" : "forward", ", ", outs,
                       " outputs per thread, x ", pr.n, "x", pr.cin, "x", pr.h, "x", pr.w, ", y ",
                       pr.n, "x", pr.cout, "x", pr.p, "x", pr.q, ")");
}

}  // namespace

bool covers(Direction d, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p,
            bool bias) {
  const std::optional<Problem> pr = make_problem(x, w, y, p);
  if (!pr) return false;
  if (d == Direction::BackwardFilter) return !bias && filter_grid_fits(plan_filter_split(*pr));
  return d == Direction::Forward || !bias;
}

size_t filter_scratch_bytes(const Shape& x, const Shape& dw, const Shape& dy,
                            const Conv2dParams& p) {
  const std::optional<Problem> pr = make_problem(x, dw, dy, p);
  return pr ? filter_partials_bytes(*pr, plan_filter_split(*pr)) : 0;
}

void forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, const Conv2dParams& p,
             cudaStream_t stream) {
  const Problem pr = plan_or_throw("conv2d_fwd", x.shape(), w.shape(), y.shape(), p);
  launch_map<float, false>(x.data(), w.data(), bias ? bias->data() : nullptr, nullptr, y.data(), pr,
                           stream);
}

void backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                   const Tensor* x, cudaStream_t stream) {
  const Problem pr = plan_or_throw("conv2d_bwd_data", dx.shape(), w.shape(), dy.shape(), p);
  CUDARTS_CHECK(p.relu_input == (x != nullptr),
                "conv2d_bwd_data: a fused ReLU needs the forward input as its mask");
  launch_map<float, true>(dy.data(), w.data(), nullptr, x ? x->data() : nullptr, dx.data(), pr,
                          stream);
}

void backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw, const Conv2dParams& p,
                     void* scratch, cudaStream_t stream) {
  const Problem pr = plan_or_throw("conv2d_bwd_filter", x.shape(), dw.shape(), dy.shape(), p);
  const FilterSplit sp = plan_filter_split(pr);
  const size_t bytes = filter_partials_bytes(pr, sp);
  CUDARTS_CHECK(bytes == 0 || scratch != nullptr, "conv2d_bwd_filter: the pointwise filter ",
                "gradient needs ", bytes, " bytes of scratch, none given");
  float* partials = static_cast<float*>(scratch);
  const dim3 grid(unsigned(sp.co_tiles * sp.ci_tiles), unsigned(sp.chunks));
  pointwise_bwd_filter_kernel<float>
      <<<grid, kThreads, 0, stream>>>(x.data(), dy.data(), partials, dw.data(), pr, sp);
  CUDARTS_LAUNCH_CHECK("pointwise_bwd_filter_kernel", "(x ", x.shape(), ", dy ", dy.shape(), ", ",
                       sp.chunks, " chunks of ", sp.units_per_chunk, " units)");
  if (sp.chunks == 1) return;
  const int64_t entries = int64_t(pr.cout) * pr.cin;
  pointwise_bwd_filter_finish_kernel<float>
      <<<unsigned(ceil_div(entries, 32)), kThreads, 0, stream>>>(partials, dw.data(), entries,
                                                                 sp.chunks);
  CUDARTS_LAUNCH_CHECK("pointwise_bwd_filter_finish_kernel", "(dw ", dw.shape(), ", ", sp.chunks,
                       " chunks)");
}

}  // namespace cudarts::cuda::pointwise
