// Caching allocator with statistics, the same on CPU and GPU.
// Blocks are rounded up and kept in size-exact free lists, so a training loop that
// allocates the same sizes every step stops reaching the system (malloc / cudaMalloc)
// after its first step. Thread-safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cudarts/device.h"

namespace cudarts {

struct AllocatorStats {
  size_t current_bytes = 0;   // bytes handed out and not yet returned
  size_t peak_bytes = 0;      // maximum of current_bytes since creation or reset_peak()
  size_t reserved_bytes = 0;  // bytes obtained from the system (in use + cached)
  size_t peak_reserved_bytes = 0;
  uint64_t num_allocations = 0;  // underlying system allocations (malloc / cudaMalloc)
  uint64_t num_frees = 0;        // underlying system frees
  uint64_t num_requests = 0;     // allocate() calls
  uint64_t num_cache_hits = 0;   // allocate() calls served from the cache
};

class Allocator {
 public:
  explicit Allocator(Device device);
  virtual ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  Device device() const { return device_; }
  // Returns at least `bytes` bytes, 256-byte aligned. Zero bytes gives nullptr.
  void* allocate(size_t bytes);
  // `bytes` must be what was passed to allocate() for `ptr`.
  void deallocate(void* ptr, size_t bytes) noexcept;

  AllocatorStats stats() const;
  void reset_peak();
  // Returns every cached (unused) block to the system.
  void empty_cache();
  // The size actually reserved for a request of `bytes`.
  static size_t round_size(size_t bytes);

 protected:
  // The system allocation. Throws cudarts::Error (naming the size) on failure.
  virtual void* raw_allocate(size_t bytes) = 0;
  virtual void raw_free(void* ptr) noexcept = 0;
  // Call from the most-derived destructor: frees the cache while raw_free is still callable.
  void release_all() noexcept;

 private:
  Device device_;
  mutable std::mutex mutex_;
  std::multimap<size_t, void*> free_blocks_;  // rounded size -> block
  AllocatorStats stats_;
};

// Host memory (aligned_alloc).
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator();
  ~CpuAllocator() override;

 protected:
  void* raw_allocate(size_t bytes) override;
  void raw_free(void* ptr) noexcept override;
};

}  // namespace cudarts
