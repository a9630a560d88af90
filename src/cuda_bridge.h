// The seam between host code and the CUDA backend (internal). Defined in cuda/ when the
// backend is compiled, in cuda_stub.cpp otherwise. Plain C++ types only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cudarts/allocator.h"

namespace cudarts {
class Backend;
struct ContextOptions;

namespace cuda_bridge {
bool compiled();
// True when a GPU can be used; otherwise `reason` says why.
bool available(std::string* reason);
std::shared_ptr<Allocator> make_allocator(int device);
std::unique_ptr<Backend> make_backend(int device, const ContextOptions& options,
                                      std::shared_ptr<Allocator> allocator);
// Waits for all work on `device`, then copies `bytes` from device memory to host memory.
void copy_to_host(void* dst, const void* src, size_t bytes, int device);
void device_synchronize(int device);
// Page-locked host memory (fast, asynchronous uploads) and events, for the batch prefetcher.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* ptr) noexcept;
void* event_create(int device);
void event_destroy(void* event) noexcept;
void event_record(void* event, void* stream);
void event_synchronize(void* event);
// Events that record time (OpProfiler) and the milliseconds between two recorded ones.
void* timing_event_create(int device);
float event_elapsed_ms(void* start, void* end);
// CUDA graphs (StepGraph): capture the work queued on `stream` (thread-local capture mode),
// instantiate it, launch it, destroy it. end_capture returns the executable graph and its
// node count; abort_capture ends a failed capture and discards what it recorded.
void graph_begin_capture(void* stream);
void* graph_end_capture(void* stream, int64_t* nodes);
void graph_abort_capture(void* stream) noexcept;
void graph_launch(void* exec, void* stream);
void graph_destroy(void* exec) noexcept;
}  // namespace cuda_bridge
}  // namespace cudarts
