// CUDA backend plumbing: device probing, the device allocator, stream and library handles,
// copies, and the bridge that host code (src/) calls through.
#include <string>

#include "cuda_backend.h"
#include "cuda_bridge.h"
#include "cudarts/context.h"

namespace cudarts {

namespace cuda {

CudaAllocator::CudaAllocator(int device) : Allocator(Device::cuda(device)) {}
CudaAllocator::~CudaAllocator() {
  release_all();
}

void* CudaAllocator::raw_allocate(size_t bytes) {
  void* p = nullptr;
  // A cache miss while a StepGraph captures is intended (the block joins the graph's pool
  // and stays reserved for it), but cudaMalloc counts as capture-unsafe in the thread-local
  // mode the capture uses: relax the mode of this thread around the call.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  CUDARTS_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  cudaError_t set = cudaSetDevice(device().index);
  cudaError_t err = set == cudaSuccess ? cudaMalloc(&p, bytes) : set;
  cudaThreadExchangeStreamCaptureMode(&mode);
  CUDARTS_CUDA_CHECK(err, "(cudaMalloc of ", bytes, " bytes on ", device().str(), ")");
  return p;
}

void CudaAllocator::raw_free(void* ptr) noexcept {
  cudaFree(ptr);
}

CudaBackend::CudaBackend(int device, const ContextOptions& options,
                         std::shared_ptr<Allocator> allocator)
    : device_(device),
      allow_tf32_(options.allow_tf32),
      own_depthwise_(options.own_depthwise_kernels),
      own_pointwise_(options.own_pointwise_kernels),
      own_pool_(options.own_pool_kernels),
      own_norm_(options.own_norm_kernels),
      allocator_(std::move(allocator)) {
  CUDARTS_CUDA_CHECK(cudaSetDevice(device_));
  if (options.stream) {
    stream_ = static_cast<cudaStream_t>(options.stream);
    owns_stream_ = false;
  } else {
    CUDARTS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  CUDARTS_CUBLAS_CHECK(cublasCreate(&cublas_));
  CUDARTS_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  // A workspace of our own: cuBLAS then allocates nothing per call, also not during a graph
  // capture, and its memory shows in the allocator's statistics. 32 MiB is cuBLAS's
  // recommendation for Hopper. Set after cublasSetStream, which resets it.
  constexpr size_t kCublasWorkspace = size_t(32) << 20;
  cublas_workspace_.emplace(allocator_, kCublasWorkspace);
  CUDARTS_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_->data(), kCublasWorkspace));
  CUDARTS_CUDNN_CHECK(cudnnCreate(&cudnn_));
  CUDARTS_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  set_allow_tf32(options.allow_tf32);
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_ && owns_stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::activate() {
  int current = -1;
  CUDARTS_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device_) CUDARTS_CUDA_CHECK(cudaSetDevice(device_), "(activating ", device_, ")");
}

void CudaBackend::set_allow_tf32(bool allow) {
  allow_tf32_ = allow;
  CUDARTS_CUBLAS_CHECK(
      cublasSetMathMode(cublas_, allow ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
}

void CudaBackend::copy_bytes(void* dst, Device dst_device, const void* src, Device src_device,
                             size_t bytes) {
  if (bytes == 0) return;
  CUDARTS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_), "(", bytes,
                     " bytes from ", src_device.str(), " to ", dst_device.str(), ")");
}

void CudaBackend::synchronize() {
  CUDARTS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace cuda

namespace cuda_bridge {

bool compiled() {
  return true;
}

bool available(std::string* reason) {
  static const std::string why = [] {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return std::string("no usable GPU: cudaGetDeviceCount returned ") + cudaGetErrorName(e) +
             " (" + cudaGetErrorString(e) + ")";
    }
    if (count == 0) return std::string("no usable GPU: cudaGetDeviceCount found 0 devices");
    return std::string();
  }();
  if (reason) *reason = why;
  return why.empty();
}

std::shared_ptr<Allocator> make_allocator(int device) {
  return std::make_shared<cuda::CudaAllocator>(device);
}

std::unique_ptr<Backend> make_backend(int device, const ContextOptions& options,
                                      std::shared_ptr<Allocator> allocator) {
  return std::make_unique<cuda::CudaBackend>(device, options, std::move(allocator));
}

void copy_to_host(void* dst, const void* src, size_t bytes, int device) {
  CUDARTS_CUDA_CHECK(cudaSetDevice(device));
  CUDARTS_CUDA_CHECK(cudaDeviceSynchronize(), "(before reading ", bytes, " bytes to the host)");
  CUDARTS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "(", bytes, " bytes)");
}

void device_synchronize(int device) {
  CUDARTS_CUDA_CHECK(cudaSetDevice(device));
  CUDARTS_CUDA_CHECK(cudaDeviceSynchronize());
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  CUDARTS_CUDA_CHECK(cudaMallocHost(&p, bytes), "(", bytes, " bytes of pinned host memory)");
  return p;
}

void host_free_pinned(void* ptr) noexcept {
  if (ptr) cudaFreeHost(ptr);
}

void* event_create(int device) {
  CUDARTS_CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  CUDARTS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}

void event_destroy(void* event) noexcept {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

void event_record(void* event, void* stream) {
  CUDARTS_CUDA_CHECK(
      cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

void event_synchronize(void* event) {
  CUDARTS_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
}

void* timing_event_create(int device) {
  CUDARTS_CUDA_CHECK(cudaSetDevice(device));
  cudaEvent_t e = nullptr;
  CUDARTS_CUDA_CHECK(cudaEventCreate(&e), "(timing event)");
  return e;
}

float event_elapsed_ms(void* start, void* end) {
  float ms = 0.0f;
  CUDARTS_CUDA_CHECK(
      cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

void graph_begin_capture(void* stream) {
  CUDARTS_CUDA_CHECK(
      cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal),
      "(StepGraph::capture)");
}

void* graph_end_capture(void* stream, int64_t* nodes) {
  cudaGraph_t graph = nullptr;
  CUDARTS_CUDA_CHECK(cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph),
                     "(StepGraph::capture: the captured work used an operation that cannot be "
                     "captured)");
  size_t count = 0;
  cudaError_t err = cudaGraphGetNodes(graph, nullptr, &count);
  cudaGraphExec_t exec = nullptr;
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable graph does not need it
  CUDARTS_CUDA_CHECK(err, "(StepGraph::capture: instantiating a graph of ", count, " nodes)");
  *nodes = static_cast<int64_t>(count);
  return exec;
}

void graph_abort_capture(void* stream) noexcept {
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // clear the (non-sticky) error the failed capture left
}

void graph_launch(void* exec, void* stream) {
  CUDARTS_CUDA_CHECK(
      cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)),
      "(StepGraph::replay)");
}

void graph_destroy(void* exec) noexcept {
  if (exec) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

}  // namespace cuda_bridge
}  // namespace cudarts
