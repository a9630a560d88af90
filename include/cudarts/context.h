// Context: everything an op needs, passed explicitly (no global state):
// the device, its stream and library handles (CUDA), the op backend, the caching
// allocator and the counter-based RNG state (seed + offset).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "cudarts/allocator.h"
#include "cudarts/device.h"

namespace cudarts {

class Backend;  // the op table implementation (internal)

struct ContextOptions {
  uint64_t seed = 0;
  // Allow TF32 tensor-core math in cuDNN/cuBLAS (faster, ~1e-3 relative error).
  // Off by default: strict FP32, which the tests use.
  bool allow_tf32 = false;
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

  // The cudaStream_t of a CUDA context (nullptr on CPU), as an opaque pointer.
  void* stream() const;
  // Waits until all work queued on this context has finished.
  void synchronize();

 private:
  Device device_;
  ContextOptions options_;
  uint64_t seed_ = 0;
  uint64_t rng_offset_ = 0;
  std::shared_ptr<Allocator> allocator_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace cudarts
