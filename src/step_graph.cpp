// StepGraph: CUDA-graph capture and replay, and its exact emulation on the CPU backend.
#include "cudarts/step_graph.h"

#include <atomic>
#include <vector>

#include "backend.h"
#include "capture.h"
#include "cuda_bridge.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"
#include "cudarts/tensor.h"
#include "nvtx.h"

namespace cudarts {

struct StepGraph::Impl {
  explicit Impl(Context& c) : ctx(c), allocator(c.allocator_ptr()) {}
  Context& ctx;
  std::shared_ptr<Allocator> allocator;  // the pool is released even after the context is gone
  bool captured = false;
  detail::CaptureState state;
  std::vector<std::function<void(Backend&)>> recording;  // CPU
  void* exec = nullptr;                                  // CUDA
  int64_t nodes = 0, replays = 0;
  uint64_t pool = 0;
  Tensor rng_shift;  // i32[2]: the uint64 added to captured RNG offsets (outside the pool)
  uint64_t rng_used = 0, seed = 0;

  void reset() noexcept {
    if (exec) cuda_bridge::graph_destroy(exec);
    exec = nullptr;
    recording.clear();
    state = detail::CaptureState{};
    if (pool) allocator->release_pool(pool);
    pool = 0;
    captured = false;
    nodes = replays = 0;
  }
};

StepGraph::StepGraph(Context& ctx) : impl_(std::make_unique<Impl>(ctx)) {}

StepGraph::~StepGraph() {
  impl_->reset();
}

void StepGraph::capture(const std::function<void()>& step) {
  NvtxRange nvtx_range("StepGraph::capture");
  Impl& g = *impl_;
  Context& ctx = g.ctx;
  CUDARTS_CHECK(!ctx.capturing(), "StepGraph::capture: the context on ", ctx.device().str(),
                " is already capturing (captures cannot nest)");
  CUDARTS_CHECK(!ctx.allocator().capturing(), "StepGraph::capture: another context on ",
                ctx.device().str(), " is capturing");
  g.reset();
  ctx.backend().activate();
  if (!g.rng_shift.defined()) {
    g.rng_shift = Tensor::empty(ctx, Shape{2}, DType::I32);
    ops::set_words(ctx, g.rng_shift, {0u, 0u});
  }
  const uint64_t rng_start = ctx.rng_offset();
  static std::atomic<uint64_t> next_id{1};
  g.state.id = next_id++;
  g.state.rng_shift = static_cast<const uint64_t*>(g.rng_shift.raw());
  g.state.rng_start = rng_start;
  g.state.recording = ctx.device().is_cpu() ? &g.recording : nullptr;
  g.pool = ctx.allocator().begin_pool();
  ctx.set_capture_state(&g.state);
  const bool cuda = ctx.device().is_cuda();
  auto leave = [&] {
    ctx.set_capture_state(nullptr);
    ctx.allocator().end_pool();
    g.rng_used = ctx.rng_offset() - rng_start;
    ctx.set_rng_state(ctx.seed(), rng_start);  // capture ran nothing: no numbers were drawn
  };
  try {
    if (cuda) cuda_bridge::graph_begin_capture(ctx.stream());
    step();
    if (cuda) g.exec = cuda_bridge::graph_end_capture(ctx.stream(), &g.nodes);
  } catch (...) {
    if (cuda && !g.exec) cuda_bridge::graph_abort_capture(ctx.stream());
    leave();
    g.reset();
    throw;
  }
  leave();
  if (!cuda) g.nodes = static_cast<int64_t>(g.recording.size());
  g.seed = ctx.seed();
  g.captured = true;
}

void StepGraph::replay() {
  NvtxRange nvtx_range("StepGraph::replay");
  Impl& g = *impl_;
  Context& ctx = g.ctx;
  CUDARTS_CHECK(g.captured, "StepGraph::replay: nothing captured (call capture() first)");
  CUDARTS_CHECK(!ctx.capturing(), "StepGraph::replay while the context is capturing");
  CUDARTS_CHECK(ctx.seed() == g.seed, "StepGraph::replay: the context's RNG seed is ", ctx.seed(),
                " but the graph was captured with seed ", g.seed,
                " (the seed is frozen into the graph: capture again)");
  for (auto& fn : g.state.per_step) fn();
  if (g.rng_used > 0) {
    const uint64_t shift = ctx.rng_offset() - g.state.rng_start;
    ops::set_words(ctx, g.rng_shift,
                   {static_cast<uint32_t>(shift), static_cast<uint32_t>(shift >> 32)});
    ctx.set_rng_state(ctx.seed(), ctx.rng_offset() + g.rng_used);
  }
  if (g.exec) {
    ctx.backend().activate();
    cuda_bridge::graph_launch(g.exec, ctx.stream());
  } else {
    for (auto& op : g.recording) op(ctx.backend());
  }
  ++g.replays;
}

bool StepGraph::captured() const {
  return impl_->captured;
}
int64_t StepGraph::num_nodes() const {
  return impl_->nodes;
}
int64_t StepGraph::num_replays() const {
  return impl_->replays;
}
size_t StepGraph::pool_cached_bytes() const {
  return impl_->pool ? impl_->allocator->pool_cached_bytes(impl_->pool) : 0;
}

}  // namespace cudarts
