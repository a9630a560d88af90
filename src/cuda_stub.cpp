// CPU-only builds: the CUDA bridge reports that the backend was not compiled.
#include "backend.h"
#include "cuda_bridge.h"

namespace cudarts::cuda_bridge {

namespace {
[[noreturn]] void missing() {
  CUDARTS_FAIL(
      "this cudarts build has no CUDA backend (configured with CUDARTS_CUDA=OFF or "
      "without nvcc/cuDNN/cuBLAS)");
}
}  // namespace

bool compiled() {
  return false;
}
bool available(std::string* reason) {
  if (reason) *reason = "cudarts was built without the CUDA backend";
  return false;
}
std::shared_ptr<Allocator> make_allocator(int) {
  missing();
}
std::unique_ptr<Backend> make_backend(int, const ContextOptions&, std::shared_ptr<Allocator>) {
  missing();
}
void copy_to_host(void*, const void*, size_t, int) {
  missing();
}
void device_synchronize(int) {
  missing();
}
void* host_alloc_pinned(size_t) {
  missing();
}
void host_free_pinned(void*) noexcept {}
void* event_create(int) {
  missing();
}
void event_destroy(void*) noexcept {}
void event_record(void*, void*) {
  missing();
}
void event_synchronize(void*) {
  missing();
}
void* timing_event_create(int) {
  missing();
}
float event_elapsed_ms(void*, void*) {
  missing();
}
void graph_begin_capture(void*) {
  missing();
}
void* graph_end_capture(void*, int64_t*) {
  missing();
}
void graph_abort_capture(void*) noexcept {}
void graph_launch(void*, void*) {
  missing();
}
void graph_destroy(void*) noexcept {}

}  // namespace cudarts::cuda_bridge
