// Multi-tensor optimizer steps (SGD, Adam / AdamW), the global gradient norm and the clip
// coefficient. Parameters and optimizer state are updated in place; norm and coef are written
// (=). One launch covers up to kTensorsPerLaunch tensors: their pointers travel by value in the
// kernel parameters (no upload, so graph capture works) and each block updates one fixed-size
// chunk of one tensor. grad_scale, when given, is read on the device. CPU twins:
// src/cpu/cpu_nas.cpp (sgd_step, adam_step, global_norm, clip_coefficient).
#include <math_constants.h>

#include <array>
#include <cmath>

#include "cuda_backend.h"
#include "optim_kernels.cuh"
#include "reduce.cuh"

namespace cudarts::cuda {

using namespace optim;  // the kernels (optim_kernels.cuh)

void CudaBackend::sgd_step(const std::vector<OptimSlot>& slots, const SgdParams& p,
                           const Tensor* grad_scale, const Tensor* hyper) {
  std::vector<Entry> entries;
  for (const OptimSlot& s : slots)
    entries.push_back({s.param->data(), s.grad->data(),
                       p.momentum > 0.0f ? s.state0->data() : nullptr, nullptr, s.param->numel(),
                       s.mask ? s.mask->data() : nullptr});
  const float* gs = grad_scale ? grad_scale->data() : nullptr;
  const float* hp = hyper ? hyper->data() : nullptr;
  for_each_table(entries, [&](const TensorTable& t, int64_t) {
    sgd_kernel<<<unsigned(t.first_chunk[t.count]), kOptimBlock, 0, stream_>>>(t, p, gs, hp);
    CUDARTS_LAUNCH_CHECK("sgd_kernel", "(", t.count, " tensors, ", t.first_chunk[t.count],
                         " chunks)");
  });
}

void CudaBackend::adam_step(const std::vector<OptimSlot>& slots, const AdamParams& p,
                            const Tensor* grad_scale, const Tensor* hyper) {
  AdamArgs a;
  a.lr = p.lr;
  a.beta1 = p.beta1;
  a.beta2 = p.beta2;
  a.eps = p.eps;
  a.weight_decay = p.weight_decay;
  const std::array<float, 3> h = ops::adam_hyper(p);
  a.bc1 = h[1];
  a.bc2 = h[2];
  a.decoupled = p.decoupled;
  std::vector<Entry> entries;
  for (const OptimSlot& s : slots)
    entries.push_back({s.param->data(), s.grad->data(), s.state0->data(), s.state1->data(),
                       s.param->numel(), s.mask ? s.mask->data() : nullptr});
  const float* gs = grad_scale ? grad_scale->data() : nullptr;
  const float* hp = hyper ? hyper->data() : nullptr;
  for_each_table(entries, [&](const TensorTable& t, int64_t) {
    adam_kernel<<<unsigned(t.first_chunk[t.count]), kOptimBlock, 0, stream_>>>(t, a, gs, hp);
    CUDARTS_LAUNCH_CHECK("adam_kernel", "(", t.count, " tensors, ", t.first_chunk[t.count],
                         " chunks)");
  });
}

void CudaBackend::global_norm(const std::vector<const Tensor*>& xs, Tensor& out) {
  std::vector<Entry> entries;
  int64_t total_chunks = 0;
  for (const Tensor* x : xs) {
    entries.push_back({nullptr, x->data(), nullptr, nullptr, x->numel()});
    total_chunks += chunks_of(x->numel());
  }
  Buffer partials(allocator_, size_t(total_chunks) * sizeof(double));
  double* p = static_cast<double*>(partials.data());
  for_each_table(entries, [&](const TensorTable& t, int64_t chunk_base) {
    sum_squares_kernel<<<unsigned(t.first_chunk[t.count]), kOptimBlock, 0, stream_>>>(t, chunk_base,
                                                                                      p);
    CUDARTS_LAUNCH_CHECK("sum_squares_kernel", "(", t.count, " tensors, ", t.first_chunk[t.count],
                         " chunks)");
  });
  launch_sum_partials(p, 1, total_chunks, 1.0, true, out.data(), stream_);
}

void CudaBackend::count_nonfinite(const std::vector<const Tensor*>& values, Tensor& state) {
  Values8 v{};
  v.n = int(values.size());
  for (size_t i = 0; i < values.size(); ++i) v.p[i] = values[i]->data();
  count_nonfinite_kernel<<<1, kSerialThreads, 0, stream_>>>(v, state.data_i32());
  CUDARTS_LAUNCH_CHECK("count_nonfinite_kernel", "(", values.size(), " values)");
}

void CudaBackend::metrics_add(const Tensor& loss, const Tensor& hits, float batch, Tensor& sums) {
  metrics_add_kernel<<<1, kSerialThreads, 0, stream_>>>(loss.data(), hits.data(), batch,
                                                        sums.data());
  CUDARTS_LAUNCH_CHECK("metrics_add_kernel", "(batch ", batch, ")");
}

void CudaBackend::clip_coefficient(const Tensor& norm, float max_norm, Tensor& coef) {
  clip_coefficient_kernel<<<1, kSerialThreads, 0, stream_>>>(norm.data(), max_norm, coef.data());
  CUDARTS_LAUNCH_CHECK("clip_coefficient_kernel", "(max_norm ", max_norm, ")");
}

}  // namespace cudarts::cuda
