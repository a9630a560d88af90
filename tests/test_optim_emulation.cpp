// The multi-tensor optimizer kernels and the step's small device checks
// (cuda/optim_kernels.cuh: SGD, Adam / AdamW with masks, a skipped step and device
// hyper-parameters, the global norm's sums of squares, the clip coefficient, count_nonfinite,
// metrics_add) run as host code under the emulation of cuda_emulation.h, packed into tensor
// tables by the launchers' for_each_table (300 tensors: two tables), against the CPU ops. The
// global norm's second pass (sum_partials_kernel, run on an H100 with the first version) is a
// fixed-order sum here. Built with the CUDA backend (it needs the CUDA headers), runs without a
// GPU.
#include <cmath>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "test_util.h"

#include "emulated_attributes.h"

#include "optim_kernels.cuh"

namespace cudarts {
namespace {

namespace op = cuda::optim;

// Host copies of a list of tensors (the emulated device memory) and their CPU twins.
struct Tensors {
  std::vector<std::vector<float>> host;
  std::vector<Tensor> cpu;
};

Tensors make(Context& ctx, const std::vector<int64_t>& sizes, uint32_t seed, float offset = 0.0f,
             bool mask = false) {
  Tensors t;
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::vector<float> v = test::random_vector(size_t(sizes[i]), seed + uint32_t(i));
    for (size_t j = 0; j < v.size(); ++j)
      v[j] = mask ? float((j + i) % 3 != 0) : (offset == 0.0f ? v[j] : offset + std::abs(v[j]));
    t.host.push_back(v);
    t.cpu.push_back(Tensor::from_vector(ctx, Shape{sizes[i]}, v));
  }
  return t;
}

void expect_equal(const Tensors& t, const char* what) {
  for (size_t i = 0; i < t.host.size(); ++i)
    ASSERT_LT(emu::rel_error(t.host[i], t.cpu[i].to_vector()), 1e-6) << what << " tensor " << i;
}

// One optimizer step on both sides: sizes span chunks (4096) and two tables (300 tensors);
// every third tensor has a mask; grad_scale and hyper on the device.
void run_step(bool adam, float scale) {
  SCOPED_TRACE(detail::cat(adam ? "adam" : "sgd", ", grad scale ", scale));
  Context ctx;
  std::vector<int64_t> sizes;
  for (int i = 0; i < 300; ++i) sizes.push_back(i == 7 ? 9000 : 1 + (i * 37) % 50);
  Tensors w = make(ctx, sizes, 10), g = make(ctx, sizes, 1000), s0 = make(ctx, sizes, 2000),
          s1 = make(ctx, sizes, 3000, 0.1f), m = make(ctx, sizes, 0, 0.0f, true);
  float gs = scale;
  Tensor gst = Tensor::from_vector(ctx, Shape{1}, {scale});
  SgdParams sp{0.05f, 0.9f, 3e-4f, true};
  AdamParams ap;
  ap.lr = 0.01f;
  ap.weight_decay = 0.01f;
  ap.decoupled = true;
  ap.step = 3;
  const std::array<float, 3> h = ops::adam_hyper(ap);
  std::vector<float> hyper(h.begin(), h.end());
  Tensor ht = Tensor::from_vector(ctx, Shape{3}, hyper);
  std::vector<OptimSlot> slots;
  std::vector<op::Entry> entries;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const bool masked = i % 3 == 0;
    slots.push_back({&w.cpu[i], &g.cpu[i], &s0.cpu[i], &s1.cpu[i], masked ? &m.cpu[i] : nullptr});
    entries.push_back({w.host[i].data(), g.host[i].data(), s0.host[i].data(), s1.host[i].data(),
                       sizes[i], masked ? m.host[i].data() : nullptr});
  }
  op::AdamArgs a{ap.lr, ap.beta1, ap.beta2, ap.eps, ap.weight_decay, h[1], h[2], ap.decoupled};
  int tables = 0;
  op::for_each_table(entries, [&](const op::TensorTable& t, int64_t) {
    ++tables;
    emu::run_grid(dim3(unsigned(t.first_chunk[t.count])), [&] {
      if (adam)
        op::adam_kernel(t, a, &gs, hyper.data());
      else
        op::sgd_kernel(t, sp, &gs, nullptr);
    });
  });
  EXPECT_EQ(tables, 2);
  if (adam)
    ops::adam_step(ctx, slots, ap, &gst, &ht);
  else
    ops::sgd_step(ctx, slots, sp, &gst);
  expect_equal(w, "parameter");
  expect_equal(s0, "state0");
  if (adam) expect_equal(s1, "state1");
}

TEST(OptimEmulation, StepsMatchTheCpuOps) {
  run_step(false, 0.5f);
  run_step(true, 0.5f);
  run_step(true, 0.0f);  // a skipped step: nothing moves
}

TEST(OptimEmulation, NormClipWatchAndMetricsMatchTheCpuOps) {
  Context ctx;
  std::vector<int64_t> sizes{5000, 1, 300};
  Tensors x = make(ctx, sizes, 77);
  std::vector<op::Entry> entries;
  int64_t chunks = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    entries.push_back({nullptr, x.host[i].data(), nullptr, nullptr, sizes[i]});
    chunks += op::chunks_of(sizes[i]);
  }
  std::vector<double> partials(size_t(chunks), NAN);
  op::for_each_table(entries, [&](const op::TensorTable& t, int64_t base) {
    emu::run_grid(dim3(unsigned(t.first_chunk[t.count])),
                  [&] { op::sum_squares_kernel(t, base, partials.data()); });
  });
  double sq = 0.0;
  for (double p : partials) sq += p;
  Tensor norm = Tensor::empty(ctx, Shape{1});
  ops::global_norm(ctx, {&x.cpu[0], &x.cpu[1], &x.cpu[2]}, norm);
  EXPECT_NEAR(std::sqrt(sq), norm.item(), 1e-5 * norm.item());

  for (float n : {0.5f, 50.0f, std::numeric_limits<float>::infinity(), NAN}) {
    float coef = -1.0f;
    emu::run_grid(dim3(1), [&] { op::clip_coefficient_kernel(&n, 5.0f, &coef); });
    Tensor nt = Tensor::from_vector(ctx, Shape{1}, {n}), ct = Tensor::empty(ctx, Shape{1});
    ops::clip_coefficient(ctx, nt, 5.0f, ct);
    EXPECT_EQ(coef, ct.item()) << "norm " << n;
  }

  // The divergence watch over three calls (the second has a non-finite value) and the metrics
  // of a finite and a non-finite loss; only thread 0 of the emulated block may act, as on the
  // GPU's one-thread launch.
  int32_t state[4] = {0, -1, 0, -1};
  Tensor st = Tensor::from_vector_i32(ctx, Shape{4}, {0, -1, 0, -1});
  float sums[4] = {0, 0, 0, 0};
  Tensor sums_t = Tensor::zeros(ctx, Shape{4});
  for (float bad : {1.0f, NAN, 2.0f}) {
    const float ok = 3.0f, hits = 5.0f;
    op::Values8 v{};
    v.n = 2;
    v.p[0] = &ok;
    v.p[1] = &bad;
    emu::run_grid(dim3(1), [&] {
      if (threadIdx.x == 0) op::count_nonfinite_kernel(v, state);
    });
    emu::run_grid(dim3(1), [&] {
      if (threadIdx.x == 0) op::metrics_add_kernel(&bad, &hits, 8.0f, sums);
    });
    Tensor okt = Tensor::from_vector(ctx, Shape{1}, {ok}),
           badt = Tensor::from_vector(ctx, Shape{1}, {bad}),
           ht = Tensor::from_vector(ctx, Shape{1}, {hits});
    ops::count_nonfinite(ctx, {&okt, &badt}, st);
    ops::metrics_add(ctx, badt, ht, 8.0f, sums_t);
  }
  EXPECT_EQ(std::vector<int32_t>(state, state + 4), st.to_vector_i32());
  EXPECT_EQ(std::vector<float>(sums, sums + 4), sums_t.to_vector());
}

}  // namespace
}  // namespace cudarts
