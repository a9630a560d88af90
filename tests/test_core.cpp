// Tensor, Shape, Context and the caching allocator: views share storage, copies are
// explicit, statistics count what the allocator did.
#include <cmath>
#include <limits>
#include <map>

#include "test_util.h"

namespace cudarts {
namespace {

TEST(Shape, BasicsAndPrinting) {
  Shape s{2, 3, 4, 5};
  EXPECT_EQ(s.ndim(), 4);
  EXPECT_EQ(s.numel(), 120);
  EXPECT_EQ(s.str(), "[2, 3, 4, 5]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_TRUE((Shape{2, 3} == Shape{2, 3}));
  EXPECT_FALSE((Shape{2, 3} == Shape{3, 2}));
  EXPECT_THROW(s[4], Error);
  EXPECT_THROW((Shape{1, -2}), Error);
}

TEST(Tensor, FromVectorRoundTrip) {
  Context ctx;
  const std::vector<float> v{1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::from_vector(ctx, Shape{2, 3}, v);
  EXPECT_EQ(t.to_vector(), v);
  EXPECT_EQ(t.describe(), "f32[2, 3] on cpu");
  EXPECT_THROW(Tensor::from_vector(ctx, Shape{4}, v), Error);
}

TEST(Tensor, ViewsShareStorageCopiesDoNot) {
  Context ctx;
  Tensor t = Tensor::from_vector(ctx, Shape{3, 2}, {0, 1, 2, 3, 4, 5});
  Tensor rows = t.slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.to_vector(), (std::vector<float>{2, 3, 4, 5}));
  Tensor flat = t.reshape(Shape{6});
  Tensor copy = t.clone(ctx);
  Tensor moved_copy = t.to(ctx);
  rows.data()[0] = 42.0f;  // writes through to t and flat, not to the copies
  EXPECT_EQ(t.to_vector()[2], 42.0f);
  EXPECT_EQ(flat.to_vector()[2], 42.0f);
  EXPECT_EQ(copy.to_vector()[2], 2.0f);
  EXPECT_EQ(moved_copy.to_vector()[2], 2.0f);
  EXPECT_THROW(t.reshape(Shape{4}), Error);
  EXPECT_THROW(t.slice(2, 4), Error);
}

TEST(Tensor, ViewKeepsStorageAlive) {
  Context ctx;
  Tensor view;
  {
    Tensor t = Tensor::from_vector(ctx, Shape{4}, {1, 2, 3, 4});
    view = t.slice(2, 4);
  }
  EXPECT_EQ(view.to_vector(), (std::vector<float>{3, 4}));
}

TEST(Tensor, ZerosFullItemAndI32) {
  Context ctx;
  EXPECT_EQ(Tensor::zeros(ctx, Shape{3}).to_vector(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(Tensor::full(ctx, Shape{2}, 2.5f).to_vector(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_EQ(Tensor::full(ctx, Shape{1}, 7.0f).item(), 7.0f);
  Tensor labels = Tensor::from_vector_i32(ctx, Shape{3}, {4, 0, 9});
  EXPECT_EQ(labels.to_vector_i32(), (std::vector<int32_t>{4, 0, 9}));
  EXPECT_THROW(labels.data(), Error);
  EXPECT_THROW(labels.to_vector(), Error);
  EXPECT_THROW(Tensor().raw(), Error);
}

TEST(Allocator, RoundsAndCountsRequests) {
  EXPECT_EQ(Allocator::round_size(1), 256u);
  EXPECT_EQ(Allocator::round_size(256), 256u);
  EXPECT_EQ(Allocator::round_size(257), 512u);
  EXPECT_EQ(Allocator::round_size((1 << 20) + 1), size_t((1 << 20) + (1 << 16)));
  CpuAllocator a;
  void* p = a.allocate(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
  AllocatorStats s = a.stats();
  EXPECT_EQ(s.current_bytes, 1024u);
  EXPECT_EQ(s.num_allocations, 1u);
  a.deallocate(p, 1000);
  EXPECT_EQ(a.stats().current_bytes, 0u);
  EXPECT_EQ(a.stats().reserved_bytes, 1024u);  // cached, not returned
  EXPECT_EQ(a.allocate(0), nullptr);
}

TEST(Allocator, ReusesCachedBlocksAndTracksPeak) {
  CpuAllocator a;
  void* p1 = a.allocate(4096);
  void* p2 = a.allocate(8192);
  EXPECT_EQ(a.stats().peak_bytes, 4096u + 8192u);
  a.deallocate(p1, 4096);
  a.deallocate(p2, 8192);
  void* p3 = a.allocate(4000);  // rounds to 4096: served from the cache
  EXPECT_EQ(p3, p1);
  AllocatorStats s = a.stats();
  EXPECT_EQ(s.num_allocations, 2u);
  EXPECT_EQ(s.num_cache_hits, 1u);
  EXPECT_EQ(s.num_requests, 3u);
  EXPECT_EQ(s.current_bytes, 4096u);
  EXPECT_EQ(s.peak_bytes, 4096u + 8192u);
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_bytes, 4096u);
  a.deallocate(p3, 4000);
  a.empty_cache();
  EXPECT_EQ(a.stats().reserved_bytes, 0u);
  EXPECT_EQ(a.stats().num_frees, 2u);
}

TEST(Allocator, SteadyStateLoopStopsAllocating) {
  Context ctx;
  auto step = [&] {
    Tensor a = Tensor::zeros(ctx, Shape{64, 16, 8, 8});
    Tensor b = Tensor::zeros(ctx, Shape{64, 32});
    Tensor c = Tensor::empty(ctx, a.shape());
    ops::add(ctx, a, a, c);
  };
  step();
  const uint64_t after_first = ctx.allocator().stats().num_allocations;
  for (int i = 0; i < 5; ++i) step();
  EXPECT_EQ(ctx.allocator().stats().num_allocations, after_first);
  EXPECT_EQ(ctx.allocator().stats().current_bytes, 0u);
}

// An allocator whose system allocation fails above a budget: the error must state the bytes
// requested, the bytes in use and the peak (the same code path serves cudaMalloc failures).
class TinyAllocator final : public Allocator {
 public:
  TinyAllocator() : Allocator(Device::cpu()) {}
  ~TinyAllocator() override { release_all(); }
  size_t raw_in_use = 0;
  std::map<void*, size_t> sizes;

 protected:
  void* raw_allocate(size_t bytes) override {
    CUDARTS_CHECK(raw_in_use + bytes <= 8192, "system allocation of ", bytes, " bytes failed");
    raw_in_use += bytes;
    void* p = std::malloc(bytes);
    sizes[p] = bytes;
    return p;
  }
  void raw_free(void* ptr) noexcept override {
    raw_in_use -= sizes[ptr];
    sizes.erase(ptr);
    std::free(ptr);
  }
};

TEST(Allocator, OutOfMemoryNamesRequestInUseAndPeak) {
  TinyAllocator a;
  void* p = a.allocate(4096);
  try {
    a.allocate(6000);
    ADD_FAILURE() << "expected out of memory";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* frag : {"out of memory on cpu", "requested 6000 bytes", "4096 bytes in use",
                             "peak 4096 bytes", "system allocation of 6144 bytes failed"})
      EXPECT_NE(msg.find(frag), std::string::npos) << "'" << frag << "' missing from: " << msg;
  }
  // Before giving up the allocator returns its cache to the system: with the 4096-byte block
  // freed into the cache, a 6000-byte request succeeds.
  a.deallocate(p, 4096);
  void* q = a.allocate(6000);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(a.stats().num_frees, 1u);
  a.deallocate(q, 6000);
}

TEST(Allocator, TensorsReturnMemoryWhenDestroyed) {
  Context ctx;
  {
    Tensor t = Tensor::zeros(ctx, Shape{1000});
    EXPECT_EQ(ctx.allocator().stats().current_bytes, Allocator::round_size(4000));
  }
  EXPECT_EQ(ctx.allocator().stats().current_bytes, 0u);
}

TEST(Context, RngOffsetsDoNotOverlap) {
  Context ctx(Device::cpu(), ContextOptions{123});
  EXPECT_EQ(ctx.seed(), 123u);
  const uint64_t a = ctx.reserve_rng(10);  // 3 blocks of 4 words
  const uint64_t b = ctx.reserve_rng(1);
  EXPECT_EQ(a, 0u);
  EXPECT_EQ(b, 3u);
  ctx.set_rng_state(5, 100);
  EXPECT_EQ(ctx.reserve_rng(4), 100u);
  EXPECT_EQ(ctx.seed(), 5u);
}

TEST(Context, CudaAvailabilityIsReported) {
  if (Context::cuda_available()) {
    EXPECT_TRUE(Context::cuda_unavailable_reason().empty());
  } else {
    EXPECT_FALSE(Context::cuda_unavailable_reason().empty());
    EXPECT_THROW(Context ctx(Device::cuda(0)), Error);
  }
}

TEST(Context, CudaTensorRoundTrip) {
  CUDARTS_REQUIRE_GPU();
  Context cpu;
  Context gpu(Device::cuda(0));
  Tensor h = test::random_tensor(cpu, Shape{3, 5}, 1);
  Tensor d = h.to(gpu);
  EXPECT_TRUE(d.device().is_cuda());
  EXPECT_EQ(d.to_vector(), h.to_vector());
  Tensor back = d.clone(gpu).to(cpu);
  EXPECT_EQ(back.to_vector(), h.to_vector());
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// Tensor::wrap: cudarts ops read and write the caller's memory in place, nothing is copied or
// freed, and bad pointers are refused by name.
TEST(TensorWrap, OpsWorkInTheCallersMemory) {
  Context ctx;
  std::vector<float> in = {-1.0f, 2.0f, -3.0f, 4.0f}, out(4, 99.0f);
  Tensor x = Tensor::wrap(in.data(), Shape{2, 2}, DType::F32, Device::cpu());
  Tensor y = Tensor::wrap(out.data(), Shape{2, 2}, DType::F32, Device::cpu());
  ops::relu_fwd(ctx, x, y);
  EXPECT_EQ(out, (std::vector<float>{0.0f, 2.0f, 0.0f, 4.0f}));
  in[0] = 5.0f;  // the tensor sees later writes by the caller: it is a view, not a copy
  EXPECT_EQ(x.to_vector()[0], 5.0f);
  {
    Tensor view = y.slice(1, 2);
    ops::fill(ctx, view, 7.0f);
  }
  EXPECT_EQ(out, (std::vector<float>{0.0f, 2.0f, 7.0f, 7.0f}));
  const AllocatorStats s = ctx.allocator().stats();
  EXPECT_EQ(s.current_bytes, 0u) << "wrapping allocates nothing";
}

TEST(TensorWrap, BadPointersAndDevicesAreRefused) {
  Context ctx;
  std::vector<float> v(8);
  EXPECT_THROW(Tensor::wrap(nullptr, Shape{2}, DType::F32, Device::cpu()), Error);
  EXPECT_NO_THROW(Tensor::wrap(nullptr, Shape{0}, DType::F32, Device::cpu()));
  try {
    Tensor::wrap(reinterpret_cast<char*>(v.data()) + 2, Shape{2}, DType::F32, Device::cpu());
    ADD_FAILURE() << "a misaligned pointer should be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("aligned"), std::string::npos) << e.what();
  }
  Tensor on_gpu = Tensor::wrap(v.data(), Shape{8}, DType::F32, Device::cuda(0));
  EXPECT_EQ(on_gpu.device(), Device::cuda(0));
  try {
    ops::fill(ctx, on_gpu, 1.0f);
    ADD_FAILURE() << "a tensor of another device should be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// OpProfiler counts every op call by name while attached, not while a graph captures, and
// detaches when destroyed.
TEST(OpProfiler, CountsOpsByName) {
  Context ctx;
  Tensor a = Tensor::full(ctx, Shape{1000}, 1.0f), b = Tensor::full(ctx, Shape{1000}, 2.0f);
  {
    OpProfiler profiler(ctx);
    EXPECT_EQ(ctx.op_profiler(), &profiler);
    EXPECT_THROW(OpProfiler second(ctx), Error);
    for (int i = 0; i < 3; ++i) ops::add(ctx, a, b, a);
    ops::scale(ctx, a, 0.5f, a);
    StepGraph g(ctx);
    g.capture([&] { ops::relu_fwd(ctx, a, b); });  // recorded, not timed
    const auto rows = profiler.report();
    std::map<std::string, int64_t> calls;
    for (const auto& r : rows) {
      calls[r.op] = r.calls;
      EXPECT_GE(r.total_ms, 0.0);
    }
    EXPECT_EQ(calls["add"], 3);
    EXPECT_EQ(calls["scale"], 1);
    EXPECT_EQ(calls.count("relu_fwd"), 0u);
    EXPECT_NE(profiler.table().find("add"), std::string::npos);
    profiler.reset();
    EXPECT_TRUE(profiler.report().empty());
  }
  EXPECT_EQ(ctx.op_profiler(), nullptr);
  EXPECT_EQ(a.to_vector()[0], 3.5f);  // (1 + 2 + 2 + 2) / 2: the profiled ops ran
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// The own pointwise kernels (the default) against cuDNN's, hand-computed: the fused ReLU costs
// nothing in the forward and the filter gradient and one read of x (the mask) in backward data,
// the filter gradient takes two launches (partials, their sum), all plain FP32 (no tensor-core
// FLOPs); on cuDNN the ReLU is a pass of its own (relu(x) into scratch, or the mask over dx).
TEST(CostModel, PointwiseConvolutionsOnTheOwnKernelsAndOnCudnn) {
  ContextOptions cudnn_convolutions;
  cudnn_convolutions.own_pointwise_kernels = false;
  Context own, cudnn(Device::cpu(), cudnn_convolutions);
  for (Context* c : {&own, &cudnn}) {
    Context& ctx = *c;
    const bool mine = ctx.own_pointwise_kernels();
    SCOPED_TRACE(mine ? "own kernels" : "cuDNN");
    // x (2, 8, 10, 10) -> y (2, 4, 10, 10): 1600 and 800 values, w 32.
    Tensor x = Tensor::zeros(ctx, Shape{2, 8, 10, 10}), w = Tensor::zeros(ctx, Shape{4, 8, 1, 1});
    Tensor y = Tensor::zeros(ctx, Shape{2, 4, 10, 10}), dx = Tensor::zeros(ctx, x.shape());
    Conv2dParams p;
    p.relu_input = true;
    OpProfiler prof(ctx);
    ops::conv2d_fwd(ctx, x, w, nullptr, y, p);
    ops::conv2d_bwd_data(ctx, y, w, dx, p, &x);
    ops::conv2d_bwd_filter(ctx, x, y, w, nullptr, p);
    std::map<std::string, OpProfiler::Row> rows;
    for (const auto& row : prof.report()) rows[row.label()] = row;
    const OpCost f = rows.at("conv2d_fwd [pointwise]").cost;
    const OpCost d = rows.at("conv2d_bwd_data [pointwise]").cost;
    const OpCost g = rows.at("conv2d_bwd_filter [pointwise]").cost;
    for (const OpCost* cost : {&f, &d, &g}) {
      EXPECT_EQ(cost->flops, 2.0 * 800 * 8);
      EXPECT_EQ(cost->tensor_core_flops, mine ? 0.0 : cost->flops);
    }
    EXPECT_EQ(f.launches, mine ? 1 : 2);
    EXPECT_EQ(f.bytes_read, 4.0 * (mine ? 1600 + 32 : 1600 + 32 + 2 * 1600));
    EXPECT_EQ(f.bytes_written, 4.0 * (mine ? 800 : 800 + 1600));
    EXPECT_EQ(d.launches, mine ? 1 : 2);
    EXPECT_EQ(d.bytes_read, 4.0 * (mine ? 800 + 32 + 1600 : 800 + 32 + 2 * 1600));
    EXPECT_EQ(d.bytes_written, 4.0 * (mine ? 1600 : 1600 + 1600));
    EXPECT_EQ(g.launches, mine ? 2 : 2);  // own: partials and their sum; cuDNN: the ReLU pass
    EXPECT_EQ(g.bytes_read, 4.0 * (mine ? 1600 + 800 + 32 : 1600 + 800 + 32 + 2 * 1600));
    EXPECT_EQ(g.bytes_written, 4.0 * (mine ? 32 : 32 + 1600));
  }
}

// The cost model of single ops against hand-computed values, and the device model's
// arithmetic.
TEST(CostModel, HandComputedOpCosts) {
  ContextOptions cudnn_convolutions;  // the model of cuDNN's convolutions (a bias pass)
  cudnn_convolutions.own_depthwise_kernels = false;
  cudnn_convolutions.own_pointwise_kernels = false;
  Context ctx(Device::cpu(), cudnn_convolutions);
  // Depthwise 3x3, stride 1, pad 1, with bias: x (2, 8, 10, 10), w (8, 1, 3, 3), y like x.
  Tensor x = Tensor::zeros(ctx, Shape{2, 8, 10, 10}), w = Tensor::zeros(ctx, Shape{8, 1, 3, 3});
  Tensor b = Tensor::zeros(ctx, Shape{8}), y = Tensor::zeros(ctx, Shape{2, 8, 10, 10});
  // Pointwise 8 -> 4 on the same input, no bias.
  Tensor w1 = Tensor::zeros(ctx, Shape{4, 8, 1, 1}), y1 = Tensor::zeros(ctx, Shape{2, 4, 10, 10});
  Tensor r = Tensor::zeros(ctx, Shape{2, 8, 10, 10});
  OpProfiler prof(ctx);  // attached after the tensors' fills
  ops::conv2d_fwd(ctx, x, w, &b, y, Conv2dParams::make(1, 1, 1, 8));
  ops::conv2d_fwd(ctx, x, w1, nullptr, y1, Conv2dParams{});
  ops::relu_fwd(ctx, x, r);
  ops::axpy(ctx, 2.0f, x, r);
  std::map<std::string, OpProfiler::Row> rows;
  for (const auto& row : prof.report()) rows[row.label()] = row;

  const OpProfiler::Row& dw = rows.at("conv2d_fwd [depthwise]");
  EXPECT_EQ(dw.calls, 1);
  EXPECT_EQ(dw.cost.launches, 2);                               // convolution + bias pass
  EXPECT_EQ(dw.cost.flops, 2.0 * 1600 * 9);                     // 1600 outputs, 9 taps each
  EXPECT_EQ(dw.cost.tensor_core_flops, 0.0);                    // depthwise: no tensor cores
  EXPECT_EQ(dw.cost.bytes_read, 4.0 * (1600 + 72 + 8 + 1600));  // x, w, bias, y (bias pass)
  EXPECT_EQ(dw.cost.bytes_written, 4.0 * (1600 + 1600));
  const OpProfiler::Row& pw = rows.at("conv2d_fwd [pointwise]");
  EXPECT_EQ(pw.cost.launches, 1);
  EXPECT_EQ(pw.cost.flops, 2.0 * 800 * 8);  // 800 outputs, 8 input channels each
  EXPECT_EQ(pw.cost.tensor_core_flops, pw.cost.flops);
  EXPECT_EQ(pw.cost.bytes_read, 4.0 * (1600 + 32));
  EXPECT_EQ(pw.cost.bytes_written, 4.0 * 800);
  const OpProfiler::Row& relu = rows.at("relu_fwd");  // the default: operands once, one launch
  EXPECT_EQ(relu.cost.launches, 1);
  EXPECT_EQ(relu.cost.bytes_read, 4.0 * 1600);
  EXPECT_EQ(relu.cost.bytes_written, 4.0 * 1600);
  const OpProfiler::Row& axpy = rows.at("axpy");  // y += a x reads y too
  EXPECT_EQ(axpy.cost.bytes_read, 4.0 * 3200);
  EXPECT_EQ(axpy.cost.bytes_written, 4.0 * 1600);
  OpCost total = prof.total_cost();
  EXPECT_EQ(total.launches, 5);

  // 300 optimizer slots take two multi-tensor launches (256 tensors each at most).
  std::vector<Tensor> ps, gs, ms;
  for (int i = 0; i < 300; ++i) {
    ps.push_back(Tensor::zeros(ctx, Shape{3}));
    gs.push_back(Tensor::zeros(ctx, Shape{3}));
    ms.push_back(Tensor::zeros(ctx, Shape{3}));
  }
  std::vector<OptimSlot> slots;
  for (int i = 0; i < 300; ++i)
    slots.push_back({&ps[size_t(i)], &gs[size_t(i)], &ms[size_t(i)], nullptr});
  prof.reset();
  ops::sgd_step(ctx, slots, SgdParams{0.1f, 0.9f, 0.0f, false});
  const OpProfiler::Row sgd = prof.report().at(0);
  EXPECT_EQ(sgd.op, "sgd_step");
  EXPECT_EQ(sgd.cost.launches, 2);
  EXPECT_EQ(sgd.cost.bytes_read, 300 * 3.0 * 12);     // param, momentum, gradient
  EXPECT_EQ(sgd.cost.bytes_written, 300 * 2.0 * 12);  // param, momentum
}

TEST(CostModel, DeviceModelTakesTheLargerOfLaunchAndRoofline) {
  DeviceModel d{"toy", 1e12, 1e13, 1e14, 5e-6, 1e-6};
  OpCost c;
  c.launches = 1;
  c.bytes_read = 2e6;  // 2 us at 1 TB/s
  c.flops = 3e7;       // 3 us at 10 TFLOP/s, 0.3 us on tensor cores
  c.tensor_core_flops = 3e7;
  EXPECT_DOUBLE_EQ(d.seconds(c, 1, false, false), 5e-6);  // eager launch dominates
  EXPECT_DOUBLE_EQ(d.seconds(c, 1, true, false), 3e-6);   // graph: compute dominates
  EXPECT_DOUBLE_EQ(d.seconds(c, 1, true, true), 2e-6);    // TF32: memory dominates
  OpCost two = c;
  two += c;  // two such calls
  EXPECT_DOUBLE_EQ(d.seconds(two, 2, false, false), 10e-6);
  EXPECT_DOUBLE_EQ(d.seconds(two, 2, true, false), 6e-6);
  EXPECT_EQ(d.seconds(c, 0, true, false), 0.0);
}

TEST(CostModel, OwnDepthwiseKernelsFuseTheBiasAndTakeTwoLaunchesForTheFilter) {
  Context ctx;  // own_depthwise_kernels by default
  Tensor x = Tensor::zeros(ctx, Shape{2, 8, 10, 10}), w = Tensor::zeros(ctx, Shape{8, 1, 5, 5});
  Tensor b = Tensor::zeros(ctx, Shape{8}), y = Tensor::zeros(ctx, Shape{2, 8, 10, 10});
  Tensor dw = Tensor::zeros(ctx, Shape{8, 1, 5, 5}), db = Tensor::zeros(ctx, Shape{8});
  const Conv2dParams p = Conv2dParams::make(1, 4, 2, 8);  // dil_conv_5x5
  OpProfiler prof(ctx);
  ops::conv2d_fwd(ctx, x, w, &b, y, p);
  ops::conv2d_bwd_filter(ctx, x, y, dw, &db, p);
  std::map<std::string, OpProfiler::Row> rows;
  for (const auto& row : prof.report()) rows[row.label()] = row;
  const OpCost& f = rows.at("conv2d_fwd [depthwise]").cost;
  EXPECT_EQ(f.launches, 1);
  EXPECT_EQ(f.bytes_read, 4.0 * (1600 + 200 + 8));
  EXPECT_EQ(f.bytes_written, 4.0 * 1600);
  EXPECT_EQ(f.flops, 2.0 * 1600 * 25);
  const OpCost& g = rows.at("conv2d_bwd_filter [depthwise]").cost;
  EXPECT_EQ(g.launches, 2);
  EXPECT_EQ(g.bytes_read, 4.0 * (1600 + 1600 + 200 + 8));
  EXPECT_EQ(g.bytes_written, 4.0 * (200 + 8));
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// The guard names the first step and quantity that went non-finite; the optimizer with
// skip_nonfinite leaves a step with a non-finite gradient out entirely.
TEST(DivergenceGuard, NamesTheFirstNonFiniteStepAndQuantity) {
  Context ctx;
  DivergenceGuard guard(ctx, {"training loss", "gradient norm"});
  Tensor ok = Tensor::from_vector(ctx, Shape{1}, {0.5f});
  Tensor bad = Tensor::from_vector(ctx, Shape{1}, {std::numeric_limits<float>::infinity()});
  auto where = [](int64_t i) { return detail::cat("step ", i + 1); };
  guard.watch(ctx, {&ok, &ok});
  guard.watch(ctx, {&ok, &ok});
  EXPECT_NO_THROW(guard.check("run", where, "advice"));
  guard.watch(ctx, {&ok, &bad});  // step 3: the gradient norm
  guard.watch(ctx, {&bad, &ok});  // step 4: counted, not the first
  const DivergenceGuard::Status st = guard.status();
  EXPECT_EQ(st.steps, 4);
  EXPECT_EQ(st.bad_steps, 2);
  EXPECT_EQ(st.first_bad, 2);
  EXPECT_EQ(st.quantity, "gradient norm");
  try {
    guard.check("run", where, "advice");
    ADD_FAILURE() << "no DivergenceError";
  } catch (const DivergenceError& e) {
    EXPECT_NE(std::string(e.what()).find("run: the gradient norm is not finite at step 3 (2 of "
                                         "the 4 steps"),
              std::string::npos)
        << e.what();
    EXPECT_EQ(exit_status_of(e), 4);
  }

  Parameter p;
  p.value = Tensor::from_vector(ctx, Shape{2}, {1.0f, 2.0f});
  p.grad = Tensor::from_vector(ctx, Shape{2}, {0.5f, std::nanf("")});
  Adam adam(ctx, {&p}, AdamParams{});
  adam.set_skip_nonfinite(true);
  adam.step(ctx);
  EXPECT_EQ(p.value.to_vector(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_TRUE(std::isnan(adam.last_grad_norm().item()));
  p.grad = Tensor::from_vector(ctx, Shape{2}, {0.5f, 0.5f});
  adam.step(ctx);
  EXPECT_NE(p.value.to_vector(), (std::vector<float>{1.0f, 2.0f}));
}

}  // namespace
}  // namespace cudarts
