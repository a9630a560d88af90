// The library's depthwise convolutions (float32): checked entry points over the kernels of
// depthwise_kernels.cuh with kOutputsInFlight outputs per thread. y and dx are written (=); dw
// and dbias accumulate (+=). CPU twin: src/cpu/cpu_conv.cpp. Deterministic, no atomics.
#include "depthwise.cuh"
#include "depthwise_kernels.cuh"

namespace cudarts::cuda::depthwise {

namespace {

// The problem and tiling of a covered convolution; throws NotSupported otherwise (the caller
// asks covers() first, so this only fires on a dispatch bug).
struct Planned {
  Problem problem;
  Tiling tiling;
};

Planned plan_or_throw(const char* op, Direction d, const Shape& x, const Shape& w, const Shape& y,
                      const Conv2dParams& p) {
  const std::optional<Problem> pr = make_problem(x, w, y, p);
  const std::optional<Tiling> t = pr ? plan_tiling(d, *pr, sizeof(float)) : std::nullopt;
  if (!t)
    throw NotSupported(detail::cat("cuda backend: ", op, ": the depthwise kernels do not cover x ",
                                   x, ", w ", w, ", y ", y, " (stride ", p.stride_h, "x",
                                   p.stride_w, ", pad ", p.pad_h, "x", p.pad_w, ", dilation ",
                                   p.dilation_h, "x", p.dilation_w, ", groups ", p.groups, ")"));
  return {*pr, *t};
}

[[noreturn]] void unsupported_size(const char* op, const Problem& pr) {
  CUDARTS_FAIL(op, ": no depthwise kernel instance for ", pr.r, "x", pr.s,
               " although kernel_size_supported() accepted it");
}

}  // namespace

bool covers(Direction d, const Shape& x, const Shape& w, const Shape& y, const Conv2dParams& p) {
  const std::optional<Problem> pr = make_problem(x, w, y, p);
  return pr && plan_tiling(d, *pr, sizeof(float)).has_value();
}

size_t filter_scratch_bytes(const Shape& x, const Shape& dw, const Shape& dy,
                            const Conv2dParams& p) {
  const std::optional<Problem> pr = make_problem(x, dw, dy, p);
  if (!pr || pr->n == 0) return 0;
  const std::optional<Tiling> t = plan_tiling(Direction::BackwardFilter, *pr, sizeof(float));
  return t ? filter_partials_bytes(*pr, plan_filter_split(*pr, *t)) : 0;
}

void forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y, const Conv2dParams& p,
             cudaStream_t stream) {
  const Planned pl =
      plan_or_throw("conv2d_fwd", Direction::Forward, x.shape(), w.shape(), y.shape(), p);
  const float* b = bias ? bias->data() : nullptr;
  if (!with_kernel_size(pl.problem.r, pl.problem.s, [&](auto r, auto s) {
        launch_forward<float, decltype(r)::value, decltype(s)::value, kOutputsInFlight>(
            x.data(), w.data(), b, y.data(), pl.problem, pl.tiling, stream);
      }))
    unsupported_size("conv2d_fwd", pl.problem);
}

void backward_data(const Tensor& dy, const Tensor& w, Tensor& dx, const Conv2dParams& p,
                   const Tensor* x, cudaStream_t stream) {
  const Planned pl = plan_or_throw("conv2d_bwd_data", Direction::BackwardData, dx.shape(),
                                   w.shape(), dy.shape(), p);
  CUDARTS_CHECK(p.relu_input == (x != nullptr),
                "conv2d_bwd_data: a fused ReLU needs the forward input as its mask");
  const float* mask = x ? x->data() : nullptr;
  if (!with_kernel_size(pl.problem.r, pl.problem.s, [&](auto r, auto s) {
        launch_backward_data<float, decltype(r)::value, decltype(s)::value, kOutputsInFlight>(
            dy.data(), w.data(), mask, dx.data(), pl.problem, pl.tiling, stream);
      }))
    unsupported_size("conv2d_bwd_data", pl.problem);
}

void backward_filter(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias,
                     const Conv2dParams& p, void* scratch, cudaStream_t stream) {
  const Planned pl = plan_or_throw("conv2d_bwd_filter", Direction::BackwardFilter, x.shape(),
                                   dw.shape(), dy.shape(), p);
  if (pl.problem.n == 0) return;  // an empty batch adds nothing
  const FilterSplit sp = plan_filter_split(pl.problem, pl.tiling);
  CUDARTS_CHECK(filter_partials_bytes(pl.problem, sp) == 0 || scratch != nullptr,
                "conv2d_bwd_filter: the depthwise filter gradient needs ",
                filter_partials_bytes(pl.problem, sp), " bytes of scratch, none given");
  float* partials = static_cast<float*>(scratch);
  float* db = dbias ? dbias->data() : nullptr;
  if (!with_kernel_size(pl.problem.r, pl.problem.s, [&](auto r, auto s) {
        launch_backward_filter<float, decltype(r)::value, decltype(s)::value>(
            x.data(), dy.data(), dw.data(), db, partials, pl.problem, pl.tiling, sp, stream);
      }))
    unsupported_size("conv2d_bwd_filter", pl.problem);
}

namespace {

std::vector<Shape> shapes_of(const std::vector<const Tensor*>& ts) {
  std::vector<Shape> out;
  for (const Tensor* t : ts) out.push_back(t->shape());
  return out;
}

struct PlannedGroup {
  GroupProblem group;
  Tiling tiling;
};

std::optional<PlannedGroup> plan_group(Direction d, const Shape& x,
                                       const std::vector<const Tensor*>& ws,
                                       const std::vector<Shape>& ys,
                                       const std::vector<Conv2dParams>& ps) {
  const std::optional<GroupProblem> g = make_group(d, x, shapes_of(ws), ys, ps);
  if (!g) return std::nullopt;
  const std::optional<Tiling> t = plan_group_tiling(d, *g, sizeof(float));
  if (!t) return std::nullopt;
  return PlannedGroup{*g, *t};
}

}  // namespace

bool group_forward(const Tensor& x, const std::vector<const Tensor*>& ws,
                   const std::vector<Conv2dParams>& ps, const std::vector<Tensor*>& ys,
                   cudaStream_t stream) {
  std::vector<Shape> yshapes;
  for (const Tensor* y : ys) yshapes.push_back(y->shape());
  const std::optional<PlannedGroup> pl = plan_group(Direction::Forward, x.shape(), ws, yshapes, ps);
  if (!pl) return false;
  GroupInputs<float> w{};
  GroupOutputs<float> y{};
  for (size_t j = 0; j < ws.size(); ++j) w.x[j] = ws[j]->data(), y.x[j] = ys[j]->data();
  launch_group_forward<float, kOutputsInFlight>(x.data(), w, y, pl->group, pl->tiling, stream);
  return true;
}

bool group_backward_data(const std::vector<const Tensor*>& dys,
                         const std::vector<const Tensor*>& ws, const std::vector<Conv2dParams>& ps,
                         const Tensor* x, const std::vector<const Tensor*>& priors, Tensor& dx,
                         cudaStream_t stream) {
  if (priors.size() > size_t(kMaxPriors)) return false;
  const std::optional<PlannedGroup> pl =
      plan_group(Direction::BackwardData, dx.shape(), ws, shapes_of(dys), ps);
  if (!pl) return false;
  CUDARTS_CHECK(pl->group.window.relu_input == (x != nullptr),
                "depthwise_group_bwd_data: a fused ReLU needs the forward input as its mask");
  GroupInputs<float> d{}, w{};
  PriorInputs<float> p{};
  for (size_t j = 0; j < ws.size(); ++j) d.x[j] = dys[j]->data(), w.x[j] = ws[j]->data();
  for (size_t i = 0; i < priors.size(); ++i) p.x[i] = priors[i]->data();
  launch_group_backward_data<float, kOutputsInFlight>(d, w, x ? x->data() : nullptr, p,
                                                      int(priors.size()), dx.data(), pl->group,
                                                      pl->tiling, stream);
  return true;
}

void group_backward_filter(const GroupFilter& g, const Tensor& x,
                           const std::vector<const Tensor*>& dys, const std::vector<Tensor*>& dws,
                           void* scratch, cudaStream_t stream) {
  CUDARTS_CHECK(dys.size() == size_t(g.count) && dws.size() == size_t(g.count),
                "depthwise_group_bwd_filter: ", dys.size(), " output gradients and ", dws.size(),
                " filter gradients for a group of ", g.count);
  CUDARTS_CHECK(g.partial_floats == 0 || scratch != nullptr,
                "depthwise_group_bwd_filter: the group needs ", group_filter_scratch_bytes(g),
                " bytes of scratch, none given");
  GroupInputs<float> d{};
  GroupOutputs<float> w{};
  for (int j = 0; j < g.count; ++j)
    d.x[j] = dys[size_t(j)]->data(), w.x[j] = dws[size_t(j)]->data();
  launch_group_backward_filter<float>(x.data(), d, w, static_cast<float*>(scratch), g, stream);
}

}  // namespace cudarts::cuda::depthwise
