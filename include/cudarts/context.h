// Context: everything an op needs, passed explicitly (no global state):
// the device, its stream and library handles (CUDA), the op backend, the caching
// allocator and the counter-based RNG state (seed + offset).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cudarts/allocator.h"
#include "cudarts/device.h"

namespace cudarts {

class Backend;  // the op table implementation (internal)
class OpProfiler;
class Communicator;  // cudarts/comm.h
namespace detail {
struct CaptureState;  // graph capture in progress (internal, see step_graph.h)
}

struct ContextOptions {
  uint64_t seed = 0;
  // Allow TF32 tensor-core math in cuDNN/cuBLAS (faster, ~1e-3 relative error).
  // Off by default: strict FP32, which the tests use.
  bool allow_tf32 = false;
  // CUDA: serve depthwise convolutions (groups == C_in == C_out, kernel 1x1, 3x3, 3x5, 5x3,
  // 5x5 or 7x7, any stride, padding and dilation) with cudarts' own deterministic kernels
  // instead of cuDNN (see cuda/README.md for the exact rule). false: cuDNN for every
  // convolution, for A/B comparisons. No effect on the CPU backend.
  bool own_depthwise_kernels = true;
  // CUDA: serve dense 1x1 convolutions without padding (groups 1, any stride; with a bias the
  // forward only) with cudarts' own deterministic kernels instead of cuDNN (cuda/pointwise.cuh).
  // false: cuDNN, for A/B comparisons. No effect on the CPU backend.
  bool own_pointwise_kernels = true;
  // CUDA: serve 2-D max and average pooling (windows of at most 255 elements) with cudarts'
  // own kernels (the CPU's arithmetic and order: the same bits; cuda/pool.cuh) instead of
  // cuDNN's. false: cuDNN, for A/B comparisons. No effect on the CPU backend.
  bool own_pool_kernels = true;
  // CUDA: serve BatchNorm without affine parameters (every BatchNorm of the search network) in
  // training with cudarts' own kernels (the normalised-mix kernels with one candidate:
  // statistics in a fixed order, normalisation, backward) instead of cuDNN's. Off by default:
  // on an H200 (2026-12-04) the search step was 3.7 ms faster on cuDNN's (163 vs 167 ms per
  // replayed iteration). No effect on the CPU backend.
  bool own_norm_kernels = false;
  // CUDA: run every op of the context on this cudaStream_t (passed as void*), owned by the
  // caller, who keeps it alive while the context lives; nullptr: the context creates its own
  // non-blocking stream. Lets an application order cudarts work with its own kernels without
  // events. Not the legacy default stream if StepGraph capture is wanted.
  void* stream = nullptr;
};

class Context {
 public:
  explicit Context(Device device = Device::cpu(), ContextOptions options = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // True when the CUDA backend was compiled in and a usable GPU is present.
  static bool cuda_available();
  // Why cuda_available() is false (empty when it is true).
  static std::string cuda_unavailable_reason();
  static bool cuda_compiled();

  Device device() const { return device_; }
  Backend& backend() { return *backend_; }
  Allocator& allocator() { return *allocator_; }
  const std::shared_ptr<Allocator>& allocator_ptr() const { return allocator_; }

  // RNG: a draw of n 32-bit words reserves philox_blocks(n) counter blocks and returns
  // the first; successive draws never overlap.
  uint64_t seed() const { return seed_; }
  uint64_t rng_offset() const { return rng_offset_; }
  uint64_t reserve_rng(uint64_t words);
  void set_rng_state(uint64_t seed, uint64_t offset);

  bool allow_tf32() const { return options_.allow_tf32; }
  void set_allow_tf32(bool allow);
  bool own_depthwise_kernels() const { return options_.own_depthwise_kernels; }
  void set_own_depthwise_kernels(bool own);
  bool own_pointwise_kernels() const { return options_.own_pointwise_kernels; }
  void set_own_pointwise_kernels(bool own);
  bool own_pool_kernels() const { return options_.own_pool_kernels; }
  void set_own_pool_kernels(bool own);
  bool own_norm_kernels() const { return options_.own_norm_kernels; }
  void set_own_norm_kernels(bool own);

  // The cudaStream_t of a CUDA context (nullptr on CPU), as an opaque pointer.
  void* stream() const;
  // Waits until all work queued on this context has finished.
  void synchronize();

  // Graph capture (see step_graph.h): true while a StepGraph records this context's work.
  bool capturing() const { return capture_ != nullptr; }
  // Host-side work that belongs to every step (an optimizer's step counter, learning rate
  // and bias corrections): runs now, or, while a StepGraph captures, is kept and runs
  // before every replay instead (a captured graph does not re-run host code).
  void per_step(std::function<void()> fn);
  // The ranks this context trains with (cudarts/comm.h): the local communicator (one process)
  // unless set. Data-parallel runs attach the job's communicator.
  Communicator& communicator() const;
  void set_communicator(std::shared_ptr<Communicator> comm);
  // The attached OpProfiler (see profiler.h), or nullptr.
  OpProfiler* op_profiler() const { return profiler_; }
  void set_op_profiler(OpProfiler* p) { profiler_ = p; }
  // Internal (StepGraph, op front door).
  detail::CaptureState* capture_state() const { return capture_; }
  const char* current_op() const { return current_op_; }  // the op being dispatched
  void set_current_op(const char* op) { current_op_ = op; }
  void set_capture_state(detail::CaptureState* state) { capture_ = state; }

 private:
  Device device_;
  ContextOptions options_;
  uint64_t seed_ = 0;
  uint64_t rng_offset_ = 0;
  detail::CaptureState* capture_ = nullptr;
  OpProfiler* profiler_ = nullptr;
  const char* current_op_ = "";
  std::shared_ptr<Allocator> allocator_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<Communicator> comm_;
};

}  // namespace cudarts
