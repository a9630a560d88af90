// StepGraph: record the device work of one training step once, replay it many times.
//
// On CUDA this is a CUDA graph: capture() runs `step` with the context's stream in capture
// mode (the work is recorded, not executed) and instantiates the graph; replay() launches
// it with one call, removing the per-kernel launch cost of a step of hundreds of kernels.
// On the CPU backend capture() records every op call and replay() runs the recording, with
// exactly the semantics of a CUDA graph, so code that is wrong under capture fails in the
// CPU tests too.
//
// What a captured step may do, and what it may not:
// - Every op, layer, MixedOp in deterministic or Continuous mode, optimizer step (its
//   learning rate and step count are written before each replay through
//   Context::per_step), gradient clipping, drop-path and other RNG ops (each replay draws
//   fresh numbers: the captured counter offsets are shifted by the context's RNG offset at
//   replay time, so N replays draw what N eager steps would).
// - No host reads or uploads (Tensor::to_vector/item/to/from_vector throw while capturing),
//   so no sampled MixedOps (Binary, BinaryMasked, ProxylessNAS, MovingAverage choose their
//   ops on the host), and no host-side decisions that should change from step to step:
//   host code runs once, during capture; shapes, pointers and plain scalars are frozen.
// - Inputs: tensors the step reads that were created before capture (parameters, the
//   batch) must stay alive while the graph is used; write each new batch into the same
//   tensor (ops::copy) before replay(). Tensors created during capture (activations,
//   the loss) live in the graph's private memory pool and are rewritten by every replay.
// - Objects whose host work was captured (optimizers stepped in the step, through
//   Context::per_step) must outlive the graph's replays; capture() and replay() need the
//   context alive (destroying the graph after its context is fine).
// Run the step once eagerly before capturing (a warm-up: cuDNN algorithm choice, cached
// buffers), as with any CUDA-graph capture; on CUDA, some first uses refuse to be captured.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "cudarts/context.h"

namespace cudarts {

class StepGraph {
 public:
  explicit StepGraph(Context& ctx);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Records what `step` queues on the context (replacing an earlier capture). If `step`
  // throws, nothing is kept, the context leaves capture mode and the error propagates.
  void capture(const std::function<void()>& step);
  // Runs the per-step host work registered during capture, then the recorded work.
  void replay();

  bool captured() const;
  // Recorded op calls (CPU) or graph nodes (CUDA).
  int64_t num_nodes() const;
  int64_t num_replays() const;
  // Bytes cached in the graph's private pool (free blocks kept for its replays).
  size_t pool_cached_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudarts
