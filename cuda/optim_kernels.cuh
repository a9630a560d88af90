// The multi-tensor optimizer kernels and the training step's small device checks (internal;
// launchers in optim_kernels.cu): the tensor tables, SGD, Adam / AdamW, the sums of squares of
// the global norm, the clip coefficient, the divergence watch and the metrics sums. Included by
// optim_kernels.cu and by tests/test_optim_emulation.cpp, which runs them as host code under an
// emulation of blocks and barriers (CUDARTS_KERNEL_EMULATION: it supplies block_sum); internal
// linkage.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "cudarts/error.h"
#include "cudarts/ops.h"
#include "reduce_sizes.h"
#ifndef CUDARTS_KERNEL_EMULATION
#include "reduce.cuh"
#endif

namespace cudarts::cuda::optim {
namespace {

constexpr int kOptimBlock = kReduceBlock;  // global_norm reduces with block_sum
constexpr int64_t kChunk = 4096;           // elements of one tensor that one block handles
constexpr int kTensorsPerLaunch = 256;
constexpr int kSerialThreads = 1;  // kernels over a few K-vectors run in one thread, in order

// The tensors of one launch. Tensor t owns chunks [first_chunk[t], first_chunk[t + 1]).
// global_norm uses `grad` for the tensors it measures.
struct TensorTable {
  float* param[kTensorsPerLaunch];
  const float* grad[kTensorsPerLaunch];
  float* state0[kTensorsPerLaunch];
  float* state1[kTensorsPerLaunch];
  const float* mask[kTensorsPerLaunch];  // nullptr: every element is updated
  int64_t numel[kTensorsPerLaunch];
  int64_t first_chunk[kTensorsPerLaunch + 1];
  int count;
};
// Kernel parameters may take 32 KB since CUDA 12.1 on sm_70+; stay well below.
static_assert(sizeof(TensorTable) <= 16 * 1024, "TensorTable too large for kernel parameters");

struct Entry {
  float* param;
  const float* grad;
  float* state0;
  float* state1;
  int64_t numel;
  const float* mask = nullptr;
};

int64_t chunks_of(int64_t numel) {
  return (numel + kChunk - 1) / kChunk;
}

// Packs the non-empty entries into tables of at most kTensorsPerLaunch tensors and calls
// launch(table, chunk_base) for each, chunk_base being the chunks of the tables before it.
template <class Launch>
void for_each_table(const std::vector<Entry>& entries, const Launch& launch) {
  TensorTable t{};
  int64_t chunk_base = 0;
  auto flush = [&] {
    if (t.count == 0) return;
    CUDARTS_CHECK(t.first_chunk[t.count] <= 0x7fffffff, "cuda backend: ", t.first_chunk[t.count],
                  " chunks do not fit one grid");
    launch(t, chunk_base);
    chunk_base += t.first_chunk[t.count];
    t = TensorTable{};
  };
  for (const Entry& e : entries) {
    if (e.numel == 0) continue;
    const int i = t.count++;
    t.param[i] = e.param;
    t.grad[i] = e.grad;
    t.state0[i] = e.state0;
    t.state1[i] = e.state1;
    t.mask[i] = e.mask;
    t.numel[i] = e.numel;
    t.first_chunk[i + 1] = t.first_chunk[i] + chunks_of(e.numel);
    if (t.count == kTensorsPerLaunch) flush();
  }
  flush();
}

// The tensor that owns `chunk`: the last t with first_chunk[t] <= chunk (every tensor in a
// table owns at least one chunk).
__device__ int tensor_of_chunk(const TensorTable& t, int64_t chunk) {
  int lo = 0, hi = t.count;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (t.first_chunk[mid] <= chunk)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// The element range [begin, end) of this block's chunk within tensor ti.
__device__ void chunk_range(const TensorTable& t, int ti, int64_t* begin, int64_t* end) {
  *begin = (int64_t(blockIdx.x) - t.first_chunk[ti]) * kChunk;
  const int64_t stop = *begin + kChunk;
  *end = stop < t.numel[ti] ? stop : t.numel[ti];
}

// SGD (PyTorch): d = gs g + wd w; buf = m buf + d; d = nesterov ? d + m buf : buf; w -= lr d
// (CPU: sgd_step). state0 is the momentum buffer, only touched when momentum > 0.
__global__ void sgd_kernel(const __grid_constant__ TensorTable t, SgdParams p,
                           const float* grad_scale, const float* hyper) {
  const int ti = tensor_of_chunk(t, blockIdx.x);
  int64_t begin, end;
  chunk_range(t, ti, &begin, &end);
  const float gs = grad_scale ? grad_scale[0] : 1.0f;
  if (gs == 0.0f) return;  // a skipped step (non-finite gradient norm): nothing changes
  const float lr = hyper ? hyper[0] : p.lr;
  float* w = t.param[ti];
  const float* g = t.grad[ti];
  float* buf = p.momentum > 0.0f ? t.state0[ti] : nullptr;
  const float* mask = t.mask[ti];
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptimBlock) {
    if (mask && mask[i] == 0.0f) continue;
    float d = gs * g[i] + p.weight_decay * w[i];
    if (buf) {
      buf[i] = p.momentum * buf[i] + d;
      d = p.nesterov ? d + p.momentum * buf[i] : buf[i];
    }
    w[i] -= lr * d;
  }
}

struct AdamArgs {
  float lr, beta1, beta2, eps, weight_decay;
  float bc1, bc2;  // bias corrections 1 - beta^step, computed on the host as the CPU does
  bool decoupled;
};

// Adam / AdamW (PyTorch): d = gs g (+ wd w unless decoupled; decoupled: w *= 1 - lr wd);
// m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2; w -= lr (m / bc1) / (sqrt(v / bc2) + eps)
// (CPU: adam_step).
__global__ void adam_kernel(const __grid_constant__ TensorTable t, AdamArgs a,
                            const float* grad_scale, const float* hyper) {
  const int ti = tensor_of_chunk(t, blockIdx.x);
  int64_t begin, end;
  chunk_range(t, ti, &begin, &end);
  const float gs = grad_scale ? grad_scale[0] : 1.0f;
  if (gs == 0.0f) return;  // a skipped step (non-finite gradient norm): nothing changes
  const float lr = hyper ? hyper[0] : a.lr, bc1 = hyper ? hyper[1] : a.bc1,
              bc2 = hyper ? hyper[2] : a.bc2;
  float* w = t.param[ti];
  const float* g = t.grad[ti];
  float* m = t.state0[ti];
  float* v = t.state1[ti];
  const float* mask = t.mask[ti];
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptimBlock) {
    if (mask && mask[i] == 0.0f) continue;
    float d = gs * g[i];
    if (a.decoupled)
      w[i] *= 1.0f - lr * a.weight_decay;
    else
      d += a.weight_decay * w[i];
    m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * d;
    v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * d * d;
    w[i] -= lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + a.eps);
  }
}

// partials[chunk_base + chunk] = sum of squares of the chunk in double (CPU: global_norm).
__global__ void sum_squares_kernel(const __grid_constant__ TensorTable t, int64_t chunk_base,
                                   double* partials) {
  const int ti = tensor_of_chunk(t, blockIdx.x);
  int64_t begin, end;
  chunk_range(t, ti, &begin, &end);
  const float* x = t.grad[ti];
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kOptimBlock) {
    const double v = x[i];
    acc += v * v;
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partials[chunk_base + blockIdx.x] = total;
}

// coef = min(1, max_norm / (norm + 1e-6)), 0 for a non-finite norm; one thread
// (CPU: clip_coefficient).
__global__ void clip_coefficient_kernel(const float* norm, float max_norm, float* coef) {
  const float n = norm[0];
  const float c = max_norm / (n + 1e-6f);
  coef[0] = isfinite(n) ? (c < 1.0f ? c : 1.0f) : 0.0f;
}

// Up to 8 device scalars passed by value (count_nonfinite).
struct Values8 {
  const float* p[8];
  int n;
};

// state = {calls, first bad call, bad calls, first bad value}; one thread, in order
// (CPU: count_nonfinite).
__global__ void count_nonfinite_kernel(const __grid_constant__ Values8 v, int32_t* state) {
  const int32_t call = state[0]++;
  for (int i = 0; i < v.n; ++i) {
    if (isfinite(v.p[i][0])) continue;
    if (state[1] < 0) {
      state[1] = call;
      state[3] = i;
    }
    ++state[2];
    break;
  }
}

// sums = {sum batch * loss, sum hits, samples, skipped}; one thread (CPU: metrics_add).
__global__ void metrics_add_kernel(const float* loss, const float* hits, float batch, float* sums) {
  const float l = loss[0];
  if (!isfinite(l)) {
    sums[3] += 1.0f;
    return;
  }
  sums[0] += batch * l;
  sums[1] += hits[0];
  sums[2] += batch;
}

}  // namespace
}  // namespace cudarts::cuda::optim
