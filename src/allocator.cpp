// Caching allocator: size-exact free lists over rounded sizes, statistics, CPU raw memory.
#include "cudarts/allocator.h"

#include <cstdlib>

#include "cudarts/error.h"

namespace cudarts {

namespace {
constexpr size_t kAlignment = 256;
constexpr size_t kSmallLimit = size_t(1) << 20;    // below: round to 256 B
constexpr size_t kLargeGranule = size_t(1) << 16;  // above: round to 64 KiB
}  // namespace

Allocator::Allocator(Device device) : device_(device) {}
Allocator::~Allocator() = default;

size_t Allocator::round_size(size_t bytes) {
  const size_t g = bytes < kSmallLimit ? kAlignment : kLargeGranule;
  return (bytes + g - 1) / g * g;
}

void* Allocator::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.num_requests;
  void* p = nullptr;
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end()) {
    p = it->second;
    free_blocks_.erase(it);
    ++stats_.num_cache_hits;
  } else {
    try {
      p = raw_allocate(size);
    } catch (const Error&) {
      // Out of memory: give the cache back to the system and try once more.
      for (auto& [s, block] : free_blocks_) {
        raw_free(block);
        ++stats_.num_frees;
        stats_.reserved_bytes -= s;
      }
      free_blocks_.clear();
      try {
        p = raw_allocate(size);
      } catch (const Error& e) {
        CUDARTS_FAIL("out of memory on ", device_.str(), ": requested ", bytes, " bytes (", size,
                     " rounded); ", stats_.current_bytes, " bytes in use, peak ", stats_.peak_bytes,
                     " bytes; ", e.what());
      }
    }
    ++stats_.num_allocations;
    stats_.reserved_bytes += size;
    if (stats_.reserved_bytes > stats_.peak_reserved_bytes)
      stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
  return p;
}

void Allocator::deallocate(void* ptr, size_t bytes) noexcept {
  if (!ptr) return;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.current_bytes -= size;
  free_blocks_.emplace(size, ptr);
}

AllocatorStats Allocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Allocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
  stats_.peak_reserved_bytes = stats_.reserved_bytes;
}

void Allocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, block] : free_blocks_) {
    raw_free(block);
    ++stats_.num_frees;
    stats_.reserved_bytes -= size;
  }
  free_blocks_.clear();
}

void Allocator::release_all() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, block] : free_blocks_) raw_free(block);
  free_blocks_.clear();
}

CpuAllocator::CpuAllocator() : Allocator(Device::cpu()) {}
CpuAllocator::~CpuAllocator() {
  release_all();
}

void* CpuAllocator::raw_allocate(size_t bytes) {
  void* p = std::aligned_alloc(kAlignment, bytes);
  CUDARTS_CHECK(p != nullptr, "aligned_alloc of ", bytes, " bytes failed");
  return p;
}

void CpuAllocator::raw_free(void* ptr) noexcept {
  std::free(ptr);
}

}  // namespace cudarts
