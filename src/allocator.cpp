// Caching allocator: size-exact free lists over rounded sizes, statistics, CPU raw memory.
#include "cudarts/allocator.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>

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
  if (active_pool_ != 0) {
    auto& pool = pool_free_[active_pool_];
    auto pit = pool.find(size);
    if (pit != pool.end()) {
      p = pit->second;
      pool.erase(pit);
      owned_.at(p).free = false;
      ++stats_.num_cache_hits;
      stats_.current_bytes += size;
      if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
      return p;
    }
  }
  auto it = free_blocks_.find(size);
  if (it != free_blocks_.end()) {
    p = it->second;
    free_blocks_.erase(it);
    ++stats_.num_cache_hits;
  } else {
    try {
      p = raw_allocate(size);
    } catch (const Error& e) {
      // Out of memory: give the cache back to the system and try once more (not while a
      // graph captures: freeing device memory cannot be part of a capture).
      if (active_pool_ != 0)
        CUDARTS_FAIL("out of memory on ", device_.str(), " while capturing a StepGraph: requested ",
                     bytes, " bytes (", size, " rounded); ", stats_.current_bytes,
                     " bytes in use, peak ", stats_.peak_bytes, " bytes; ", e.what());
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
  if (active_pool_ != 0) owned_[p] = Owned{size, {active_pool_}, false};
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
  return p;
}

void Allocator::deallocate(void* ptr, size_t bytes) noexcept {
  if (!ptr) return;
  const size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.current_bytes -= size;
  auto it = owned_.find(ptr);
  if (it == owned_.end() && active_pool_ == 0) {
    free_blocks_.emplace(size, ptr);
    return;
  }
  // A pool's block, or one freed during capture (the graph may have used it before the free):
  // it stays reserved for every graph that may use it.
  if (it == owned_.end()) it = owned_.emplace(ptr, Owned{size, {}, true}).first;
  Owned& o = it->second;
  o.free = true;
  if (active_pool_ != 0 && std::find(o.pools.begin(), o.pools.end(), active_pool_) == o.pools.end())
    o.pools.push_back(active_pool_);
  if (o.pools.size() == 1) pool_free_[o.pools[0]].emplace(size, ptr);
  // Used by several graphs: parked (reused by none of them) until all but one are released.
}

uint64_t Allocator::begin_pool() {
  std::lock_guard<std::mutex> lock(mutex_);
  CUDARTS_CHECK(active_pool_ == 0, "allocator on ", device_.str(), ": pool ", active_pool_,
                " is already active (graph captures cannot nest)");
  active_pool_ = next_pool_++;
  pool_free_[active_pool_];
  return active_pool_;
}

void Allocator::end_pool() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  active_pool_ = 0;
}

void Allocator::release_pool(uint64_t pool) noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  if (active_pool_ == pool) active_pool_ = 0;
  auto fit = pool_free_.find(pool);
  if (fit != pool_free_.end()) {
    for (auto& [size, block] : fit->second) {
      free_blocks_.emplace(size, block);
      owned_.erase(block);
    }
    pool_free_.erase(fit);
  }
  for (auto it = owned_.begin(); it != owned_.end();) {
    Owned& o = it->second;
    auto pos = std::find(o.pools.begin(), o.pools.end(), pool);
    if (pos == o.pools.end()) {
      ++it;
      continue;
    }
    o.pools.erase(pos);
    if (o.pools.empty()) {  // in use: an ordinary block from now on
      it = owned_.erase(it);
      continue;
    }
    if (o.free && o.pools.size() == 1) pool_free_[o.pools[0]].emplace(o.size, it->first);
    ++it;
  }
}

bool Allocator::capturing() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return active_pool_ != 0;
}

bool Allocator::has_pools() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !pool_free_.empty();
}

size_t Allocator::pool_cached_bytes(uint64_t pool) const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t total = 0;
  auto fit = pool_free_.find(pool);
  if (fit != pool_free_.end())
    for (const auto& [size, block] : fit->second) total += size;
  return total;
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
  CUDARTS_CHECK(active_pool_ == 0, "Allocator::empty_cache on ", device_.str(),
                " while a StepGraph is capturing (freeing memory cannot be captured)");
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
  for (auto& [block, o] : owned_)
    if (o.free) raw_free(block);
  pool_free_.clear();
  owned_.clear();
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
