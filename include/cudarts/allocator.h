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

  // Private pools for graph capture (used by StepGraph). While a pool is active, every
  // allocation is served from it and every block freed joins it; a block that belongs to a
  // pool returns to that pool when freed, also after capture, so the addresses a captured
  // graph uses are never handed to other code while the pool lives. A block that several
  // graphs may use (allocated in one capture, freed in another) is reused by none of them
  // until all but one have been released. release_pool() gives the pool's free blocks back
  // to the general cache and forgets the ones still in use.
  uint64_t begin_pool();
  void end_pool() noexcept;
  void release_pool(uint64_t pool) noexcept;
  // True while a pool is active, i.e. while a StepGraph captures on this device.
  bool capturing() const;
  // True while any pool has not been released (a captured graph may still be replayed).
  bool has_pools() const;
  // Bytes of cached blocks held by a pool (free, for reuse by that pool's graph only).
  size_t pool_cached_bytes(uint64_t pool) const;

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
  uint64_t active_pool_ = 0, next_pool_ = 1;
  struct Owned {
    size_t size;
    std::vector<uint64_t> pools;  // the graphs that may use the block
    bool free;
  };
  std::map<void*, Owned> owned_;  // every block reserved for one or more pools
  // Free blocks owned by exactly one pool, reusable by that pool's captures.
  std::map<uint64_t, std::multimap<size_t, void*>> pool_free_;
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
