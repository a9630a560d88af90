// Graph capture state shared by Context, the op front door (ops.cpp) and StepGraph (internal).
// On CUDA, capture is the stream's: kernels launched on the context's stream while a
// StepGraph captures become graph nodes. On the CPU backend the op front door records each
// op call (with borrowed tensor handles: raw pointers, as in a CUDA graph) instead of running
// it, and replay runs the recording; this emulates CUDA-graph semantics exactly (values and
// pointers frozen at capture, host code not re-run), so capture hazards show up in CPU tests.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

namespace cudarts {

class Backend;

namespace detail {

struct CaptureState {
  uint64_t id = 0;  // unique per capture
  // CPU backend: the recorded op calls (nullptr on CUDA, where the stream records).
  std::vector<std::function<void(Backend&)>>* recording = nullptr;
  // Host work registered through Context::per_step, run before every replay.
  std::vector<std::function<void()>> per_step;
  // RNG ops captured in the graph add *rng_shift (a uint64 in a device tensor of the graph)
  // to their counter offset; replay writes it so each replay draws fresh numbers.
  const uint64_t* rng_shift = nullptr;
  uint64_t rng_start = 0;  // the context's RNG offset when capture began
};

}  // namespace detail
}  // namespace cudarts
