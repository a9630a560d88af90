// The normalised-mix kernels (internal; launchers in norm_mix.cu): templates on the element
// type T (compute in float, sums in double). Included by norm_mix.cu and by
// tests/test_norm_mix_emulation.cpp, which runs them as host code under an emulation of blocks
// and barriers (CUDARTS_KERNEL_EMULATION: it supplies block_sum and kReduceBlock); internal
// linkage, so each binary has its own copy.
#pragma once
#include <cstdint>

#ifndef CUDARTS_KERNEL_EMULATION
#include "reduce.cuh"
#endif

namespace cudarts::cuda::norm_mix {
namespace {

constexpr int kMaxNormMix = 64;  // candidates of one call (the pointer tables)
constexpr int kSumsGroup = 8;    // candidates per launch of the backward sums (in registers)

template <class T>
struct NormInputs {
  const T* x[kMaxNormMix];
};
template <class T>
struct NormOutputs {
  T* x[kMaxNormMix];
};

// Blocks per channel of the first passes: about 4096 values each, at most 32.
int64_t norm_splits(int64_t count) {
  const int64_t s = count / 4096;
  return s < 1 ? 1 : (s > 32 ? 32 : s);
}

// A walk over channel ci's values k = first, first + step, ... of an (N, C, H, W) tensor
// (value k: image k / hw, position k % hw) without a 64-bit division per element (a 64-bit
// divide is a long software sequence on the GPU): the image and position of k are kept and
// advanced; index() is the element's offset, (k / hw * c + ci) * hw + k % hw.
struct ChannelWalk {
  int64_t img, pos, c, hw, ci;
  __device__ ChannelWalk(int64_t first, int64_t c_, int64_t hw_, int64_t ci_)
      : img(first / hw_), pos(first % hw_), c(c_), hw(hw_), ci(ci_) {}
  __device__ int64_t index() const { return (img * c + ci) * hw + pos; }
  __device__ void advance(int64_t step) {
    pos += step;
    if (pos >= hw) {
      img += pos / hw;
      pos %= hw;
    }
  }
};

// The channel of element e of an (N, C, H, W) tensor, in 32-bit arithmetic where it fits.
__device__ __forceinline__ int64_t channel_of(int64_t e, int64_t hw, int64_t c) {
  if (e <= 0xffffffffll && hw <= 0xffffffffll && c <= 0xffffffffll)
    return int64_t((uint32_t(e) / uint32_t(hw)) % uint32_t(c));
  return (e / hw) % c;
}

// A normed candidate's training output, as the CPU computes it: z * sc + sh, sc = invstd,
// sh = 0 - mean * sc (rounded products and sums, no contraction: the CPU's bits).
template <class T>
__device__ __forceinline__ float normalised(T z, float mean, float invstd) {
  const float sh = 0.0f - mean * invstd;
#ifdef __CUDA_ARCH__
  return __fadd_rn(__fmul_rn(float(z), invstd), sh);
#else
  return float(z) * invstd + sh;  // host emulation: x86-64 without FMA does not contract
#endif
}

// partials[((i C + ci) S + s) 2 + {0, 1}] = block s's {sum x, sum x^2} of candidate i's channel
// ci, in double; grid (S, C, K), un-normed candidates' blocks return at once.
template <class T>
__global__ void norm_stats_partials_kernel(const __grid_constant__ NormInputs<T> xs,
                                           uint64_t normed, int64_t n, int64_t c, int64_t hw,
                                           double* partials) {
  const int64_t i = blockIdx.z, ci = blockIdx.y, s = blockIdx.x, splits = gridDim.x;
  if (!((normed >> i) & 1u)) return;  // the whole block: no block_sum is entered
  const T* x = xs.x[i];
  const int64_t count = n * hw, per = (count + splits - 1) / splits;
  const int64_t end = (s + 1) * per < count ? (s + 1) * per : count;
  // Four values in flight per thread, added in the order of k.
  constexpr int kInFlight = 4;
  double s1 = 0.0, s2 = 0.0;
  ChannelWalk walk(s * per + threadIdx.x, c, hw, ci);
  for (int64_t k = s * per + threadIdx.x; k < end; k += kInFlight * kReduceBlock) {
    double v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      v[u] = k + u * kReduceBlock < end ? double(x[walk.index()]) : 0.0;
      walk.advance(kReduceBlock);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      if (k + u * kReduceBlock >= end) break;
      s1 += v[u];
      s2 += v[u] * v[u];
    }
  }
  s1 = block_sum(s1);
  s2 = block_sum(s2);
  if (threadIdx.x == 0) {
    double* out = partials + ((i * c + ci) * splits + s) * 2;
    out[0] = s1;
    out[1] = s2;
  }
}

// One thread per (candidate, channel): the partial sums in block order, the statistics (biased
// variance), the running statistics' move (unbiased variance); mean 0 and invstd 1 for the
// rows of un-normed candidates.
template <class T>
__global__ void norm_stats_finish_kernel(const double* partials, uint64_t normed, int64_t k,
                                         int64_t c, int64_t splits, double count,
                                         const __grid_constant__ NormOutputs<T> running_mean,
                                         const __grid_constant__ NormOutputs<T> running_var,
                                         float eps, float momentum, T* mean, T* invstd) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= k * c) return;
  const int64_t i = r / c, ci = r % c;
  if (!((normed >> i) & 1u)) {
    mean[r] = T(0.0f);
    invstd[r] = T(1.0f);
    return;
  }
  double s1 = 0.0, s2 = 0.0;
  for (int64_t s = 0; s < splits; ++s) {
    s1 += partials[(r * splits + s) * 2];
    s2 += partials[(r * splits + s) * 2 + 1];
  }
  const double m = s1 / count;
  const double v = fmax(s2 / count - m * m, 0.0);
  mean[r] = T(m);
  invstd[r] = T(1.0 / sqrt(v + double(eps)));
  if (T* rm = running_mean.x[i]) {
    T* rv = running_var.x[i];
    rm[ci] = T((1.0 - momentum) * double(rm[ci]) + momentum * m);
    rv[ci] = T((1.0 - momentum) * double(rv[ci]) + momentum * v * count / (count - 1.0));
  }
}

// y[e] = sum_j w[j] t_j[e], t_j = x_j or (normed) its normalised value; float accumulation in
// candidate order (CPU: mix_norm_fwd).
template <class T>
__global__ void mix_norm_fwd_kernel(const float* weights, const __grid_constant__ NormInputs<T> xs,
                                    uint64_t normed, int k, const float* mean, const float* invstd,
                                    int64_t total, int64_t c, int64_t hw, T* y) {
  __shared__ float w[kMaxNormMix];
  if (int(threadIdx.x) < k) w[threadIdx.x] = weights[threadIdx.x];
  __syncthreads();
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = channel_of(e, hw, c);
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
      if (!xs.x[j]) continue;
      const float t = (normed >> j) & 1u
                          ? normalised(xs.x[j][e], mean[j * c + ci], invstd[j * c + ci])
                          : float(xs.x[j][e]);
      acc += w[j] * t;
    }
    y[e] = T(acc);
  }
}

// Backward, first pass, for candidates j0 .. j0 + kSumsGroup: per block s of channel ci,
// partials[(ci S + s) (1 + K) + 0] = sum dy and [.. + 1 + j] = sum dy t_j for the candidates
// in `wanted` (normed, or scored), in double; grid (S, C). A thread's values are added in the
// order of q; kSumsInFlight of them (dy and every wanted candidate's value) are loaded before
// any is added, so that their loads are in flight together.
constexpr int kSumsInFlight = 4;
template <class T>
__global__ void mix_norm_sums_kernel(const T* dy, const __grid_constant__ NormInputs<T> xs,
                                     uint64_t normed, uint64_t wanted, int j0, int k,
                                     const float* mean, const float* invstd, int64_t n, int64_t c,
                                     int64_t hw, double* partials) {
  const int64_t ci = blockIdx.y, s = blockIdx.x, splits = gridDim.x;
  const int64_t count = n * hw, per = (count + splits - 1) / splits;
  const int64_t end = (s + 1) * per < count ? (s + 1) * per : count;
  double sdy = 0.0, acc[kSumsGroup];
  float mu[kSumsGroup], is[kSumsGroup];  // the normed candidates' statistics of channel ci
  bool use[kSumsGroup];
#pragma unroll
  for (int jj = 0; jj < kSumsGroup; ++jj) {
    const int j = j0 + jj;
    acc[jj] = 0.0;
    use[jj] = j < k && ((wanted >> j) & 1u);
    const bool norm = use[jj] && ((normed >> j) & 1u);
    mu[jj] = norm ? mean[j * c + ci] : 0.0f;
    is[jj] = norm ? invstd[j * c + ci] : 1.0f;
  }
  ChannelWalk walk(s * per + threadIdx.x, c, hw, ci);
  for (int64_t q = s * per + threadIdx.x; q < end; q += kSumsInFlight * kReduceBlock) {
    int64_t e[kSumsInFlight];
    bool in[kSumsInFlight];
#pragma unroll
    for (int u = 0; u < kSumsInFlight; ++u) {
      in[u] = q + u * kReduceBlock < end;
      e[u] = in[u] ? walk.index() : 0;
      walk.advance(kReduceBlock);
    }
    T gy[kSumsInFlight], z[kSumsInFlight][kSumsGroup];
#pragma unroll
    for (int u = 0; u < kSumsInFlight; ++u) {
      gy[u] = in[u] ? dy[e[u]] : T(0.0f);
#pragma unroll
      for (int jj = 0; jj < kSumsGroup; ++jj)
        z[u][jj] = in[u] && use[jj] ? xs.x[j0 + jj][e[u]] : T(0.0f);
    }
#pragma unroll
    for (int u = 0; u < kSumsInFlight; ++u) {
      if (!in[u]) break;
      const double g = double(gy[u]);
      sdy += g;
#pragma unroll
      for (int jj = 0; jj < kSumsGroup; ++jj) {
        if (!use[jj]) continue;
        const float t =
            (normed >> (j0 + jj)) & 1u ? normalised(z[u][jj], mu[jj], is[jj]) : float(z[u][jj]);
        acc[jj] += g * double(t);
      }
    }
  }
  const int64_t cols = 1 + k;
  double* out = partials + (ci * splits + s) * cols;
  sdy = block_sum(sdy);
  if (threadIdx.x == 0) out[0] = sdy;
#pragma unroll
  for (int jj = 0; jj < kSumsGroup; ++jj) {
    const int j = j0 + jj;
    if (j >= k) break;  // the same in every thread: every thread calls block_sum
    const double total = block_sum(acc[jj]);
    if (threadIdx.x == 0) out[1 + j] = total;
  }
}

// One thread per (candidate j, channel ci): the partial sums in block order, the scores'
// per-channel terms totals[j C + ci] = sum dy t_j, and the gradient's coefficients
// dz = a dy + b xhat + d with a = w is, b = -w is S_j / m, d = -w is S_dy / m (normed; else
// a = w, b = d = 0), in double, stored as floats.
template <class T>
__global__ void mix_norm_coef_kernel(const double* partials, const float* weights, uint64_t normed,
                                     uint64_t wanted, int64_t k, int64_t c, int64_t splits,
                                     double count, const float* invstd, double* totals,
                                     float* coef) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= k * c) return;
  const int64_t j = r / c, ci = r % c, cols = 1 + k;
  double sdy = 0.0, sj = 0.0;
  const bool have = (wanted >> j) & 1u;
  for (int64_t s = 0; s < splits; ++s) {
    sdy += partials[(ci * splits + s) * cols];
    if (have) sj += partials[(ci * splits + s) * cols + 1 + j];
  }
  totals[r] = sj;
  const double w = double(weights[j]);
  if ((normed >> j) & 1u) {
    const double is = double(invstd[r]);
    coef[r * 3] = float(w * is);
    coef[r * 3 + 1] = float(-w * is * sj / count);
    coef[r * 3 + 2] = float(-w * is * sdy / count);
  } else {
    coef[r * 3] = float(w);
    coef[r * 3 + 1] = 0.0f;
    coef[r * 3 + 2] = 0.0f;
  }
}

// Every gradient from one read of dy: dxs[j] = w_j dy (un-normed, mix_bwd's product) or
// a dy + b xhat + d (normed); block 0 also adds up the scores g[j] = sum_ci totals[j C + ci]
// in channel order (0 for a null candidate).
template <class T>
__global__ void mix_norm_apply_kernel(const float* weights, const T* dy,
                                      const __grid_constant__ NormInputs<T> xs,
                                      const __grid_constant__ NormOutputs<T> dxs, uint64_t normed,
                                      int k, const float* mean, const float* invstd,
                                      const float* coef, const double* totals, int64_t total,
                                      int64_t c, int64_t hw, float* g) {
  __shared__ float w[kMaxNormMix];
  if (int(threadIdx.x) < k) w[threadIdx.x] = weights[threadIdx.x];
  __syncthreads();
  if (g && blockIdx.x == 0 && int(threadIdx.x) < k) {
    double s = 0.0;
    for (int64_t ci = 0; ci < c; ++ci) s += totals[threadIdx.x * c + ci];
    g[threadIdx.x] = xs.x[threadIdx.x] ? float(s) : 0.0f;
  }
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ci = channel_of(e, hw, c);
    const float gy = float(dy[e]);
    // The normed candidates' inputs of kSumsGroup candidates loaded before any of their
    // gradients is stored (the compiler cannot know the outputs do not alias them; the op's
    // front door refuses outputs that alias inputs), so their loads are in flight together.
    for (int j0 = 0; j0 < k; j0 += kSumsGroup) {
      T z[kSumsGroup];
#pragma unroll
      for (int jj = 0; jj < kSumsGroup; ++jj) {
        const int j = j0 + jj;
        z[jj] = j < k && dxs.x[j] && ((normed >> j) & 1u) ? xs.x[j][e] : T(0.0f);
      }
#pragma unroll
      for (int jj = 0; jj < kSumsGroup; ++jj) {
        const int j = j0 + jj;
        if (j >= k) break;
        if (!dxs.x[j]) continue;
        if (!((normed >> j) & 1u)) {
          dxs.x[j][e] = T(w[j] * gy);
          continue;
        }
        const int64_t r = j * c + ci;
        const float xhat = normalised(z[jj], mean[r], invstd[r]);
        dxs.x[j][e] = T(coef[r * 3] * gy + (coef[r * 3 + 1] * xhat + coef[r * 3 + 2]));
      }
    }
  }
}

}  // namespace
}  // namespace cudarts::cuda::norm_mix
