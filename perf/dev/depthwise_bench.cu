// depthwise_bench: kernel development harness for the depthwise convolutions (after llm.c's
// dev/cuda): for each depthwise shape of the DARTS search and retraining networks, validates
// every kernel variant against the cudarts CPU reference (ops::conv2d_* on a CPU context), and
// the library's own path through the public API on a CUDA context, then times each variant and
// cuDNN (its fastest deterministic algorithm and its fastest overall, strict FP32) with CUDA
// events: median of --repeats launches after warm-up. Prints one table per direction and, with
// --json, writes the same as JSON. Exit code 1 when a validation fails, 77 without a GPU.
//
// Variants (the library's is marked * in the tables, see cuda/depthwise.cu):
//   forward        1 direct: one thread per output, x and w read from global memory
//                  2 tiled: planes' x tiles staged in shared memory, weights in registers,
//                    1 output in flight per thread
//                  3 tiled, kOutputsInFlight (4) outputs in flight per thread *
//   backward data  1 direct gather: one thread per dx element, dy read from global memory
//                  2 tiled gather (dy tile in shared memory), 1 output in flight
//                  3 tiled gather, 4 outputs in flight *
//   backward filter 1 one block per (channel, tap), each re-reading the channel's N*P*Q slice
//                    (the layout of PyTorch's depthwise filter-gradient kernel); fixed-order
//                    block sum
//                  2 two-pass: x tiles in shared memory, all taps in registers, per-chunk
//                    partials, fixed-order second pass, the library's chunk count *
//                  3 two-pass with 4x fewer chunks (more work per block)
//                  4 as 2, each thread's dy values of a tile loaded before the x tile is
//                    staged (filter_block's kPreload: the same bits, more registers)
//                  5 as 2 with one x tile buffer (2 and 3 take two where they fit: the next
//                    unit's tile copied with cp.async while the current one is read)
// Timed without bias (DARTS convolutions have none); validated with bias / dbias, so the fused
// epilogues are checked too. Then the group backward data (an edge's four leading convolutions)
// with one tile buffer and with two (group_table).
#include <cudnn.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cudarts/cudarts.h"
#include "depthwise_kernels.cuh"

using namespace cudarts;
namespace dw = cudarts::cuda::depthwise;
using nlohmann::json;

namespace {

constexpr int kDirectThreads = 256;
constexpr int kTapBlockThreads = 256;
constexpr double kTolData = 1e-5;    // forward and backward data, normalised error
constexpr double kTolFilter = 1e-4;  // backward filter (long sums)
constexpr size_t kCudnnWorkspaceBytes = size_t(512) << 20;  // as the library's cap
constexpr int kWarmup = 3;
constexpr double kSpinMs = 2.0;  // GPU busy time queued ahead of the timed launches

// ---------------------------------------------------------------- variant 1 kernels

// y = conv(x, w) (+ b): one thread per output, taps read from global memory.
template <int R, int S>
__global__ void __launch_bounds__(kDirectThreads)
    fwd_direct_kernel(const float* __restrict__ x,  // (N, C, H, W)
                      const float* __restrict__ w,  // (C, 1, R, S)
                      const float* __restrict__ b,  // (C) or nullptr
                      float* __restrict__ y,        // (N, C, P, Q)
                      dw::Problem pr) {
  const int64_t total = pr.n * pr.c * pr.out_plane();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int q = int(i % pr.q);
    const int p = int(i / pr.q % pr.p);
    const int64_t plane = i / pr.out_plane();
    const int64_t c = plane % pr.c;
    const float* xp = x + plane * pr.in_plane();
    float acc = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int ih = p * pr.stride_h - pr.pad_h + r * pr.dil_h;
      if (ih < 0 || ih >= pr.h) continue;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const int iw = q * pr.stride_w - pr.pad_w + s * pr.dil_w;
        if (iw >= 0 && iw < pr.w) acc = fmaf(w[c * R * S + r * S + s], xp[ih * pr.w + iw], acc);
      }
    }
    y[i] = acc + (b ? b[c] : 0.0f);
  }
}

// dx = gather of dy over the taps that reach each dx element: one thread per dx element.
template <int R, int S>
__global__ void __launch_bounds__(kDirectThreads)
    bwd_data_direct_kernel(const float* __restrict__ dy,  // (N, C, P, Q)
                           const float* __restrict__ w,   // (C, 1, R, S)
                           float* __restrict__ dx,        // (N, C, H, W)
                           dw::Problem pr) {
  const int64_t total = pr.n * pr.c * pr.in_plane();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int wi = int(i % pr.w);
    const int hi = int(i / pr.w % pr.h);
    const int64_t plane = i / pr.in_plane();
    const int64_t c = plane % pr.c;
    const float* gp = dy + plane * pr.out_plane();
    float acc = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int a = hi + pr.pad_h - r * pr.dil_h;
      if (a < 0 || a % pr.stride_h != 0 || a / pr.stride_h >= pr.p) continue;
      const int p = a / pr.stride_h;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const int e = wi + pr.pad_w - s * pr.dil_w;
        if (e < 0 || e % pr.stride_w != 0 || e / pr.stride_w >= pr.q) continue;
        acc = fmaf(w[c * R * S + r * S + s], gp[p * pr.q + e / pr.stride_w], acc);
      }
    }
    dx[i] = acc;
  }
}

// dw[c, tap] += sum over (n, p, q) of dy * x at the tap; block (c, tap), tap == R*S: the bias
// (dbias[c] += sum of dy). Fixed-order shared-memory tree.
__global__ void __launch_bounds__(kTapBlockThreads)
    bwd_filter_per_tap_kernel(const float* __restrict__ x,   // (N, C, H, W)
                              const float* __restrict__ dy,  // (N, C, P, Q)
                              float* __restrict__ dwt,       // (C, 1, R, S), +=
                              float* __restrict__ dbias,     // (C) or nullptr, +=
                              dw::Problem pr) {
  const int taps = pr.r * pr.s;
  const int64_t c = blockIdx.x / (taps + 1);
  const int tap = int(blockIdx.x % (taps + 1));
  if (tap == taps && !dbias) return;  // the whole block
  const int r = tap / pr.s, s = tap % pr.s;
  const int64_t per_sample = pr.out_plane(), total = pr.n * per_sample;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < total; i += kTapBlockThreads) {
    const int64_t n = i / per_sample;
    const int pq = int(i - n * per_sample), p = pq / pr.q, q = pq % pr.q;
    const int64_t plane = n * pr.c + c;
    const float g = dy[plane * per_sample + pq];
    if (tap == taps) {
      acc += g;
      continue;
    }
    const int ih = p * pr.stride_h - pr.pad_h + r * pr.dil_h;
    const int iw = q * pr.stride_w - pr.pad_w + s * pr.dil_w;
    if (ih >= 0 && ih < pr.h && iw >= 0 && iw < pr.w)
      acc = fmaf(g, x[plane * pr.in_plane() + ih * pr.w + iw], acc);
  }
  __shared__ float sums[kTapBlockThreads];
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kTapBlockThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) sums[threadIdx.x] += sums[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if (tap == taps)
      dbias[c] += sums[0];
    else
      dwt[c * taps + tap] += sums[0];
  }
}

// Keeps the GPU busy for `ns` nanoseconds, so that the timed launches queued behind it run
// back to back instead of waiting for the host.
__global__ void spin_kernel(long long ns) {
  long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

unsigned direct_blocks(int64_t total) {
  return unsigned(std::min<int64_t>(dw::ceil_div(total, kDirectThreads), int64_t(1) << 20));
}

// ---------------------------------------------------------------- shapes

struct BenchShape {
  std::string net;  // search / reduce / retrain / extra
  std::string op;   // sep3, sep5, dil3, dil5
  int64_t n, c, h, w;
  int k, stride, pad, dil;
  std::string label() const {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "%s N%lld C%lld %lldx%lld %s%s", net.c_str(), (long long)n,
                  (long long)c, (long long)h, (long long)w, op.c_str(), stride == 2 ? " s2" : "");
    return buf;
  }
};

std::vector<BenchShape> darts_shapes() {
  struct Op {
    const char* name;
    int k, pad, dil;
  };
  const Op ops[] = {{"sep3", 3, 1, 1}, {"sep5", 5, 2, 1}, {"dil3", 3, 2, 2}, {"dil5", 5, 4, 2}};
  struct Map {
    const char* net;
    int64_t n, c, hw;
    int stride;
  };
  const Map maps[] = {
      {"search", 64, 16, 32, 1},  {"search", 64, 32, 16, 1},  {"search", 64, 64, 8, 1},
      {"reduce", 64, 32, 32, 2},  {"reduce", 64, 64, 16, 2},  {"retrain", 96, 36, 32, 1},
      {"retrain", 96, 72, 16, 1}, {"retrain", 96, 144, 8, 1}, {"extra", 64, 256, 4, 1}};
  std::vector<BenchShape> out;
  for (const Map& m : maps)
    for (const Op& o : ops)
      out.push_back({m.net, o.name, m.n, m.c, m.hw, m.hw, o.k, m.stride, o.pad, o.dil});
  return out;
}

// ---------------------------------------------------------------- helpers

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// ||a - b|| / ||b||; infinity when a holds a NaN or an infinity.
double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Times `launch` with CUDA events on `stream`: kWarmup untimed calls, then a spin kernel, then
// `repeats` calls each between two events; returns the median in microseconds. `host_bound`
// is set when the spin had finished before the last call was queued (the timings may then
// include waits for the host).
class Timer {
 public:
  Timer(cudaStream_t stream, int repeats) : stream_(stream), events_(size_t(2 * repeats + 1)) {
    for (auto& e : events_) CUDARTS_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Timer() {
    for (auto& e : events_) cudaEventDestroy(e);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  double median_us(const std::function<void()>& launch, bool* host_bound) {
    for (int i = 0; i < kWarmup; ++i) launch();
    spin_kernel<<<1, 1, 0, stream_>>>((long long)(kSpinMs * 1e6));
    CUDARTS_LAUNCH_CHECK("spin_kernel");
    CUDARTS_CUDA_CHECK(cudaEventRecord(events_.back(), stream_));
    const size_t repeats = (events_.size() - 1) / 2;
    for (size_t i = 0; i < repeats; ++i) {
      CUDARTS_CUDA_CHECK(cudaEventRecord(events_[2 * i], stream_));
      launch();
      CUDARTS_CUDA_CHECK(cudaEventRecord(events_[2 * i + 1], stream_));
    }
    if (cudaEventQuery(events_.back()) == cudaSuccess) *host_bound = true;
    CUDARTS_CUDA_CHECK(cudaEventSynchronize(events_[2 * repeats - 1]));
    std::vector<double> us(repeats);
    for (size_t i = 0; i < repeats; ++i) {
      float ms = 0.0f;
      CUDARTS_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]));
      us[i] = 1000.0 * ms;
    }
    std::sort(us.begin(), us.end());
    return repeats % 2 ? us[repeats / 2] : 0.5 * (us[repeats / 2 - 1] + us[repeats / 2]);
  }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
};

// The cuDNN descriptors of one depthwise convolution (strict FP32: CUDNN_FMA_MATH).
struct CudnnConv {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  CudnnConv(const BenchShape& s, const Shape& ys) {
    CUDARTS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDARTS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDARTS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDARTS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDARTS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.n),
                                                   int(s.c), int(s.h), int(s.w)));
    CUDARTS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                   int(ys[0]), int(ys[1]), int(ys[2]), int(ys[3])));
    CUDARTS_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, int(s.c), 1, s.k, s.k));
    CUDARTS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, s.pad, s.pad, s.stride, s.stride,
                                                        s.dil, s.dil, CUDNN_CROSS_CORRELATION,
                                                        CUDNN_DATA_FLOAT));
    CUDARTS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, int(s.c)));
    CUDARTS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, CUDNN_FMA_MATH));
  }
  ~CudnnConv() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;
};

// cuDNN's two picks for one direction from cudnnFind*AlgorithmEx (which times every algorithm
// itself): the fastest deterministic one and the fastest overall, strict FP32 only; -1: none.
struct CudnnPicks {
  int deterministic = -1, fastest = -1;
};

template <class Perf>
CudnnPicks picks_of(const std::vector<Perf>& perf, int returned) {
  CudnnPicks p;
  for (int i = 0; i < returned; ++i) {
    const Perf& r = perf[size_t(i)];
    if (r.status != CUDNN_STATUS_SUCCESS || r.mathType != CUDNN_FMA_MATH) continue;
    if (p.fastest < 0) p.fastest = int(r.algo);
    if (p.deterministic < 0 && r.determinism == CUDNN_DETERMINISTIC) p.deterministic = int(r.algo);
  }
  return p;
}

enum Dir { kFwd = 0, kBwdData = 1, kBwdFilter = 2 };
const char* const kDirNames[] = {"forward", "backward_data", "backward_filter"};

struct Measured {
  int id = -1;  // variant number, or cuDNN algorithm; -1: not measured
  double us = NAN;
  double error = NAN;
  bool valid = false;
};

struct Row {
  BenchShape shape;
  std::vector<Measured> ours;  // variants 1..3 (backward filter: 1..5)
  int chosen = 0;              // the library's variant
  Measured cudnn_det, cudnn_fast;
  double api_error = NAN;  // the library through ops::conv2d_* on the CUDA context
};

}  // namespace

// The group backward data (an edge's four leading convolutions: 3x3, 5x5, 3x3 dilation 2, 5x5
// dilation 2, with the ReLU mask and three prior gradients, as the DARTS cells run it) with one
// tile buffer and with two (the next member's tile copied while the current one is read; the
// library's where two fit), each validated against the CPU group op, then timed. Adds a row per
// shape to `out` and counts validation failures.
int group_table(Context& cpu, Context& gpu, Timer& timer, const std::string& filter,
                bool* host_bound, json& out) {
  struct GroupShape {
    const char* label;
    int64_t n, c, h, w;
    int stride;
  };
  const GroupShape shapes[] = {{"search N64 C16 32x32", 64, 16, 32, 32, 1},
                               {"search N64 C32 16x16", 64, 32, 16, 16, 1},
                               {"search N64 C64 8x8", 64, 64, 8, 8, 1},
                               {"reduce N64 C16 32x32 s2", 64, 16, 32, 32, 2},
                               {"reduce N64 C32 16x16 s2", 64, 32, 16, 16, 2}};
  const int ks[] = {3, 5, 3, 5}, pads[] = {1, 2, 2, 4}, dils[] = {1, 1, 2, 2};
  constexpr int kPriors = 3;
  const cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
  int failures = 0;
  json rows = json::array();
  std::printf("\ngroup backward data (microseconds, median of the repeats; * = the library's)\n");
  std::printf("%-28s %12s %12s %10s\n", "shape", "one buffer", "two buffers", "max-err");
  for (const GroupShape& gs : shapes) {
    if (!filter.empty() && std::string(gs.label).find(filter) == std::string::npos) continue;
    const Shape xs{gs.n, gs.c, gs.h, gs.w};
    std::vector<Shape> wss, yss;
    std::vector<Conv2dParams> ps;
    for (int j = 0; j < 4; ++j) {
      Conv2dParams p = Conv2dParams::make(gs.stride, pads[j], dils[j], int(gs.c));
      p.relu_input = true;
      ps.push_back(p);
      wss.push_back(Shape{gs.c, 1, ks[j], ks[j]});
      yss.push_back(ops::conv2d_output_shape(xs, wss.back(), p));
    }
    const auto g = dw::make_group(dw::Direction::BackwardData, xs, wss, yss, ps);
    const auto t =
        g ? dw::plan_group_tiling(dw::Direction::BackwardData, *g, sizeof(float)) : std::nullopt;
    CUDARTS_CHECK(g && t, gs.label, ": not a group the kernels take");
    // Host data, the CPU reference, the device copies.
    const auto hx = random_values(size_t(xs.numel()), 11);
    std::vector<std::vector<float>> hw, hg, hp;
    for (int j = 0; j < 4; ++j) {
      hw.push_back(random_values(size_t(wss[size_t(j)].numel()), uint32_t(12 + j)));
      hg.push_back(random_values(size_t(yss[size_t(j)].numel()), uint32_t(20 + j)));
    }
    for (int i = 0; i < kPriors; ++i)
      hp.push_back(random_values(size_t(xs.numel()), uint32_t(30 + i)));
    std::vector<Tensor> cw, cg, cp, gw, gg, gp;
    std::vector<const Tensor*> cwp, cgp, cpp, gwp, ggp, gpp;
    for (int j = 0; j < 4; ++j) {
      cw.push_back(Tensor::from_vector(cpu, wss[size_t(j)], hw[size_t(j)]));
      cg.push_back(Tensor::from_vector(cpu, yss[size_t(j)], hg[size_t(j)]));
      gw.push_back(Tensor::from_vector(gpu, wss[size_t(j)], hw[size_t(j)]));
      gg.push_back(Tensor::from_vector(gpu, yss[size_t(j)], hg[size_t(j)]));
    }
    for (int i = 0; i < kPriors; ++i) {
      cp.push_back(Tensor::from_vector(cpu, xs, hp[size_t(i)]));
      gp.push_back(Tensor::from_vector(gpu, xs, hp[size_t(i)]));
    }
    for (int j = 0; j < 4; ++j) {
      cwp.push_back(&cw[size_t(j)]), cgp.push_back(&cg[size_t(j)]);
      gwp.push_back(&gw[size_t(j)]), ggp.push_back(&gg[size_t(j)]);
    }
    for (int i = 0; i < kPriors; ++i) cpp.push_back(&cp[size_t(i)]), gpp.push_back(&gp[size_t(i)]);
    Tensor cx = Tensor::from_vector(cpu, xs, hx), gx = Tensor::from_vector(gpu, xs, hx);
    Tensor cdx = Tensor::empty(cpu, xs), gdx = Tensor::empty(gpu, xs);
    ops::depthwise_group_bwd_data(cpu, cgp, cwp, ps, &cx, cpp, cdx);
    const std::vector<float> ref = cdx.to_vector();
    dw::GroupInputs<float> d{}, w{};
    dw::PriorInputs<float> pri{};
    for (int j = 0; j < 4; ++j) d.x[j] = gg[size_t(j)].data(), w.x[j] = gw[size_t(j)].data();
    for (int i = 0; i < kPriors; ++i) pri.x[i] = gp[size_t(i)].data();
    const bool fits = dw::double_buffer_fits(*t);
    double us[2] = {NAN, NAN}, worst = 0.0;
    for (int two = 0; two < 2; ++two) {
      if (two && !fits) continue;
      const auto call = [&] {
        dw::with_stride_kind(g->window, [&](auto unit) {
          if (two)
            dw::depthwise_group_bwd_data_kernel<float, dw::kOutputsInFlight, decltype(unit)::value,
                                                true>
                <<<dw::tile_grid(g->window, *t), dw::kThreads, 2 * t->tile_bytes, stream>>>(
                    d, w, gx.data(), pri, kPriors, gdx.data(), *g, *t);
          else
            dw::depthwise_group_bwd_data_kernel<float, dw::kOutputsInFlight, decltype(unit)::value,
                                                false>
                <<<dw::tile_grid(g->window, *t), dw::kThreads, t->smem_bytes(), stream>>>(
                    d, w, gx.data(), pri, kPriors, gdx.data(), *g, *t);
        });
        CUDARTS_LAUNCH_CHECK("depthwise_group_bwd_data_kernel");
      };
      ops::fill(gpu, gdx, NAN);
      call();
      gpu.synchronize();
      const double e = normalized_error(gdx.to_vector(), ref);
      worst = std::max(worst, e);
      if (!(e <= kTolData)) {
        ++failures;
        std::fprintf(stderr, "VALIDATION FAILED: group backward data %s, %s: error %.3g\n",
                     gs.label, two ? "two buffers" : "one buffer", e);
      }
      us[two] = timer.median_us(call, host_bound);
    }
    char cells[2][24];
    for (int two = 0; two < 2; ++two)
      std::snprintf(cells[two], sizeof(cells[two]), "%.1f%s", us[two],
                    (two == 1) == fits ? "*" : "");
    std::printf("%-28s %12s %12s %10.2g\n", gs.label, cells[0], cells[1], worst);
    rows.push_back({{"shape", gs.label},
                    {"one_buffer_us", us[0]},
                    {"two_buffers_us", fits ? json(us[1]) : json(nullptr)},
                    {"library", fits ? "two buffers" : "one buffer"},
                    {"max_error", worst}});
  }
  out["group_bwd_data"] = rows;
  return failures;
}

int main(int argc, char** argv) {
  std::string json_path, filter;
  int repeats = 25;
  CLI::App app{"Validate and time the depthwise convolution kernels against cuDNN"};
  app.add_option("--json", json_path, "also write the results as JSON to this path");
  app.add_option("--repeats", repeats, "timed launches per measurement (median; >= 20)")
      ->check(CLI::Range(20, 10000));
  app.add_option("--filter", filter, "only shapes whose label contains this text");
  CLI11_PARSE(app, argc, argv);
  if (!Context::cuda_available()) {
    std::printf("depthwise_bench: skipped, %s\n", Context::cuda_unavailable_reason().c_str());
    return 77;
  }
  const auto t0 = std::chrono::steady_clock::now();
  int failures = 0;       // our variants or the library path beyond tolerance
  int cudnn_inexact = 0;  // cuDNN algorithms beyond it (reported, not ours to fix)
  bool host_bound = false;
  std::vector<Row> rows[3];
  json group_rows = json::object();  // the group backward data table (group_table)
  try {
    Context cpu;
    Context gpu(Device::cuda(0));
    const cudaStream_t stream = static_cast<cudaStream_t>(gpu.stream());
    cudnnHandle_t cudnn = nullptr;
    CUDARTS_CUDNN_CHECK(cudnnCreate(&cudnn));
    CUDARTS_CUDNN_CHECK(cudnnSetStream(cudnn, stream));
    Tensor workspace = Tensor::empty(gpu, Shape{int64_t(kCudnnWorkspaceBytes / sizeof(float))});
    Timer timer(stream, repeats);
    const float one = 1.0f, zero = 0.0f;

    for (const BenchShape& bs : darts_shapes()) {
      if (!filter.empty() && bs.label().find(filter) == std::string::npos) continue;
      const Shape xs{bs.n, bs.c, bs.h, bs.w}, ws{bs.c, 1, bs.k, bs.k}, bias_s{bs.c};
      const Conv2dParams prm = Conv2dParams::make(bs.stride, bs.pad, bs.dil, int(bs.c));
      const Shape ys = ops::conv2d_output_shape(xs, ws, prm);
      const auto pr = dw::make_problem(xs, ws, ys, prm);
      CUDARTS_CHECK(pr.has_value(), bs.label(), ": not a depthwise problem");

      // Host data and the CPU reference (with bias / dbias).
      const auto hx = random_values(size_t(xs.numel()), 1),
                 hw = random_values(size_t(ws.numel()), 2);
      const auto hb = random_values(size_t(bs.c), 3), hg = random_values(size_t(ys.numel()), 4);
      const auto hdw0 = random_values(size_t(ws.numel()), 5);
      const auto hdb0 = random_values(size_t(bs.c), 6);
      Tensor cx = Tensor::from_vector(cpu, xs, hx), cw = Tensor::from_vector(cpu, ws, hw);
      Tensor cb = Tensor::from_vector(cpu, bias_s, hb), cg = Tensor::from_vector(cpu, ys, hg);
      Tensor cy = Tensor::empty(cpu, ys), cdx = Tensor::empty(cpu, xs);
      Tensor cdw = Tensor::from_vector(cpu, ws, hdw0), cdb = Tensor::from_vector(cpu, bias_s, hdb0);
      ops::conv2d_fwd(cpu, cx, cw, &cb, cy, prm);
      ops::conv2d_bwd_data(cpu, cg, cw, cdx, prm);
      ops::conv2d_bwd_filter(cpu, cx, cg, cdw, &cdb, prm);
      const auto ref_y = cy.to_vector(), ref_dx = cdx.to_vector();
      const auto ref_dw = cdw.to_vector(), ref_db = cdb.to_vector();

      // Device buffers (through the library's allocator).
      Tensor gx = Tensor::from_vector(gpu, xs, hx), gw = Tensor::from_vector(gpu, ws, hw);
      Tensor gb = Tensor::from_vector(gpu, bias_s, hb), gg = Tensor::from_vector(gpu, ys, hg);
      Tensor gy = Tensor::empty(gpu, ys), gdx = Tensor::empty(gpu, xs);
      Tensor gdw0 = Tensor::from_vector(gpu, ws, hdw0),
             gdb0 = Tensor::from_vector(gpu, bias_s, hdb0);
      Tensor gdw = Tensor::empty(gpu, ws), gdb = Tensor::empty(gpu, bias_s);

      const auto tf = dw::plan_tiling(dw::Direction::Forward, *pr, sizeof(float));
      const auto tb = dw::plan_tiling(dw::Direction::BackwardData, *pr, sizeof(float));
      const auto tw = dw::plan_tiling(dw::Direction::BackwardFilter, *pr, sizeof(float));
      CUDARTS_CHECK(tf && tb && tw, bs.label(), ": not covered by the own kernels");
      const dw::FilterSplit split_lib = dw::plan_filter_split(*pr, *tw);
      const dw::FilterSplit split_big =
          dw::plan_filter_split(*pr, *tw, 4 * dw::kFilterBlockWork, dw::kMinFilterBlocks / 4);
      const size_t partial_bytes = std::max({dw::filter_partials_bytes(*pr, split_lib),
                                             dw::filter_partials_bytes(*pr, split_big), size_t(4)});
      Tensor partials = Tensor::empty(gpu, Shape{int64_t(partial_bytes / 4)});
      float* part = partials.data();

      // The variants of each direction as calls with or without bias.
      using Call = std::function<void(bool bias)>;
      std::vector<Call> fwd, bwd, fil;
      const bool sized = dw::with_kernel_size(bs.k, bs.k, [&](auto rr, auto ss) {
        constexpr int R = decltype(rr)::value, S = decltype(ss)::value;
        const dw::Problem p = *pr;
        const dw::Tiling t_f = *tf, t_b = *tb, t_w = *tw;
        fwd.push_back([&, p](bool bias) {
          fwd_direct_kernel<R, S><<<direct_blocks(ys.numel()), kDirectThreads, 0, stream>>>(
              gx.data(), gw.data(), bias ? gb.data() : nullptr, gy.data(), p);
          CUDARTS_LAUNCH_CHECK("fwd_direct_kernel");
        });
        fwd.push_back([&, p, t_f](bool bias) {
          dw::launch_forward<float, R, S, 1>(gx.data(), gw.data(), bias ? gb.data() : nullptr,
                                             gy.data(), p, t_f, stream);
        });
        fwd.push_back([&, p, t_f](bool bias) {
          dw::launch_forward<float, R, S, dw::kOutputsInFlight>(
              gx.data(), gw.data(), bias ? gb.data() : nullptr, gy.data(), p, t_f, stream);
        });
        bwd.push_back([&, p](bool) {
          bwd_data_direct_kernel<R, S><<<direct_blocks(xs.numel()), kDirectThreads, 0, stream>>>(
              gg.data(), gw.data(), gdx.data(), p);
          CUDARTS_LAUNCH_CHECK("bwd_data_direct_kernel");
        });
        bwd.push_back([&, p, t_b](bool) {
          dw::launch_backward_data<float, R, S, 1>(gg.data(), gw.data(), nullptr, gdx.data(), p,
                                                   t_b, stream);
        });
        bwd.push_back([&, p, t_b](bool) {
          dw::launch_backward_data<float, R, S, dw::kOutputsInFlight>(gg.data(), gw.data(), nullptr,
                                                                      gdx.data(), p, t_b, stream);
        });
        fil.push_back([&, p](bool bias) {
          const unsigned blocks = unsigned(p.c * (R * S + 1));
          bwd_filter_per_tap_kernel<<<blocks, kTapBlockThreads, 0, stream>>>(
              gx.data(), gg.data(), gdw.data(), bias ? gdb.data() : nullptr, p);
          CUDARTS_LAUNCH_CHECK("bwd_filter_per_tap_kernel");
        });
        for (const dw::FilterSplit sp : {split_lib, split_big})
          fil.push_back([&, p, t_w, sp](bool bias) {
            dw::launch_backward_filter<float, R, S>(gx.data(), gg.data(), gdw.data(),
                                                    bias ? gdb.data() : nullptr, part, p, t_w, sp,
                                                    stream);
          });
        fil.push_back([&, p, t_w, split_lib](bool bias) {
          dw::launch_backward_filter<float, R, S, true>(gx.data(), gg.data(), gdw.data(),
                                                        bias ? gdb.data() : nullptr, part, p, t_w,
                                                        split_lib, stream);
        });
        fil.push_back([&, p, t_w, split_lib](bool bias) {
          dw::launch_backward_filter<float, R, S, false, false>(gx.data(), gg.data(), gdw.data(),
                                                                bias ? gdb.data() : nullptr, part,
                                                                p, t_w, split_lib, stream);
        });
      });
      CUDARTS_CHECK(sized, bs.label(), ": no kernel instance for ", bs.k, "x", bs.k);
      // The library's variants (cuda/depthwise.cu): kOutputsInFlight outputs in flight for the
      // forward and backward data, the default filter split.
      const int chosen[3] = {3, 3, 2};

      // cuDNN: its own timing of every algorithm picks the two candidates.
      CudnnConv cd(bs, ys);
      void* wsp = workspace.data();
      CudnnPicks picks[3];
      {
        // A failing search leaves the direction without cuDNN numbers (reported as "-").
        auto searched = [&](cudnnStatus_t st, const char* what) {
          if (st == CUDNN_STATUS_SUCCESS) return true;
          std::fprintf(stderr, "depthwise_bench: %s %s failed: %s\n", what, bs.label().c_str(),
                       cudnnGetErrorString(st));
          return false;
        };
        int n = 0, got = 0;
        CUDARTS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn, &n));
        std::vector<cudnnConvolutionFwdAlgoPerf_t> pf(size_t(std::max(n, 1)));
        if (searched(cudnnFindConvolutionForwardAlgorithmEx(
                         cudnn, cd.x, gx.data(), cd.w, gw.data(), cd.conv, cd.y, gy.data(),
                         int(pf.size()), &got, pf.data(), wsp, kCudnnWorkspaceBytes),
                     "cudnnFindConvolutionForwardAlgorithmEx"))
          picks[kFwd] = picks_of(pf, got);
        CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnn, &n));
        std::vector<cudnnConvolutionBwdDataAlgoPerf_t> pd(size_t(std::max(n, 1)));
        if (searched(cudnnFindConvolutionBackwardDataAlgorithmEx(
                         cudnn, cd.w, gw.data(), cd.y, gg.data(), cd.conv, cd.x, gdx.data(),
                         int(pd.size()), &got, pd.data(), wsp, kCudnnWorkspaceBytes),
                     "cudnnFindConvolutionBackwardDataAlgorithmEx"))
          picks[kBwdData] = picks_of(pd, got);
        CUDARTS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(cudnn, &n));
        std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> pw(size_t(std::max(n, 1)));
        if (searched(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                         cudnn, cd.x, gx.data(), cd.y, gg.data(), cd.conv, cd.w, gdw.data(),
                         int(pw.size()), &got, pw.data(), wsp, kCudnnWorkspaceBytes),
                     "cudnnFindConvolutionBackwardFilterAlgorithmEx"))
          picks[kBwdFilter] = picks_of(pw, got);
      }
      auto cudnn_call = [&](int dir, int algo) -> std::function<void(bool)> {
        if (dir == kFwd)
          return [&, algo](bool) {
            CUDARTS_CUDNN_CHECK(
                cudnnConvolutionForward(cudnn, &one, cd.x, gx.data(), cd.w, gw.data(), cd.conv,
                                        cudnnConvolutionFwdAlgo_t(algo), wsp, kCudnnWorkspaceBytes,
                                        &zero, cd.y, gy.data()));
          };
        if (dir == kBwdData)
          return [&, algo](bool) {
            CUDARTS_CUDNN_CHECK(
                cudnnConvolutionBackwardData(cudnn, &one, cd.w, gw.data(), cd.y, gg.data(), cd.conv,
                                             cudnnConvolutionBwdDataAlgo_t(algo), wsp,
                                             kCudnnWorkspaceBytes, &zero, cd.x, gdx.data()));
          };
        return [&, algo](bool) {
          CUDARTS_CUDNN_CHECK(
              cudnnConvolutionBackwardFilter(cudnn, &one, cd.x, gx.data(), cd.y, gg.data(), cd.conv,
                                             cudnnConvolutionBwdFilterAlgo_t(algo), wsp,
                                             kCudnnWorkspaceBytes, &one, cd.w, gdw.data()));
        };
      };

      // Validation of one call: "=" outputs poisoned (NaN), "+=" outputs from their initial
      // values; returns the largest normalised error of the direction's outputs.
      auto validate = [&](int dir, const std::function<void(bool)>& call, bool bias) {
        const size_t fbytes = size_t(ws.numel()) * 4, bbytes = size_t(bs.c) * 4;
        if (dir == kFwd) CUDARTS_CUDA_CHECK(cudaMemsetAsync(gy.data(), 0xff, gy.nbytes(), stream));
        if (dir == kBwdData)
          CUDARTS_CUDA_CHECK(cudaMemsetAsync(gdx.data(), 0xff, gdx.nbytes(), stream));
        if (dir == kBwdFilter) {
          CUDARTS_CUDA_CHECK(
              cudaMemcpyAsync(gdw.data(), gdw0.data(), fbytes, cudaMemcpyDeviceToDevice, stream));
          CUDARTS_CUDA_CHECK(
              cudaMemcpyAsync(gdb.data(), gdb0.data(), bbytes, cudaMemcpyDeviceToDevice, stream));
        }
        call(bias);
        gpu.synchronize();
        if (dir == kFwd) {
          std::vector<float> want = ref_y;
          if (!bias)  // the reference has the bias
            for (size_t i = 0; i < want.size(); ++i)
              want[i] -= hb[i / size_t(ys[2] * ys[3]) % size_t(bs.c)];
          return normalized_error(gy.to_vector(), want);
        }
        if (dir == kBwdData) return normalized_error(gdx.to_vector(), ref_dx);
        double e = normalized_error(gdw.to_vector(), ref_dw);
        if (bias) e = std::max(e, normalized_error(gdb.to_vector(), ref_db));
        return e;
      };
      // ours: one of our variants (a failure fails the run); else a cuDNN algorithm, whose
      // error beyond the tolerance is reported (cuDNN's Winograd and FFT algorithms are not
      // exact to 1e-5: algo 5 of the data gradient was at 4e-4 on an H200) but not counted.
      auto measure = [&](int dir, int id, const std::function<void(bool)>& call, bool bias,
                         bool ours) {
        Measured m;
        m.id = id;
        m.error = validate(dir, call, bias);
        m.valid = m.error <= (dir == kBwdFilter ? kTolFilter : kTolData);
        if (!m.valid && ours) {
          ++failures;
          std::fprintf(stderr, "VALIDATION FAILED: %s %s variant %d: error %.3g\n", kDirNames[dir],
                       bs.label().c_str(), id, m.error);
        } else if (!m.valid) {
          ++cudnn_inexact;
          std::fprintf(stderr, "note: cuDNN %s %s algo %d is inexact: error %.3g\n", kDirNames[dir],
                       bs.label().c_str(), id, m.error);
        }
        m.us = timer.median_us([&] { call(false); }, &host_bound);
        return m;
      };

      const std::vector<Call>* variants[3] = {&fwd, &bwd, &fil};
      for (int dir = 0; dir < 3; ++dir) {
        Row row;
        row.shape = bs;
        row.chosen = chosen[dir];
        for (size_t v = 0; v < variants[dir]->size(); ++v)
          row.ours.push_back(measure(dir, int(v) + 1, (*variants[dir])[v], dir != kBwdData, true));
        if (picks[dir].deterministic >= 0)
          row.cudnn_det = measure(dir, picks[dir].deterministic,
                                  cudnn_call(dir, picks[dir].deterministic), false, false);
        if (picks[dir].fastest >= 0)
          row.cudnn_fast =
              measure(dir, picks[dir].fastest, cudnn_call(dir, picks[dir].fastest), false, false);
        rows[dir].push_back(row);
      }

      // The library's own path through the public API on the CUDA context.
      {
        Tensor ay = Tensor::full(gpu, ys, NAN), adx = Tensor::full(gpu, xs, NAN);
        Tensor adw = Tensor::from_vector(gpu, ws, hdw0),
               adb = Tensor::from_vector(gpu, bias_s, hdb0);
        ops::conv2d_fwd(gpu, gx, gw, &gb, ay, prm);
        ops::conv2d_bwd_data(gpu, gg, gw, adx, prm);
        ops::conv2d_bwd_filter(gpu, gx, gg, adw, &adb, prm);
        const double e[3] = {normalized_error(ay.to_vector(), ref_y),
                             normalized_error(adx.to_vector(), ref_dx),
                             std::max(normalized_error(adw.to_vector(), ref_dw),
                                      normalized_error(adb.to_vector(), ref_db))};
        for (int dir = 0; dir < 3; ++dir) {
          rows[dir].back().api_error = e[dir];
          if (!(e[dir] <= (dir == kBwdFilter ? kTolFilter : kTolData))) {
            ++failures;
            std::fprintf(stderr, "VALIDATION FAILED: %s %s through ops::conv2d_*: error %.3g\n",
                         kDirNames[dir], bs.label().c_str(), e[dir]);
          }
        }
      }
    }
    cudnnDestroy(cudnn);
    failures += group_table(cpu, gpu, timer, filter, &host_bound, group_rows);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "depthwise_bench: %s\n", e.what());
    return 1;
  }

  // ---------------------------------------------------------------- report
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json out = {{"group_bwd_data", group_rows.value("group_bwd_data", json::array())},
              {"repeats", repeats},
              {"failures", failures},
              {"cudnn_inexact", cudnn_inexact},
              {"seconds", seconds},
              {"timings_may_include_host_waits", host_bound}};
  for (int dir = 0; dir < 3; ++dir) {
    std::printf("\n%s (microseconds, median of %d; * = the library's variant)\n", kDirNames[dir],
                repeats);
    std::printf("%-34s %9s %9s %9s %9s %9s %16s %16s %7s %7s %9s\n", "shape", "v1", "v2", "v3",
                "v4", "v5", "cudnn-det(algo)", "cudnn-fast(algo)", "xdet", "xfast", "max-err");
    json list = json::array();
    for (const Row& r : rows[dir]) {
      char cells[5][16];
      double max_err = r.api_error;
      for (int v = 0; v < 5; ++v) {
        if (v < int(r.ours.size())) {
          std::snprintf(cells[v], sizeof(cells[v]), "%.1f%s", r.ours[size_t(v)].us,
                        v + 1 == r.chosen ? "*" : "");
          max_err = std::max(max_err, r.ours[size_t(v)].error);
        } else {
          std::snprintf(cells[v], sizeof(cells[v]), "-");
        }
      }
      const double mine = r.ours[size_t(r.chosen - 1)].us;
      char det[32] = "-", fast[32] = "-";
      if (r.cudnn_det.id >= 0)
        std::snprintf(det, sizeof(det), "%.1f (%d)", r.cudnn_det.us, r.cudnn_det.id);
      if (r.cudnn_fast.id >= 0)
        std::snprintf(fast, sizeof(fast), "%.1f (%d)", r.cudnn_fast.us, r.cudnn_fast.id);
      std::printf("%-34s %9s %9s %9s %9s %9s %16s %16s %6.1fx %6.1fx %9.2g\n",
                  r.shape.label().c_str(), cells[0], cells[1], cells[2], cells[3], cells[4], det,
                  fast, r.cudnn_det.us / mine, r.cudnn_fast.us / mine, max_err);
      json variants = json::array();
      for (const Measured& m : r.ours)
        variants.push_back({{"variant", m.id}, {"us", m.us}, {"error", m.error}});
      auto cudnn_json = [](const Measured& m) {
        return m.id < 0 ? json(nullptr) : json{{"algo", m.id}, {"us", m.us}, {"error", m.error}};
      };
      list.push_back({{"shape", r.shape.label()},
                      {"net", r.shape.net},
                      {"op", r.shape.op},
                      {"n", r.shape.n},
                      {"c", r.shape.c},
                      {"h", r.shape.h},
                      {"w", r.shape.w},
                      {"k", r.shape.k},
                      {"stride", r.shape.stride},
                      {"pad", r.shape.pad},
                      {"dilation", r.shape.dil},
                      {"variants", variants},
                      {"chosen_variant", r.chosen},
                      {"cudnn_deterministic", cudnn_json(r.cudnn_det)},
                      {"cudnn_fastest", cudnn_json(r.cudnn_fast)},
                      {"speedup_vs_cudnn_deterministic", r.cudnn_det.us / mine},
                      {"speedup_vs_cudnn_fastest", r.cudnn_fast.us / mine},
                      {"api_error", r.api_error},
                      {"max_error", max_err}});
    }
    out[kDirNames[dir]] = list;
  }
  std::printf("\n%d validation failure(s), %d inexact cuDNN algorithm(s); %.1f s%s\n", failures,
              cudnn_inexact, seconds,
              host_bound ? "; WARNING: some timings may include waits for the host" : "");
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << out.dump(1) << "\n";
    if (!f) {
      std::fprintf(stderr, "depthwise_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return failures == 0 ? 0 : 1;
}
