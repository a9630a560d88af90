// Kernel benchmark for the pointwise (1x1) convolutions: the own kernels (cuda/pointwise.cu,
// through ops::conv2d_*) and the map kernel's variants, launched directly (the per-image kernel
// with v1 = 4 pixels per thread, v2 = 2, v3 = 1, the library's until the evening of 2026-12-04; the
// packed kernel with v4 = 16, v5 = 8, v6 = 4 output channels per thread; the library takes one of
// v4-v6 by pointwise::map_outputs, printed as "lib") against cuDNN (the backend's plan,
// own_pointwise_kernels off) at the shapes of the DARTS search and retraining networks, each
// validated against the CPU reference before it is timed (CUDA events on the context's stream,
// median of repeats of 10 calls). Prints a table and, with --json, writes it. Exit status 1
// when a validation fails.
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cudarts/cudarts.h"
#include "pointwise_kernels.cuh"

using namespace cudarts;
using json = nlohmann::json;

namespace {

constexpr double kTol = 1e-4;  // strict FP32 convolutions (the op-parity tolerance)
constexpr int kCallsPerRepeat = 10;

struct BenchShape {
  const char* label;
  Shape x;
  int64_t cout;
  int stride;
  bool relu;
};

double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = float((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return v;
}

// Median microseconds per call of `call` on ctx's stream.
double median_us(Context& ctx, const std::function<void()>& call, int repeats) {
  auto stream = static_cast<cudaStream_t>(ctx.stream());
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) call();
  std::vector<double> us;
  for (int r = 0; r < repeats; ++r) {
    cudaEventRecord(a, stream);
    for (int i = 0; i < kCallsPerRepeat; ++i) call();
    cudaEventRecord(b, stream);
    cudaEventSynchronize(b);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, a, b);
    us.push_back(1000.0 * ms / kCallsPerRepeat);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

// One map-kernel variant: kPix pixels per thread, forward or backward data.
template <bool kBackwardData, int kPix>
void launch_variant(const cuda::pointwise::Problem& pr, const float* src, const float* w,
                    const float* mask, float* out, cudaStream_t stream) {
  namespace pw = cuda::pointwise;
  const pw::Direction d = kBackwardData ? pw::Direction::BackwardData : pw::Direction::Forward;
  pw::pointwise_map_kernel<float, kBackwardData, kPix>
      <<<pw::map_grid(d, pr, kPix), pw::kThreads, 0, stream>>>(src, w, nullptr, mask, out, pr);
}
// The packed map kernel with kOut output channels per thread.
template <bool kBackwardData, int kOut>
void launch_packed(const cuda::pointwise::Problem& pr, const float* src, const float* w,
                   const float* mask, float* out, cudaStream_t stream) {
  namespace pw = cuda::pointwise;
  const pw::Direction d = kBackwardData ? pw::Direction::BackwardData : pw::Direction::Forward;
  pw::pointwise_packed_map_kernel<float, kBackwardData, kOut>
      <<<pw::packed_map_grid(d, pr, kOut), pw::kThreads, 0, stream>>>(src, w, nullptr, mask, out,
                                                                      pr);
}
using Variant = void (*)(const cuda::pointwise::Problem&, const float*, const float*, const float*,
                         float*, cudaStream_t);
constexpr int kVariantCount = 6;
// [direction][variant]: v1-v3 the per-image kernel at 4, 2, 1 pixels per thread; v4-v6 the
// packed kernel at 16, 8, 4 output channels per thread.
const Variant kVariants[2][kVariantCount] = {
    {launch_variant<false, 4>, launch_variant<false, 2>, launch_variant<false, 1>,
     launch_packed<false, 16>, launch_packed<false, 8>, launch_packed<false, 4>},
    {launch_variant<true, 4>, launch_variant<true, 2>, launch_variant<true, 1>,
     launch_packed<true, 16>, launch_packed<true, 8>, launch_packed<true, 4>}};
const int kVariantOutputs[kVariantCount] = {0, 0, 0, 16, 8, 4};  // packed: outputs per thread

}  // namespace

int main(int argc, char** argv) {
  int repeats = 25;
  std::string json_path;
  CLI::App app{"Pointwise (1x1) convolutions: own kernels against cuDNN"};
  app.add_option("--repeats", repeats);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);
  if (!Context::cuda_available()) {
    std::printf("pointwise_bench: no GPU (%s)\n", Context::cuda_unavailable_reason().c_str());
    return 77;
  }
  // The search network (batch 64, C = 16, 32x32): the separable convolutions' C -> C at the
  // three resolutions, the cells' preprocessing 4C -> C with its ReLU, FactorizedReduce's
  // stride-2 halves; the retraining network (batch 96, C = 36).
  const std::vector<BenchShape> shapes = {
      {"search N64 C16 32x32", {64, 16, 32, 32}, 16, 1, false},
      {"search N64 C32 16x16", {64, 32, 16, 16}, 32, 1, false},
      {"search N64 C64 8x8", {64, 64, 8, 8}, 64, 1, false},
      {"search pre N64 64->16 32x32 relu", {64, 64, 32, 32}, 16, 1, true},
      {"search pre N64 256->64 8x8 relu", {64, 256, 8, 8}, 64, 1, true},
      {"search fr N64 16->8 32x32 s2 relu", {64, 16, 32, 32}, 8, 2, true},
      {"retrain N96 C36 32x32", {96, 36, 32, 32}, 36, 1, false},
      {"retrain pre N96 144->36 32x32 relu", {96, 144, 32, 32}, 36, 1, true},
      {"retrain N96 C144 8x8", {96, 144, 8, 8}, 144, 1, false},
  };
  ContextOptions cudnn_only;
  cudnn_only.own_pointwise_kernels = false;
  Context cpu, own(Device::cuda(0)), lib(Device::cuda(0), cudnn_only);
  int failures = 0;
  json rows = json::array();
  std::printf("%-36s %-10s %7s %7s %7s %7s %7s %7s %4s %9s %9s %7s %9s %9s\n", "shape", "direction",
              "v1", "v2", "v3", "v4", "v5", "v6", "lib", "own us", "cudnn us", "x", "own err",
              "cudnn err");
  for (const BenchShape& s : shapes) {
    Conv2dParams p = Conv2dParams::make(s.stride, 0);
    const Shape ws{s.cout, s.x[1], 1, 1};
    const Shape ys = ops::conv2d_output_shape(s.x, ws, p);
    p.relu_input = s.relu;
    const auto hx = random_values(size_t(s.x.numel()), 1),
               hw = random_values(size_t(ws.numel()), 2), hg = random_values(size_t(ys.numel()), 3);
    // Reference on the CPU: the fused ReLU as the CPU backend runs it.
    Tensor cx = Tensor::from_vector(cpu, s.x, hx), cw = Tensor::from_vector(cpu, ws, hw),
           cg = Tensor::from_vector(cpu, ys, hg);
    Tensor cy = Tensor::empty(cpu, ys), cdx = Tensor::empty(cpu, s.x), cdw = Tensor::zeros(cpu, ws);
    ops::conv2d_fwd(cpu, cx, cw, nullptr, cy, p);
    ops::conv2d_bwd_data(cpu, cg, cw, cdx, p, s.relu ? &cx : nullptr);
    ops::conv2d_bwd_filter(cpu, cx, cg, cdw, nullptr, p);
    const std::vector<float> ref[3] = {cy.to_vector(), cdx.to_vector(), cdw.to_vector()};
    const char* names[3] = {"forward", "bwd_data", "bwd_filter"};
    for (int dir = 0; dir < 3; ++dir) {
      double us[2], err[2];
      Context* ctxs[2] = {&own, &lib};
      for (int k = 0; k < 2; ++k) {
        Context& ctx = *ctxs[k];
        Tensor gx = Tensor::from_vector(ctx, s.x, hx), gw = Tensor::from_vector(ctx, ws, hw),
               gg = Tensor::from_vector(ctx, ys, hg);
        Tensor gy = Tensor::full(ctx, ys, NAN), gdx = Tensor::full(ctx, s.x, NAN),
               gdw = Tensor::zeros(ctx, ws);
        std::function<void()> call;
        if (dir == 0) call = [&] { ops::conv2d_fwd(ctx, gx, gw, nullptr, gy, p); };
        if (dir == 1)
          call = [&] { ops::conv2d_bwd_data(ctx, gg, gw, gdx, p, s.relu ? &gx : nullptr); };
        if (dir == 2) call = [&] { ops::conv2d_bwd_filter(ctx, gx, gg, gdw, nullptr, p); };
        call();
        ctx.synchronize();
        err[k] = normalized_error((dir == 0 ? gy : dir == 1 ? gdx : gdw).to_vector(), ref[dir]);
        us[k] = median_us(ctx, call, repeats);
      }
      const bool ok = err[0] <= kTol;
      if (!ok) {
        ++failures;
        std::fprintf(stderr, "VALIDATION FAILED: %s %s (own kernels): error %.3g\n", s.label,
                     names[dir], err[0]);
      }
      // The map kernel's variants, launched directly (forward and backward data).
      double vus[kVariantCount] = {NAN, NAN, NAN, NAN, NAN, NAN};
      int lib = 0;  // the variant the library launches
      if (dir < 2) {
        namespace pw = cuda::pointwise;
        const auto pr = pw::make_problem(s.x, ws, ys, p);
        Tensor gx = Tensor::from_vector(own, s.x, hx), gw = Tensor::from_vector(own, ws, hw),
               gg = Tensor::from_vector(own, ys, hg);
        Tensor out = Tensor::full(own, dir == 0 ? ys : s.x, NAN);
        auto stream = static_cast<cudaStream_t>(own.stream());
        const float* src = dir == 0 ? gx.data() : gg.data();
        const float* mask = dir == 1 && s.relu ? gx.data() : nullptr;
        if (pr) {
          const int outs =
              pw::map_outputs(dir == 0 ? pw::Direction::Forward : pw::Direction::BackwardData, *pr);
          for (int v = 0; v < kVariantCount; ++v)
            if (kVariantOutputs[v] == outs) lib = v + 1;
        }
        for (int v = 0; v < kVariantCount && pr; ++v) {
          auto call = [&] { kVariants[dir][v](*pr, src, gw.data(), mask, out.data(), stream); };
          call();
          own.synchronize();
          const double e = normalized_error(out.to_vector(), ref[dir]);
          if (!(e <= kTol)) {
            ++failures;
            std::fprintf(stderr, "VALIDATION FAILED: %s %s variant %d: error %.3g\n", s.label,
                         names[dir], v + 1, e);
          }
          vus[v] = median_us(own, call, repeats);
        }
      }
      std::printf(
          "%-36s %-10s %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %4s %9.1f %9.1f %6.1fx %9.2g %9.2g\n",
          s.label, names[dir], vus[0], vus[1], vus[2], vus[3], vus[4], vus[5],
          lib ? ("v" + std::to_string(lib)).c_str() : "-", us[0], us[1], us[1] / us[0], err[0],
          err[1]);
      rows.push_back({{"shape", s.label},
                      {"direction", names[dir]},
                      {"own_us", us[0]},
                      {"variants_us", std::vector<double>(vus, vus + kVariantCount)},
                      {"library_variant", lib},
                      {"cudnn_us", us[1]},
                      {"own_error", err[0]},
                      {"cudnn_error", err[1]}});
    }
  }
  std::printf("\n%d validation failure(s)\n", failures);
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << json{{"failures", failures}, {"rows", rows}}.dump(1) << "\n";
  }
  return failures == 0 ? 0 : 1;
}
