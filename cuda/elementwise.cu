// Elementwise kernels (fill, ReLU, add/scale/axpy) and Philox random fills.
// Each kernel is a grid-stride loop with 64-bit indices (float4 accesses where aligned);
// CPU twins in src/cpu.
#include <cstdint>

#include "cuda_backend.h"
#include "cudarts/philox.h"
#include "launch.cuh"

namespace cudarts::cuda {

namespace {

__global__ void fill_kernel(float* out, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value;
}

__global__ void fill_i32_kernel(int32_t* out, int32_t value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = value;
}

__global__ void set_words_kernel(uint32_t* out, Words8 w) {
  if (threadIdx.x < unsigned(w.n)) out[threadIdx.x] = w.words[threadIdx.x];
}

// The elementwise maps (ReLU forward/backward, add, scale, axpy): out[i] = f(a[i] (, b[i])).
// With every pointer 16-byte aligned the kernel moves float4s (four elements per load and
// store) and finishes the last n % 4 elements one by one; otherwise it is a plain grid-stride
// loop. f is applied to each element alone either way, so both paths give the same bits.
struct ReluFn {
  __device__ float operator()(float x) const { return x > 0.0f ? x : 0.0f; }
};
struct ReluGradFn {  // (dy, y): dy where y > 0
  __device__ float operator()(float dy, float y) const { return y > 0.0f ? dy : 0.0f; }
};
struct AddFn {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct ScaleFn {
  float alpha;
  __device__ float operator()(float x) const { return alpha * x; }
};
struct AxpyFn {  // (x, y): y + alpha x
  float alpha;
  __device__ float operator()(float x, float y) const { return y + alpha * x; }
};

template <bool Vec, class F>
__global__ void map1_kernel(const float* a, float* out, int64_t n, F f) {
  const int64_t start = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (Vec) {
    const int64_t n4 = n / 4;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (int64_t i = start; i < n4; i += stride) {
      const float4 v = a4[i];
      o4[i] = make_float4(f(v.x), f(v.y), f(v.z), f(v.w));
    }
    done = 4 * n4;
  }
  for (int64_t i = done + start; i < n; i += stride) out[i] = f(a[i]);
}

template <bool Vec, class F>
__global__ void map2_kernel(const float* a, const float* b, float* out, int64_t n, F f) {
  const int64_t start = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t done = 0;
  if (Vec) {
    const int64_t n4 = n / 4;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (int64_t i = start; i < n4; i += stride) {
      const float4 u = a4[i], v = b4[i];
      o4[i] = make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
    }
    done = 4 * n4;
  }
  for (int64_t i = done + start; i < n; i += stride) out[i] = f(a[i], b[i]);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// Blocks for the vector path cover n / 4 float4s (the tail fits in any grid).
int map_grid(int64_t n, bool vec) {
  return grid_for(vec ? (n + 3) / 4 : n);
}

template <class F>
void launch_map1(const float* a, float* out, int64_t n, F f, cudaStream_t stream) {
  if (aligned16(a) && aligned16(out))
    map1_kernel<true><<<map_grid(n, true), kBlock, 0, stream>>>(a, out, n, f);
  else
    map1_kernel<false><<<map_grid(n, false), kBlock, 0, stream>>>(a, out, n, f);
}

template <class F>
void launch_map2(const float* a, const float* b, float* out, int64_t n, F f, cudaStream_t stream) {
  if (aligned16(a) && aligned16(b) && aligned16(out))
    map2_kernel<true><<<map_grid(n, true), kBlock, 0, stream>>>(a, b, out, n, f);
  else
    map2_kernel<false><<<map_grid(n, false), kBlock, 0, stream>>>(a, b, out, n, f);
}

__global__ void random_words_kernel(int32_t* out, uint64_t seed, uint64_t offset,
                                    const uint64_t* shift, int64_t n) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(philox_word(seed, offset, 0, uint64_t(i)));
}

// low + (high - low) u with two roundings, as the CPU twin: nvcc would otherwise contract the
// multiply-add into one FMA, and the parity test compares these draws bit for bit.
__global__ void random_uniform_kernel(float* out, uint64_t seed, uint64_t offset,
                                      const uint64_t* shift, float low, float high, int64_t n) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __fadd_rn(
        low, __fmul_rn(high - low, philox_uniform(philox_word(seed, offset, 0, uint64_t(i)))));
}

}  // namespace

void CudaBackend::fill(Tensor& t, float value) {
  const int64_t n = t.numel();
  if (n == 0) return;
  fill_kernel<<<grid_for(n), kBlock, 0, stream_>>>(t.data(), value, n);
  CUDARTS_LAUNCH_CHECK("fill_kernel", t.describe());
}

void CudaBackend::fill_i32(Tensor& t, int32_t value) {
  const int64_t n = t.numel();
  if (n == 0) return;
  fill_i32_kernel<<<grid_for(n), kBlock, 0, stream_>>>(t.data_i32(), value, n);
  CUDARTS_LAUNCH_CHECK("fill_i32_kernel", t.describe());
}

void CudaBackend::set_words(Tensor& t, const Words8& w) {
  set_words_kernel<<<1, 8, 0, stream_>>>(static_cast<uint32_t*>(t.raw()), w);
  CUDARTS_LAUNCH_CHECK("set_words_kernel", t.describe(), " (", w.n, " words)");
}

void CudaBackend::relu_fwd(const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  launch_map1(x.data(), y.data(), n, ReluFn{}, stream_);
  CUDARTS_LAUNCH_CHECK("map1_kernel (relu_fwd)", x.describe());
}

void CudaBackend::relu_bwd(const Tensor& dy, const Tensor& y, Tensor& dx) {
  const int64_t n = dy.numel();
  if (n == 0) return;
  launch_map2(dy.data(), y.data(), dx.data(), n, ReluGradFn{}, stream_);
  CUDARTS_LAUNCH_CHECK("map2_kernel (relu_bwd)", dy.describe());
}

void CudaBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t n = a.numel();
  if (n == 0) return;
  launch_map2(a.data(), b.data(), y.data(), n, AddFn{}, stream_);
  CUDARTS_LAUNCH_CHECK("map2_kernel (add)", a.describe());
}

void CudaBackend::scale(const Tensor& x, float alpha, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  launch_map1(x.data(), y.data(), n, ScaleFn{alpha}, stream_);
  CUDARTS_LAUNCH_CHECK("map1_kernel (scale)", x.describe());
}

void CudaBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  launch_map2(x.data(), y.data(), y.data(), n, AxpyFn{alpha}, stream_);
  CUDARTS_LAUNCH_CHECK("map2_kernel (axpy)", x.describe());
}

void CudaBackend::random_words(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift) {
  const int64_t n = out.numel();
  if (n == 0) return;
  random_words_kernel<<<grid_for(n), kBlock, 0, stream_>>>(out.data_i32(), seed, offset, shift, n);
  CUDARTS_LAUNCH_CHECK("random_words_kernel", out.describe());
}

void CudaBackend::random_uniform(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift,
                                 float low, float high) {
  const int64_t n = out.numel();
  if (n == 0) return;
  random_uniform_kernel<<<grid_for(n), kBlock, 0, stream_>>>(out.data(), seed, offset, shift, low,
                                                             high, n);
  CUDARTS_LAUNCH_CHECK("random_uniform_kernel", out.describe());
}

}  // namespace cudarts::cuda
