// CPU reference: memory, elementwise, linear, concat/split, loss and optimizer ops.
#include "cpu/cpu_backend.h"

#include <omp.h>

// Elementwise loops: `if (parallel : ...)` keeps small tensors on one thread but vectorised; a
// plain `if (...)` on `parallel for simd` also turns the simd off below the threshold, which
// left e.g. relu_bwd a scalar loop with a mispredicting branch (13% of a CPU search).

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cudarts/philox.h"

namespace cudarts {

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<Allocator> allocator) {
  return std::make_unique<cpu::CpuBackend>(std::move(allocator));
}

namespace cpu {

CpuBackend::CpuBackend(std::shared_ptr<Allocator> allocator) : allocator_(std::move(allocator)) {
  // Parallelism comes from OpenMP over the batch; each GEMM call runs on one thread.
  gemm_single_threaded();
}

void CpuBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                            size_t bytes) {
  CUDARTS_CHECK(dst_device.is_cpu() && src_device.is_cpu(), "cpu backend: copy from ",
                src_device.str(), " to ", dst_device.str(), " needs the CUDA backend");
  if (bytes) std::memmove(dst, src, bytes);
}

void CpuBackend::fill(Tensor& t, float value) {
  float* p = t.data();
  const int64_t n = t.numel();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = value;
}

void CpuBackend::fill_i32(Tensor& t, int32_t value) {
  std::fill(t.data_i32(), t.data_i32() + t.numel(), value);
}

void CpuBackend::set_words(Tensor& t, const Words8& w) {
  std::memcpy(t.raw(), w.words, size_t(w.n) * sizeof(uint32_t));
}

void CpuBackend::relu_fwd(const Tensor& x, Tensor& y) {
  const float* in = x.data();
  float* out = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
}

void CpuBackend::relu_bwd(const Tensor& dy, const Tensor& y, Tensor& dx) {
  const float* g = dy.data();
  const float* out = y.data();
  float* d = dx.data();
  const int64_t n = dy.numel();
  // g[i] loaded unconditionally, so the select vectorises (a load on one side only does not).
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    d[i] = out[i] > 0.0f ? gi : 0.0f;
  }
}

void CpuBackend::add(const Tensor& a, const Tensor& b, Tensor& y) {
  const float* pa = a.data();
  const float* pb = b.data();
  float* py = y.data();
  const int64_t n = a.numel();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) py[i] = pa[i] + pb[i];
}

void CpuBackend::scale(const Tensor& x, float alpha, Tensor& y) {
  const float* px = x.data();
  float* py = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) py[i] = alpha * px[i];
}

void CpuBackend::axpy(float alpha, const Tensor& x, Tensor& y) {
  const float* px = x.data();
  float* py = y.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (parallel : n > 65536)
  for (int64_t i = 0; i < n; ++i) py[i] += alpha * px[i];
}

// Chunk by chunk (cache-sized), each chunk summed left to right: add, then axpy per term.
void CpuBackend::add_n(const std::vector<const Tensor*>& xs, Tensor& y) {
  float* out = y.data();
  const int64_t n = y.numel(), chunk = 4096;
#pragma omp parallel for if (n > 65536)
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t e = std::min(n, b + chunk);
    const float* x0 = xs[0]->data();
    if (xs.size() == 1) {
      for (int64_t i = b; i < e; ++i) out[i] = x0[i];
      continue;
    }
    const float* x1 = xs[1]->data();
    for (int64_t i = b; i < e; ++i) out[i] = x0[i] + x1[i];
    for (size_t k = 2; k < xs.size(); ++k) {
      const float* x = xs[k]->data();
      for (int64_t i = b; i < e; ++i) out[i] += x[i];
    }
  }
}

void CpuBackend::global_avgpool_fwd(const Tensor& x, Tensor& y) {
  const int64_t nc = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  const float* px = x.data();
  float* py = y.data();
#pragma omp parallel for if (nc * hw > 65536)
  for (int64_t i = 0; i < nc; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < hw; ++j) s += px[i * hw + j];
    py[i] = static_cast<float>(s / static_cast<double>(hw));
  }
}

void CpuBackend::global_avgpool_bwd(const Tensor& dy, Tensor& dx) {
  const int64_t nc = dx.dim(0) * dx.dim(1), hw = dx.dim(2) * dx.dim(3);
  const float* pg = dy.data();
  float* pd = dx.data();
  const float inv = 1.0f / static_cast<float>(hw);
#pragma omp parallel for if (nc * hw > 65536)
  for (int64_t i = 0; i < nc; ++i)
    for (int64_t j = 0; j < hw; ++j) pd[i * hw + j] = pg[i] * inv;
}

void CpuBackend::linear_fwd(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const int n = int(x.dim(0)), in = int(x.dim(1)), out = int(w.dim(0));
  float* py = y.data();
  if (bias) {
    const float* pb = bias->data();
    for (int i = 0; i < n; ++i) std::memcpy(py + int64_t(i) * out, pb, sizeof(float) * out);
  }
  sgemm(false, true, n, out, in, 1.0f, x.data(), in, w.data(), in, bias ? 1.0f : 0.0f, py, out);
}

void CpuBackend::linear_bwd_data(const Tensor& dy, const Tensor& w, Tensor& dx) {
  const int n = int(dx.dim(0)), in = int(dx.dim(1)), out = int(w.dim(0));
  sgemm(false, false, n, in, out, 1.0f, dy.data(), out, w.data(), in, 0.0f, dx.data(), in);
}

void CpuBackend::linear_bwd_weight(const Tensor& x, const Tensor& dy, Tensor& dw, Tensor* dbias) {
  const int n = int(x.dim(0)), in = int(x.dim(1)), out = int(dw.dim(0));
  sgemm(true, false, out, in, n, 1.0f, dy.data(), out, x.data(), in, 1.0f, dw.data(), in);
  if (dbias) {
    const float* g = dy.data();
    float* db = dbias->data();
    for (int o = 0; o < out; ++o) {
      double s = 0.0;
      for (int i = 0; i < n; ++i) s += g[int64_t(i) * out + o];
      db[o] += static_cast<float>(s);
    }
  }
}

namespace {
// Copies channel blocks between a whole (N, C, H, W) tensor and its parts.
void move_channels(const std::vector<float*>& parts, const std::vector<int64_t>& part_channels,
                   float* whole, int64_t n, int64_t c, int64_t hw, bool to_whole) {
#pragma omp parallel for if (n * c * hw > 65536)
  for (int64_t i = 0; i < n; ++i) {
    int64_t c0 = 0;
    for (size_t k = 0; k < parts.size(); ++k) {
      const int64_t len = part_channels[k] * hw;
      float* w = whole + (i * c + c0) * hw;
      float* p = parts[k] + i * len;
      if (to_whole)
        std::memcpy(w, p, sizeof(float) * len);
      else
        std::memcpy(p, w, sizeof(float) * len);
      c0 += part_channels[k];
    }
  }
}
}  // namespace

void CpuBackend::concat_channels(const std::vector<const Tensor*>& xs, Tensor& y) {
  std::vector<float*> parts;
  std::vector<int64_t> channels;
  for (const Tensor* t : xs) {
    parts.push_back(t->data());
    channels.push_back(t->dim(1));
  }
  move_channels(parts, channels, y.data(), y.dim(0), y.dim(1), y.dim(2) * y.dim(3), true);
}

void CpuBackend::channel_shuffle(const Tensor& x, int groups, Tensor& y) {
  const int64_t n = x.dim(0), c = x.dim(1), hw = x.dim(2) * x.dim(3), per = c / groups;
  for (int64_t s = 0; s < n; ++s)
    for (int64_t i = 0; i < per; ++i)
      for (int64_t j = 0; j < groups; ++j)
        std::memcpy(y.data() + (s * c + i * groups + j) * hw, x.data() + (s * c + j * per + i) * hw,
                    sizeof(float) * size_t(hw));
}

void CpuBackend::split_channels(const Tensor& y, const std::vector<Tensor*>& xs) {
  std::vector<float*> parts;
  std::vector<int64_t> channels;
  for (Tensor* t : xs) {
    parts.push_back(t->data());
    channels.push_back(t->dim(1));
  }
  move_channels(parts, channels, y.data(), y.dim(0), y.dim(1), y.dim(2) * y.dim(3), false);
}

void CpuBackend::softmax_xent(const Tensor& logits, const Tensor& labels, Tensor& loss,
                              Tensor& dlogits, Tensor& correct) {
  const int64_t n = logits.dim(0), k = logits.dim(1);
  const float* z = logits.data();
  const int32_t* lab = labels.data_i32();
  float* d = dlogits.data();
  for (int64_t i = 0; i < n; ++i)
    CUDARTS_CHECK(lab[i] >= 0 && lab[i] < k, "softmax_xent: label ", lab[i], " at row ", i,
                  " is outside [0, ", k, ")");
  double total = 0.0;
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = z + i * k;
    int64_t arg = 0;
    for (int64_t j = 1; j < k; ++j)
      if (row[j] > row[arg]) arg = j;
    const double m = row[arg];
    double s = 0.0;
    for (int64_t j = 0; j < k; ++j) s += std::exp(double(row[j]) - m);
    total += m + std::log(s) - row[lab[i]];
    hits += arg == lab[i];
    for (int64_t j = 0; j < k; ++j) {
      const double prob = std::exp(double(row[j]) - m) / s;
      d[i * k + j] = static_cast<float>((prob - (j == lab[i] ? 1.0 : 0.0)) / double(n));
    }
  }
  loss.data()[0] = static_cast<float>(total / double(n));
  correct.data()[0] = static_cast<float>(hits);
}

void CpuBackend::random_words(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  int32_t* p = out.data_i32();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i)
    p[i] = static_cast<int32_t>(philox_word(seed, offset, 0, uint64_t(i)));
}

void CpuBackend::random_uniform(Tensor& out, uint64_t seed, uint64_t offset, const uint64_t* shift,
                                float low, float high) {
  offset += shift ? *shift : 0;  // graph replays shift the captured offset
  float* p = out.data();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i)
    p[i] = low + (high - low) * philox_uniform(philox_word(seed, offset, 0, uint64_t(i)));
}

}  // namespace cpu
}  // namespace cudarts
