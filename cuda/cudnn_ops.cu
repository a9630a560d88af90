// cuDNN-backed ops (legacy API, NCHW float32): convolution forward / backward data /
// backward filter + bias, batch normalisation (training, inference, backward), 2-D pooling.
// Contract as in ops.h: y, dx, save_mean, save_invstd are written (=); dw, dbias, dgamma,
// dbeta accumulate (+=, beta = 1). CPU twins: src/cpu/cpu_conv.cpp, src/cpu/cpu_norm_pool.cpp.
// Depthwise convolutions that depthwise::covers() go to the own kernels (depthwise.cu) instead,
// unless the context's own_depthwise_kernels is off; 1x1 ones that pointwise::covers() to
// pointwise.cu, unless own_pointwise_kernels is off.
#include <algorithm>
#include <climits>
#include <initializer_list>
#include <utility>
#include <vector>

#include "cuda_backend.h"
#include "depthwise.cuh"
#include "pointwise.cuh"
#include "pool.cuh"

namespace cudarts::cuda {

namespace {

constexpr int kFillBlock = 256;
// A convolution algorithm that needs more workspace than this is not considered.
constexpr size_t kMaxConvWorkspaceBytes = size_t(512) << 20;
// batchnorm_bwd gets no eps (ops.h); cuDNN uses the saved mean / inverse std we always pass
// and does not recompute them, so this value does not enter the result.
constexpr double kBnBackwardEpsilon = 1e-5;
constexpr float kOne = 1.0f, kZero = 0.0f;

// Move-only owner of one cuDNN descriptor.
template <class T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class Descriptor {
 public:
  Descriptor() { CUDARTS_CUDNN_CHECK(Create(&d_)); }
  ~Descriptor() {
    if (d_) Destroy(d_);
  }
  Descriptor(Descriptor&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Descriptor& operator=(Descriptor&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;
  T get() const { return d_; }

 private:
  T d_ = nullptr;
};

using TensorDesc =
    Descriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor>;
using FilterDesc =
    Descriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor>;
using ConvDesc = Descriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                            cudnnDestroyConvolutionDescriptor>;
using PoolDesc = Descriptor<cudnnPoolingDescriptor_t, cudnnCreatePoolingDescriptor,
                            cudnnDestroyPoolingDescriptor>;

// The legacy API takes int extents and int strides.
int checked_int(int64_t v, const char* what, const Shape& s) {
  if (v > INT_MAX)
    throw NotSupported(detail::cat("cuda backend: ", what, " ", s,
                                   " exceeds the int range of cuDNN's legacy API"));
  return static_cast<int>(v);
}

// A contiguous (N, C, H, W) float tensor.
void set_nchw(const TensorDesc& d, const Shape& s, const char* what) {
  checked_int(s.numel(), what, s);
  CUDARTS_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(d.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                 checked_int(s[0], what, s), checked_int(s[1], what, s),
                                 checked_int(s[2], what, s), checked_int(s[3], what, s)),
      "(", what, " ", s, ")");
}

// cuDNN cannot describe empty tensors. An op whose output is empty has nothing to do; an empty
// operand with a non-empty output is rejected.
bool nothing_to_do(const char* op, const Tensor& out, std::initializer_list<const Tensor*> ins) {
  if (out.numel() == 0) return true;
  for (const Tensor* t : ins)
    if (t->numel() == 0)
      throw NotSupported(detail::cat("cuda backend: ", op, " with the empty operand ",
                                     t->describe(), " (output ", out.describe(), ")"));
  return false;
}

// ------------------------------------------------------------------ convolution

}  // namespace

// Descriptors of one convolution: x = input (x or dx), y = output (y or dy), w = filter (w or dw).
struct ConvDescs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;

  ConvDescs(const Shape& xs, const Shape& ws, const Shape& ys, const Conv2dParams& p) {
    set_nchw(x, xs, "input");
    set_nchw(y, ys, "output");
    checked_int(ws.numel(), "weight", ws);
    // Grouped convolution: the filter is (K, C / groups, R, S), the group count is separate.
    CUDARTS_CUDNN_CHECK(cudnnSetFilter4dDescriptor(
                            w.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                            checked_int(ws[0], "weight", ws), checked_int(ws[1], "weight", ws),
                            checked_int(ws[2], "weight", ws), checked_int(ws[3], "weight", ws)),
                        "(weight ", ws, ")");
    CUDARTS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), p.pad_h, p.pad_w, p.stride_h,
                                                        p.stride_w, p.dilation_h, p.dilation_w,
                                                        CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                        "(pad ", p.pad_h, "x", p.pad_w, ", stride ", p.stride_h, "x", p.stride_w,
                        ", dilation ", p.dilation_h, "x", p.dilation_w, ")");
    CUDARTS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.get(), p.groups), "(groups ", p.groups,
                        ")");
  }
};

// The cached descriptors of one tensor shape and of one pooling window.
struct CachedTensorDesc {
  TensorDesc d;
};
struct CachedPoolDesc {
  PoolDesc d;
};

namespace {

enum ConvDirection : int { kConvFwd = 0, kConvBwdData = 1, kConvBwdFilter = 2 };

const char* direction_name(int dir) {
  return dir == kConvFwd ? "forward" : dir == kConvBwdData ? "backward data" : "backward filter";
}

// One row of a *_v7 heuristic answer, whatever the direction.
struct Candidate {
  int algo;
  cudnnStatus_t status;
  size_t memory;
  cudnnDeterminism_t determinism;
  cudnnMathType_t math_type;
};

template <class Perf>
void append_candidates(const std::vector<Perf>& perf, int returned, std::vector<Candidate>& out) {
  for (int i = 0; i < returned && i < static_cast<int>(perf.size()); ++i)
    out.push_back({static_cast<int>(perf[size_t(i)].algo), perf[size_t(i)].status,
                   perf[size_t(i)].memory, perf[size_t(i)].determinism, perf[size_t(i)].mathType});
}

// cuDNN's heuristic ranking for one direction, best first.
std::vector<Candidate> heuristic_candidates(cudnnHandle_t h, int dir, const ConvDescs& d) {
  std::vector<Candidate> out;
  int max_count = 0, returned = 0;
  if (dir == kConvFwd) {
    CUDARTS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
    CUDARTS_CUDNN_CHECK(
        cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                               int(perf.size()), &returned, perf.data()));
    append_candidates(perf, returned, out);
  } else if (dir == kConvBwdData) {
    CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
    CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, d.w.get(), d.y.get(), d.conv.get(), d.x.get(), int(perf.size()), &returned,
        perf.data()));
    append_candidates(perf, returned, out);
  } else {
    CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &max_count));
    std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(size_t(std::max(max_count, 1)));
    CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), int(perf.size()), &returned,
        perf.data()));
    append_candidates(perf, returned, out);
  }
  return out;
}

// Workspace of `algo` with the descriptor's current math type; a status, not a throw.
cudnnStatus_t workspace_size(cudnnHandle_t h, int dir, const ConvDescs& d, int algo,
                             size_t* bytes) {
  if (dir == kConvFwd)
    return cudnnGetConvolutionForwardWorkspaceSize(h, d.x.get(), d.w.get(), d.conv.get(), d.y.get(),
                                                   cudnnConvolutionFwdAlgo_t(algo), bytes);
  if (dir == kConvBwdData)
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.w.get(), d.y.get(), d.conv.get(),
                                                        d.x.get(),
                                                        cudnnConvolutionBwdDataAlgo_t(algo), bytes);
  return cudnnGetConvolutionBackwardFilterWorkspaceSize(
      h, d.x.get(), d.y.get(), d.conv.get(), d.w.get(), cudnnConvolutionBwdFilterAlgo_t(algo),
      bytes);
}

// The first heuristic candidate that succeeds, fits the workspace cap and respects the
// precision policy; deterministic candidates are preferred over faster non-deterministic ones.
// Strict FP32: the descriptor stays at CUDNN_FMA_MATH and tensor-op candidates are skipped.
// TF32 allowed: the candidate's own math type is used (as cuDNN asks for *_v7 results).
// Down-conversion (CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) is never used.
CudaBackend::ConvPlan select_plan(cudnnHandle_t h, int dir, const ConvDescs& d, bool allow_tf32,
                                  const Shape& xs, const Shape& ws, const Shape& ys) {
  CUDARTS_CUDNN_CHECK(
      cudnnSetConvolutionMathType(d.conv.get(), allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  const std::vector<Candidate> candidates = heuristic_candidates(h, dir, d);
  for (bool deterministic_only : {true, false}) {
    for (const Candidate& c : candidates) {
      if (c.status != CUDNN_STATUS_SUCCESS || c.memory > kMaxConvWorkspaceBytes) continue;
      if (deterministic_only && c.determinism != CUDNN_DETERMINISTIC) continue;
      if (c.math_type == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
      if (!allow_tf32 && c.math_type == CUDNN_TENSOR_OP_MATH) continue;
      const cudnnMathType_t math = allow_tf32 ? c.math_type : CUDNN_FMA_MATH;
      CUDARTS_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), math));
      size_t bytes = 0;
      if (workspace_size(h, dir, d, c.algo, &bytes) != CUDNN_STATUS_SUCCESS ||
          bytes > kMaxConvWorkspaceBytes)
        continue;
      return {c.algo, math, std::max(bytes, c.memory)};
    }
  }
  throw NotSupported(detail::cat("cuda backend: cuDNN offers no ", allow_tf32 ? "" : "strict-FP32 ",
                                 "convolution ", direction_name(dir), " algorithm within ",
                                 kMaxConvWorkspaceBytes, " bytes of workspace for input ", xs,
                                 ", weight ", ws, ", output ", ys, " (", candidates.size(),
                                 " candidates)"));
}

// The cached plan for this convolution (chosen on first use), with the descriptor's math type
// set to the plan's.
const CudaBackend::ConvPlan& conv_plan(std::map<CudaBackend::ConvKey, CudaBackend::ConvPlan>& plans,
                                       cudnnHandle_t h, int dir, const ConvDescs& d,
                                       bool allow_tf32, const Shape& xs, const Shape& ws,
                                       const Shape& ys, const Conv2dParams& p) {
  const CudaBackend::ConvKey key = {dir,  //
                                    xs[0],        xs[1],        xs[2],    xs[3],
                                    ws[0],        ws[1],        ws[2],    ws[3],    //
                                    p.stride_h,   p.stride_w,   p.pad_h,  p.pad_w,  //
                                    p.dilation_h, p.dilation_w, p.groups, int64_t(allow_tf32)};
  auto it = plans.find(key);
  if (it == plans.end())
    it = plans.emplace(key, select_plan(h, dir, d, allow_tf32, xs, ws, ys)).first;
  CUDARTS_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.get(), it->second.math_type));
  return it->second;
}

// ------------------------------------------------------------------ batch norm / pooling

// Offset (in floats) of the second per-channel vector in a pair of C-vectors sharing one block:
// rounded up to 256 bytes, so both halves are as aligned as a fresh allocation (with c = 3 a
// plain `p + c` would hand cuDNN a pointer that is only 4-byte aligned).
int64_t second_half(int64_t c) {
  return (c + 63) / 64 * 64;
}

// p[0, c) = 1, p[second_half(c), + c) = 0 (gap: 0): cuDNN's scale and bias for a BN without
// affine parameters.
__global__ void ones_then_zeros_kernel(float* p, int64_t c, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    p[i] = i < c ? 1.0f : 0.0f;
}

void set_pool(const PoolDesc& d, const Pool2dParams& p) {
  // Max: the deterministic backward; padding never wins (as the CPU, which clips windows).
  // Average: padding excluded from the count, as the CPU reference.
  const cudnnPoolingMode_t mode = p.mode == PoolMode::Max
                                      ? CUDNN_POOLING_MAX_DETERMINISTIC
                                      : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING;
  // NaN inputs are not propagated by max pooling, like std::max in the CPU reference.
  CUDARTS_CUDNN_CHECK(
      cudnnSetPooling2dDescriptor(d.get(), mode, CUDNN_NOT_PROPAGATE_NAN, p.kernel_h, p.kernel_w,
                                  p.pad_h, p.pad_w, p.stride_h, p.stride_w),
      "(kernel ", p.kernel_h, "x", p.kernel_w, ", pad ", p.pad_h, "x", p.pad_w, ", stride ",
      p.stride_h, "x", p.stride_w, ")");
}

void check_bn_epsilon(const char* op, double eps) {
  if (eps < CUDNN_BN_MIN_EPSILON)
    throw NotSupported(detail::cat("cuda backend: ", op, ": eps ", eps,
                                   " is below cuDNN's minimum ", CUDNN_BN_MIN_EPSILON));
}

}  // namespace

// ------------------------------------------------------------------ backend plumbing

const ConvDescs& CudaBackend::conv_descs(const Shape& xs, const Shape& ws, const Shape& ys,
                                         const Conv2dParams& p) {
  const ConvKey key = {0,       xs[0],        xs[1],        xs[2],      xs[3],      ws[0],
                       ws[1],   ws[2],        ws[3],        p.stride_h, p.stride_w, p.pad_h,
                       p.pad_w, p.dilation_h, p.dilation_w, p.groups,   0};
  auto it = conv_descs_.find(key);
  if (it == conv_descs_.end())
    it = conv_descs_.emplace(key, std::make_shared<ConvDescs>(xs, ws, ys, p)).first;
  return *it->second;
}

cudnnTensorDescriptor_t CudaBackend::nchw_desc(const Shape& s, const char* what) {
  const std::array<int64_t, 4> key = {s[0], s[1], s[2], s[3]};
  auto it = tensor_descs_.find(key);
  if (it == tensor_descs_.end()) {
    auto d = std::make_shared<CachedTensorDesc>();
    set_nchw(d->d, s, what);
    it = tensor_descs_.emplace(key, std::move(d)).first;
  }
  return it->second->d.get();
}

cudnnPoolingDescriptor_t CudaBackend::pool_desc(const Pool2dParams& p) {
  const std::array<int, 7> key = {int(p.mode), p.kernel_h, p.kernel_w, p.pad_h,
                                  p.pad_w,     p.stride_h, p.stride_w};
  auto it = pool_descs_.find(key);
  if (it == pool_descs_.end()) {
    auto d = std::make_shared<CachedPoolDesc>();
    set_pool(d->d, p);
    it = pool_descs_.emplace(key, std::move(d)).first;
  }
  return it->second->d.get();
}

void* CudaBackend::workspace(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (!allocator_->has_pools()) retired_workspaces_.clear();
  if (!workspace_ || workspace_->bytes() < bytes) {
    // The old block may still be in use by queued work; the allocator hands it out again
    // only to work queued later on this same stream. But a captured graph keeps using it on
    // every replay: while graphs exist, keep it out of the allocator.
    if (workspace_ && allocator_->has_pools())
      retired_workspaces_.push_back(std::move(*workspace_));
    workspace_.reset();
    workspace_.emplace(allocator_, bytes);
  }
  return workspace_->data();
}

const float* CudaBackend::bn_ones_zeros(int64_t channels) {
  auto it = bn_ones_zeros_.find(channels);
  if (it == bn_ones_zeros_.end()) {
    // Filled by a kernel once and read by every later BN call: under capture the fill would
    // only run at replay, so eager calls before the first replay would read garbage.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDARTS_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
    if (capture != cudaStreamCaptureStatusNone)
      CUDARTS_FAIL("BatchNorm without affine parameters over ", channels,
                   " channels is first used inside a StepGraph capture; run the step once eagerly "
                   "before capturing it (the warm-up a capture needs)");
    const int64_t total = second_half(channels) + channels;
    Buffer b(allocator_, size_t(total) * sizeof(float));
    const int64_t blocks = std::min<int64_t>((total + kFillBlock - 1) / kFillBlock, 1024);
    ones_then_zeros_kernel<<<static_cast<unsigned>(std::max<int64_t>(blocks, 1)), kFillBlock, 0,
                             stream_>>>(static_cast<float*>(b.data()), channels, total);
    CUDARTS_LAUNCH_CHECK("ones_then_zeros_kernel", "(", channels, " channels)");
    it = bn_ones_zeros_.emplace(channels, std::move(b)).first;
  }
  return static_cast<const float*>(it->second.data());
}

// ------------------------------------------------------------------ convolution ops

// What cuDNN reads for a convolution: x, or with a fused ReLU (relu_input) relu(x) written into
// `scratch` first (cuDNN cannot apply it as it loads; the own depthwise kernels do).
Tensor CudaBackend::conv_input(const Tensor& x, const Conv2dParams& p,
                               std::optional<Buffer>& scratch) {
  if (!p.relu_input) return x.share();
  scratch.emplace(allocator_, x.nbytes());
  Tensor r = Tensor::wrap(scratch->data(), x.shape(), DType::F32, x.device());
  relu_fwd(x, r);
  return r;
}

// y = conv(x, w) (+ bias): the own depthwise or pointwise kernel (bias in its epilogue) where it
// covers the shapes, else cudnnConvolutionForward with beta 0, then cudnnAddTensor.
void CudaBackend::conv2d_fwd(const Tensor& x_in, const Tensor& w, const Tensor* bias, Tensor& y,
                             const Conv2dParams& p) {
  if (nothing_to_do("conv2d_fwd", y, {&x_in, &w})) return;
  if (own_depthwise_ &&
      depthwise::covers(depthwise::Direction::Forward, x_in.shape(), w.shape(), y.shape(), p)) {
    depthwise::forward(x_in, w, bias, y, p, stream_);
    return;
  }
  if (own_pointwise_ && pointwise::covers(pointwise::Direction::Forward, x_in.shape(), w.shape(),
                                          y.shape(), p, bias != nullptr)) {
    pointwise::forward(x_in, w, bias, y, p, stream_);
    return;
  }
  std::optional<Buffer> relu;
  const Tensor x = conv_input(x_in, p, relu);
  const ConvDescs& d = conv_descs(x.shape(), w.shape(), y.shape(), p);
  const ConvPlan& plan =
      conv_plan(conv_plans_, cudnn_, kConvFwd, d, allow_tf32_, x.shape(), w.shape(), y.shape(), p);
  void* ws = workspace(plan.workspace_bytes);
  CUDARTS_CUDNN_CHECK(
      cudnnConvolutionForward(cudnn_, &kOne, d.x.get(), x.data(), d.w.get(), w.data(), d.conv.get(),
                              cudnnConvolutionFwdAlgo_t(plan.algo), ws, plan.workspace_bytes,
                              &kZero, d.y.get(), y.data()),
      "(x ", x.shape(), ", w ", w.shape(), ", y ", y.shape(), ", groups ", p.groups, ", algo ",
      plan.algo, ")");
  if (bias) {
    const cudnnTensorDescriptor_t b = nchw_desc(Shape{1, w.dim(0), 1, 1}, "bias");
    CUDARTS_CUDNN_CHECK(cudnnAddTensor(cudnn_, &kOne, b, bias->data(), &kOne, d.y.get(), y.data()),
                        "(bias ", bias->shape(), ", y ", y.shape(), ")");
  }
}

// dx = conv_transpose(dy, w): the own depthwise gather kernel or the pointwise map kernel where
// they cover the shapes, else cudnnConvolutionBackwardData with beta 0.
void CudaBackend::conv2d_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx,
                                  const Conv2dParams& p, const Tensor* x) {
  if (nothing_to_do("conv2d_bwd_data", dx, {&dy, &w})) return;
  if (own_depthwise_ &&
      depthwise::covers(depthwise::Direction::BackwardData, dx.shape(), w.shape(), dy.shape(), p)) {
    depthwise::backward_data(dy, w, dx, p, x, stream_);
    return;
  }
  if (own_pointwise_ && pointwise::covers(pointwise::Direction::BackwardData, dx.shape(), w.shape(),
                                          dy.shape(), p, false)) {
    pointwise::backward_data(dy, w, dx, p, x, stream_);
    return;
  }
  conv2d_bwd_data_cudnn(dy, w, dx, p);
  if (x) relu_bwd(dx, *x, dx);  // the fused ReLU's backward, in place: x > 0 ? dx : 0
}

// The group ops: one kernel where the group kernels of depthwise.cu serve the group (own
// depthwise kernels on), else one convolution after another.
void CudaBackend::depthwise_group_fwd(const Tensor& x, const std::vector<const Tensor*>& ws,
                                      const std::vector<Conv2dParams>& ps,
                                      const std::vector<Tensor*>& ys) {
  if (own_depthwise_ && x.numel() > 0 && depthwise::group_forward(x, ws, ps, ys, stream_)) return;
  for (size_t j = 0; j < ws.size(); ++j) conv2d_fwd(x, *ws[j], nullptr, *ys[j], ps[j]);
}

// The group kernel, or one by one: each d_j into scratch, then add_n over the priors and the d_j
// (the order of the op's contract); one term goes straight into dx.
void CudaBackend::depthwise_group_bwd_data(const std::vector<const Tensor*>& dys,
                                           const std::vector<const Tensor*>& ws,
                                           const std::vector<Conv2dParams>& ps, const Tensor* x,
                                           const std::vector<const Tensor*>& priors, Tensor& dx) {
  if (own_depthwise_ && dx.numel() > 0 &&
      depthwise::group_backward_data(dys, ws, ps, x, priors, dx, stream_))
    return;
  depthwise_group_bwd_data_one_by_one(*this, allocator_, dys, ws, ps, x, priors, dx);
}

// The group kernels where make_group_filter takes the group (own depthwise kernels on), else
// conv2d_bwd_filter one by one.
void CudaBackend::depthwise_group_bwd_filter(const Tensor& x, const std::vector<const Tensor*>& dys,
                                             const std::vector<Conv2dParams>& ps,
                                             const std::vector<Tensor*>& dws) {
  if (x.numel() == 0) return;  // an empty batch adds nothing
  if (own_depthwise_) {
    std::vector<Shape> ws, ys;
    for (size_t j = 0; j < dws.size(); ++j)
      ws.push_back(dws[j]->shape()), ys.push_back(dys[j]->shape());
    if (const auto g = depthwise::make_group_filter(x.shape(), ws, ys, ps)) {
      std::optional<Buffer> partials;
      if (g->partial_floats > 0)
        partials.emplace(allocator_, depthwise::group_filter_scratch_bytes(*g));
      depthwise::group_backward_filter(*g, x, dys, dws, partials ? partials->data() : nullptr,
                                       stream_);
      return;
    }
  }
  for (size_t j = 0; j < dys.size(); ++j) conv2d_bwd_filter(x, *dys[j], *dws[j], nullptr, ps[j]);
}

void CudaBackend::conv2d_bwd_data_cudnn(const Tensor& dy, const Tensor& w, Tensor& dx,
                                        const Conv2dParams& p) {
  const ConvDescs& d = conv_descs(dx.shape(), w.shape(), dy.shape(), p);
  const ConvPlan& plan = conv_plan(conv_plans_, cudnn_, kConvBwdData, d, allow_tf32_, dx.shape(),
                                   w.shape(), dy.shape(), p);
  void* ws = workspace(plan.workspace_bytes);
  CUDARTS_CUDNN_CHECK(
      cudnnConvolutionBackwardData(cudnn_, &kOne, d.w.get(), w.data(), d.y.get(), dy.data(),
                                   d.conv.get(), cudnnConvolutionBwdDataAlgo_t(plan.algo), ws,
                                   plan.workspace_bytes, &kZero, d.x.get(), dx.data()),
      "(dy ", dy.shape(), ", w ", w.shape(), ", dx ", dx.shape(), ", groups ", p.groups, ", algo ",
      plan.algo, ")");
}

// dw += corr(x, dy) and dbias += sum(dy): the own two-pass depthwise kernels (dbias fused, both
// in a fixed order) or the two-pass pointwise ones (no dbias) where they cover the shapes, else
// backward filter and backward bias with beta 1.
void CudaBackend::conv2d_bwd_filter(const Tensor& x_in, const Tensor& dy, Tensor& dw, Tensor* dbias,
                                    const Conv2dParams& p) {
  // An empty batch adds nothing to dw or dbias.
  if (dw.numel() == 0 || x_in.numel() == 0 || dy.numel() == 0) return;
  if (own_depthwise_ && depthwise::covers(depthwise::Direction::BackwardFilter, x_in.shape(),
                                          dw.shape(), dy.shape(), p)) {
    const size_t bytes = depthwise::filter_scratch_bytes(x_in.shape(), dw.shape(), dy.shape(), p);
    std::optional<Buffer> partials;
    if (bytes > 0) partials.emplace(allocator_, bytes);
    depthwise::backward_filter(x_in, dy, dw, dbias, p, partials ? partials->data() : nullptr,
                               stream_);
    return;
  }
  if (own_pointwise_ && pointwise::covers(pointwise::Direction::BackwardFilter, x_in.shape(),
                                          dw.shape(), dy.shape(), p, dbias != nullptr)) {
    const size_t bytes = pointwise::filter_scratch_bytes(x_in.shape(), dw.shape(), dy.shape(), p);
    std::optional<Buffer> partials;
    if (bytes > 0) partials.emplace(allocator_, bytes);
    pointwise::backward_filter(x_in, dy, dw, p, partials ? partials->data() : nullptr, stream_);
    return;
  }
  std::optional<Buffer> relu;
  const Tensor x = conv_input(x_in, p, relu);
  const ConvDescs& d = conv_descs(x.shape(), dw.shape(), dy.shape(), p);
  const ConvPlan& plan = conv_plan(conv_plans_, cudnn_, kConvBwdFilter, d, allow_tf32_, x.shape(),
                                   dw.shape(), dy.shape(), p);
  void* ws = workspace(plan.workspace_bytes);
  CUDARTS_CUDNN_CHECK(
      cudnnConvolutionBackwardFilter(cudnn_, &kOne, d.x.get(), x.data(), d.y.get(), dy.data(),
                                     d.conv.get(), cudnnConvolutionBwdFilterAlgo_t(plan.algo), ws,
                                     plan.workspace_bytes, &kOne, d.w.get(), dw.data()),
      "(x ", x.shape(), ", dy ", dy.shape(), ", dw ", dw.shape(), ", groups ", p.groups, ", algo ",
      plan.algo, ")");
  if (dbias) {
    const cudnnTensorDescriptor_t b = nchw_desc(Shape{1, dw.dim(0), 1, 1}, "dbias");
    CUDARTS_CUDNN_CHECK(
        cudnnConvolutionBackwardBias(cudnn_, &kOne, d.y.get(), dy.data(), &kOne, b, dbias->data()),
        "(dy ", dy.shape(), ", dbias ", dbias->shape(), ")");
  }
}

// ------------------------------------------------------------------ batch normalisation

// cuDNN spatial BN. Normalises with the biased batch variance; the running variance is
// updated with the unbiased one (m / (m - 1)), like the CPU reference. The cuDNN header only
// says "moving average of variance[x]"; the unbiased update is what PyTorch's cuDNN path relies
// on for its documented semantics and was measured in apache/mxnet#21111. resultSaveInvVariance
// is 1 / sqrt(var + eps) (the inverse standard deviation) despite its name, see
// microsoft/onnxruntime#8172. Both are checked by the op-parity test on a GPU.
// A (C) statistics tensor as the (1, C) rows the normalised-mix kernels take.
Tensor CudaBackend::one_row(const Tensor& t) {
  return Tensor::wrap(t.data(), Shape{1, t.numel()}, DType::F32, t.device());
}

// The weight 1 of a one-candidate mix (bn_ones_zeros' first entry).
Tensor CudaBackend::unit_weight() {
  return Tensor::wrap(const_cast<float*>(bn_ones_zeros(1)), Shape{1}, DType::F32,
                      Device::cuda(device_));
}

// Affine-free BatchNorm (own_norm_kernels): the statistics and the normalisation of the
// normalised-mix kernels with one candidate of weight 1 (batchnorm_stats, mix_norm_fwd: the
// same statistics, running-statistics move and output as batchnorm_fwd_train's contract); with
// gamma or beta, cuDNN.
void CudaBackend::batchnorm_fwd_train(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                      Tensor* running_mean, Tensor* running_var, Tensor& y,
                                      Tensor& save_mean, Tensor& save_invstd,
                                      const BatchNormParams& p) {
  check_bn_epsilon("batchnorm_fwd_train", p.eps);
  if (nothing_to_do("batchnorm_fwd_train", y, {&x})) return;
  const int64_t c = x.dim(1);
  if (own_norm_ && !gamma && !beta) {  // the normalised-mix kernels with one candidate
    Tensor mean = one_row(save_mean), invstd = one_row(save_invstd);
    std::vector<Tensor*> rms, rvs;
    if (running_mean && running_var) rms = {running_mean}, rvs = {running_var};
    batchnorm_stats({&x}, {true}, mean, invstd, rms, rvs, p);
    mix_norm_fwd(unit_weight(), {&x}, {true}, mean, invstd, y);
    return;
  }
  // Spatial BN: the derived parameter descriptor is (1, C, 1, 1).
  const cudnnTensorDescriptor_t xd = nchw_desc(x.shape(), "x");
  const cudnnTensorDescriptor_t bn = nchw_desc(Shape{1, c, 1, 1}, "BN parameters");
  const float* defaults = gamma ? nullptr : bn_ones_zeros(c);
  const float* scale = gamma ? gamma->data() : defaults;
  const float* shift = beta ? beta->data() : defaults + second_half(c);
  CUDARTS_CUDNN_CHECK(
      cudnnBatchNormalizationForwardTraining(
          cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, xd, x.data(), xd, y.data(), bn, scale,
          shift, double(p.momentum), running_mean ? running_mean->data() : nullptr,
          running_var ? running_var->data() : nullptr, double(p.eps), save_mean.data(),
          save_invstd.data()),
      "(x ", x.shape(), ", affine ", gamma != nullptr, ", running stats ", running_mean != nullptr,
      ", momentum ", p.momentum, ", eps ", p.eps, ")");
}

// y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta.
void CudaBackend::batchnorm_fwd_infer(const Tensor& x, const Tensor* gamma, const Tensor* beta,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      Tensor& y, float eps) {
  check_bn_epsilon("batchnorm_fwd_infer", eps);
  if (nothing_to_do("batchnorm_fwd_infer", y, {&x})) return;
  const int64_t c = x.dim(1);
  // Spatial BN: the derived parameter descriptor is (1, C, 1, 1).
  const cudnnTensorDescriptor_t xd = nchw_desc(x.shape(), "x");
  const cudnnTensorDescriptor_t bn = nchw_desc(Shape{1, c, 1, 1}, "BN parameters");
  const float* defaults = gamma ? nullptr : bn_ones_zeros(c);
  const float* scale = gamma ? gamma->data() : defaults;
  const float* shift = beta ? beta->data() : defaults + second_half(c);
  CUDARTS_CUDNN_CHECK(
      cudnnBatchNormalizationForwardInference(cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, xd,
                                              x.data(), xd, y.data(), bn, scale, shift,
                                              running_mean.data(), running_var.data(), double(eps)),
      "(x ", x.shape(), ", affine ", gamma != nullptr, ", eps ", eps, ")");
}

// dx = gamma invstd / m (m dy - sum dy - xhat sum dy xhat) (=); dgamma, dbeta (+=, beta 1).
// Without dgamma / dbeta, cuDNN still needs somewhere to write them: a scratch pair.
void CudaBackend::batchnorm_bwd(const Tensor& dy, const Tensor& x, const Tensor* gamma,
                                const Tensor& save_mean, const Tensor& save_invstd, Tensor& dx,
                                Tensor* dgamma, Tensor* dbeta) {
  if (nothing_to_do("batchnorm_bwd", dx, {&dy, &x})) return;
  const int64_t c = x.dim(1);
  if (own_norm_ && !gamma && !dgamma && !dbeta) {  // mix_norm_bwd with one candidate, weight 1
    mix_norm_bwd(unit_weight(), dy, {&x}, {true}, one_row(save_mean), one_row(save_invstd), {&dx},
                 nullptr);
    return;
  }
  // Spatial BN: the derived parameter descriptor is (1, C, 1, 1).
  const cudnnTensorDescriptor_t xd = nchw_desc(x.shape(), "x");
  const cudnnTensorDescriptor_t bn = nchw_desc(Shape{1, c, 1, 1}, "BN parameters");
  const float* scale = gamma ? gamma->data() : bn_ones_zeros(c);
  std::optional<Buffer> scratch;
  float* dscale = dgamma ? dgamma->data() : nullptr;
  float* dshift = dbeta ? dbeta->data() : nullptr;
  if (!dgamma) {
    scratch.emplace(allocator_, size_t(second_half(c) + c) * sizeof(float));
    dscale = static_cast<float*>(scratch->data());
    dshift = dscale + second_half(c);
  }
  const float* param_beta = dgamma ? &kOne : &kZero;  // the scratch pair is not read
  CUDARTS_CUDNN_CHECK(cudnnBatchNormalizationBackward(
                          cudnn_, CUDNN_BATCHNORM_SPATIAL, &kOne, &kZero, &kOne, param_beta, xd,
                          x.data(), xd, dy.data(), xd, dx.data(), bn, scale, dscale, dshift,
                          kBnBackwardEpsilon, save_mean.data(), save_invstd.data()),
                      "(x ", x.shape(), ", affine ", gamma != nullptr, ", parameter gradients ",
                      dgamma != nullptr, ")");
}

// ------------------------------------------------------------------ pooling

// The own pooling kernels where pool::make_problem covers the pooling (own_pool_kernels on),
// else cuDNN.
void CudaBackend::pool2d_fwd(const Tensor& x, Tensor& y, const Pool2dParams& p) {
  if (nothing_to_do("pool2d_fwd", y, {&x})) return;
  if (own_pool_ && pool::make_problem(x.shape(), y.shape(), p)) {
    pool::forward(x, y, p, stream_);
    return;
  }
  const cudnnTensorDescriptor_t xd = nchw_desc(x.shape(), "x"), yd = nchw_desc(y.shape(), "y");
  const cudnnPoolingDescriptor_t pd = pool_desc(p);
  CUDARTS_CUDNN_CHECK(cudnnPoolingForward(cudnn_, pd, &kOne, xd, x.data(), &kZero, yd, y.data()),
                      "(x ", x.shape(), ", y ", y.shape(), ", ",
                      p.mode == PoolMode::Max ? "max" : "average", ")");
}

// dx (=) from x, the forward output y and dy; max routes dy to the window's maximum.
void CudaBackend::pool2d_bwd(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor& dx,
                             const Pool2dParams& p) {
  if (nothing_to_do("pool2d_bwd", dx, {&x, &y, &dy})) return;
  if (own_pool_ && pool::make_problem(x.shape(), dy.shape(), p)) {
    std::optional<Buffer> arg;
    if (const size_t bytes = pool::backward_scratch_bytes(dy.shape(), p))
      arg.emplace(allocator_, bytes);
    pool::backward(x, dy, dx, p, arg ? arg->data() : nullptr, stream_);
    return;
  }
  const cudnnTensorDescriptor_t xd = nchw_desc(x.shape(), "x"), yd = nchw_desc(y.shape(), "y");
  const cudnnPoolingDescriptor_t pd = pool_desc(p);
  CUDARTS_CUDNN_CHECK(cudnnPoolingBackward(cudnn_, pd, &kOne, yd, y.data(), yd, dy.data(), xd,
                                           x.data(), &kZero, xd, dx.data()),
                      "(x ", x.shape(), ", dy ", dy.shape(), ", ",
                      p.mode == PoolMode::Max ? "max" : "average", ")");
}

}  // namespace cudarts::cuda
