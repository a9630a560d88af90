// Elementwise kernels (fill, ReLU, add/scale/axpy) and Philox random fills.
// Each kernel is a grid-stride loop with 64-bit indices; CPU twins in src/cpu.
#include "cuda_backend.h"
#include "launch.cuh"
#include "cudarts/philox.h"

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

// y = max(x, 0)
__global__ void relu_fwd_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// dx = dy where y > 0
__global__ void relu_bwd_kernel(const float* dy, const float* y, float* dx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void add_kernel(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = a[i] + b[i];
}

__global__ void scale_kernel(const float* x, float alpha, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = alpha * x[i];
}

// y += alpha x
__global__ void axpy_kernel(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}

__global__ void random_words_kernel(int32_t* out, uint64_t seed, uint64_t offset, const uint64_t* shift, int64_t n) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(philox_word(seed, offset, 0, uint64_t(i)));
}

// low + (high - low) u with two roundings, as the CPU twin: nvcc would otherwise contract the
// multiply-add into one FMA, and the parity test compares these draws bit for bit.
__global__ void random_uniform_kernel(float* out, uint64_t seed, uint64_t offset, const uint64_t* shift, float low,
                                      float high, int64_t n) {
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
  relu_fwd_kernel<<<grid_for(n), kBlock, 0, stream_>>>(x.data(), y.data(), n);
  CUDARTS_LAUNCH_CHECK("relu_fwd_kernel", x.describe());
}

void CudaBackend::relu_bwd(const Tensor& dy, const Tensor& y, Tensor& dx) {
  const int64_t n = dy.numel();
  if (n == 0) return;
  relu_bwd_kernel<<<grid_for(n), kBlock, 0, stream_>>>(dy.data(), y.data(), dx.data(), n);
  CUDARTS_LAUNCH_CHECK("relu_bwd_kernel", dy.describe());
}

void CudaBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t n = a.numel();
  if (n == 0) return;
  add_kernel<<<grid_for(n), kBlock, 0, stream_>>>(a.data(), b.data(), y.data(), n);
  CUDARTS_LAUNCH_CHECK("add_kernel", a.describe());
}

void CudaBackend::scale(const Tensor& x, float alpha, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kBlock, 0, stream_>>>(x.data(), alpha, y.data(), n);
  CUDARTS_LAUNCH_CHECK("scale_kernel", x.describe());
}

void CudaBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  const int64_t n = x.numel();
  if (n == 0) return;
  axpy_kernel<<<grid_for(n), kBlock, 0, stream_>>>(alpha, x.data(), y.data(), n);
  CUDARTS_LAUNCH_CHECK("axpy_kernel", x.describe());
}

void CudaBackend::random_words(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift) {
  const int64_t n = out.numel();
  if (n == 0) return;
  random_words_kernel<<<grid_for(n), kBlock, 0, stream_>>>(out.data_i32(), seed, offset, shift, n);
  CUDARTS_LAUNCH_CHECK("random_words_kernel", out.describe());
}

void CudaBackend::random_uniform(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift, float low,
                                 float high) {
  const int64_t n = out.numel();
  if (n == 0) return;
  random_uniform_kernel<<<grid_for(n), kBlock, 0, stream_>>>(out.data(), seed, offset, shift, low, high,
                                                             n);
  CUDARTS_LAUNCH_CHECK("random_uniform_kernel", out.describe());
}

}  // namespace cudarts::cuda
