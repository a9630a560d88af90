// Context: picks the backend and allocator for a device; owns the RNG state.
#include "cudarts/context.h"

#include "cudarts/comm.h"

#include "backend.h"
#include "capture.h"
#include "cuda_bridge.h"
#include "cudarts/philox.h"

namespace cudarts {

Context::Context(Device device, ContextOptions options)
    : device_(device), options_(options), seed_(options.seed) {
  if (device.is_cpu()) {
    allocator_ = std::make_shared<CpuAllocator>();
    backend_ = make_cpu_backend(allocator_);
  } else {
    std::string why;
    CUDARTS_CHECK(cuda_bridge::available(&why), "cannot create a context on ", device.str(), ": ",
                  why);
    allocator_ = cuda_bridge::make_allocator(device.index);
    backend_ = cuda_bridge::make_backend(device.index, options_, allocator_);
  }
}

Context::~Context() = default;

Communicator& Context::communicator() const {
  return comm_ ? *comm_ : *local_communicator();
}

void Context::set_communicator(std::shared_ptr<Communicator> comm) {
  comm_ = std::move(comm);
}

bool Context::cuda_compiled() {
  return cuda_bridge::compiled();
}
bool Context::cuda_available() {
  return cuda_bridge::available(nullptr);
}
std::string Context::cuda_unavailable_reason() {
  std::string why;
  return cuda_bridge::available(&why) ? std::string() : why;
}

uint64_t Context::reserve_rng(uint64_t words) {
  const uint64_t first = rng_offset_;
  rng_offset_ += philox_blocks(words);
  return first;
}

void Context::set_rng_state(uint64_t seed, uint64_t offset) {
  CUDARTS_CHECK(!capture_, "Context::set_rng_state while a StepGraph is capturing");
  seed_ = seed;
  rng_offset_ = offset;
}

void Context::set_allow_tf32(bool allow) {
  options_.allow_tf32 = allow;
  backend_->set_allow_tf32(allow);
}

void Context::set_own_depthwise_kernels(bool own) {
  options_.own_depthwise_kernels = own;
  backend_->set_own_depthwise_kernels(own);
}

void Context::set_own_pointwise_kernels(bool own) {
  options_.own_pointwise_kernels = own;
  backend_->set_own_pointwise_kernels(own);
}

void Context::set_own_pool_kernels(bool own) {
  options_.own_pool_kernels = own;
  backend_->set_own_pool_kernels(own);
}

void Context::set_own_norm_kernels(bool own) {
  options_.own_norm_kernels = own;
  backend_->set_own_norm_kernels(own);
}

void Context::per_step(std::function<void()> fn) {
  if (capture_)
    capture_->per_step.push_back(std::move(fn));
  else
    fn();
}

void* Context::stream() const {
  return backend_->stream();
}
void Context::synchronize() {
  CUDARTS_CHECK(!capture_, "Context::synchronize while a StepGraph is capturing on ", device_.str(),
                ": a captured step cannot wait for the device");
  backend_->synchronize();
}

}  // namespace cudarts
