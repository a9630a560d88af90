// Tensor and Buffer: storage from the context's allocator, views, explicit copies.
#include "cudarts/tensor.h"

#include <cstdint>
#include <cstring>

#include "backend.h"
#include "cuda_bridge.h"
#include "cudarts/context.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts {

namespace {
// Host transfers cannot be part of a captured graph, and on the CPU backend a read during
// capture would see values the recorded work has not produced yet: refuse both, by name.
void check_not_capturing(const Allocator* a, const char* what, const std::string& tensor) {
  CUDARTS_CHECK(a == nullptr || !a->capturing(), what, " of ", tensor, " while a StepGraph is ",
                "capturing on ", a->device().str(),
                ": host transfers cannot be captured; read results after replay(), and upload "
                "inputs into static tensors before it");
}
}  // namespace

size_t dtype_size(DType t) {
  return t == DType::F32 ? sizeof(float) : sizeof(int32_t);
}
const char* dtype_name(DType t) {
  return t == DType::F32 ? "f32" : "i32";
}

Buffer::Buffer(std::shared_ptr<Allocator> allocator, size_t bytes)
    : allocator_(std::move(allocator)), bytes_(bytes), device_(allocator_->device()) {
  data_ = allocator_->allocate(bytes);
}

Buffer::Buffer(void* data, size_t bytes, Device device)
    : data_(data), bytes_(bytes), device_(device) {}

Buffer::~Buffer() {
  if (allocator_) allocator_->deallocate(data_, bytes_);
}

Buffer::Buffer(Buffer&& o) noexcept
    : allocator_(std::move(o.allocator_)), data_(o.data_), bytes_(o.bytes_), device_(o.device_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (allocator_) allocator_->deallocate(data_, bytes_);
    allocator_ = std::move(o.allocator_);
    data_ = o.data_;
    bytes_ = o.bytes_;
    device_ = o.device_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Tensor Tensor::empty(Context& ctx, const Shape& shape, DType dtype) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.buffer_ = std::make_shared<Buffer>(ctx.allocator_ptr(),
                                       static_cast<size_t>(shape.numel()) * dtype_size(dtype));
  return t;
}

Tensor Tensor::zeros(Context& ctx, const Shape& shape, DType dtype) {
  Tensor t = empty(ctx, shape, dtype);
  ops::fill(ctx, t, 0.0f);
  return t;
}

Tensor Tensor::full(Context& ctx, const Shape& shape, float value) {
  Tensor t = empty(ctx, shape);
  ops::fill(ctx, t, value);
  return t;
}

Tensor Tensor::from_vector(Context& ctx, const Shape& shape, const std::vector<float>& values) {
  CUDARTS_CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
                "Tensor::from_vector: ", values.size(), " values given for shape ", shape, " (",
                shape.numel(), " elements)");
  check_not_capturing(&ctx.allocator(), "Tensor::from_vector",
                      "a new tensor of shape " + shape.str());
  Tensor t = empty(ctx, shape);
  ctx.backend().copy_bytes(t.raw(), t.device(), values.data(), Device::cpu(), t.nbytes());
  return t;
}

Tensor Tensor::from_vector_i32(Context& ctx, const Shape& shape,
                               const std::vector<int32_t>& values) {
  CUDARTS_CHECK(static_cast<int64_t>(values.size()) == shape.numel(),
                "Tensor::from_vector_i32: ", values.size(), " values given for shape ", shape);
  check_not_capturing(&ctx.allocator(), "Tensor::from_vector_i32",
                      "a new tensor of shape " + shape.str());
  Tensor t = empty(ctx, shape, DType::I32);
  ctx.backend().copy_bytes(t.raw(), t.device(), values.data(), Device::cpu(), t.nbytes());
  return t;
}

Device Tensor::device() const {
  return buffer_ ? buffer_->device() : Device::cpu();
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return detail::cat(dtype_name(dtype_), shape_, " on ", device().str());
}

void* Tensor::raw() const {
  CUDARTS_CHECK(defined(), "access to the data of an undefined tensor");
  return buffer_->data() ? static_cast<char*>(buffer_->data()) + offset_bytes_ : nullptr;
}

float* Tensor::data() const {
  CUDARTS_CHECK(dtype_ == DType::F32, "Tensor::data(): tensor is ", describe(), ", expected f32");
  return static_cast<float*>(raw());
}

int32_t* Tensor::data_i32() const {
  CUDARTS_CHECK(dtype_ == DType::I32, "Tensor::data_i32(): tensor is ", describe(),
                ", expected i32");
  return static_cast<int32_t*>(raw());
}

Tensor Tensor::share() const {
  Tensor t;
  t.buffer_ = buffer_;
  t.offset_bytes_ = offset_bytes_;
  t.shape_ = shape_;
  t.dtype_ = dtype_;
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device) {
  for (int i = 0; i < shape.ndim(); ++i)
    CUDARTS_CHECK(shape[i] >= 0, "Tensor::wrap: shape ", shape, " has a negative extent");
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  CUDARTS_CHECK(data != nullptr || bytes == 0, "Tensor::wrap: null pointer for shape ", shape);
  CUDARTS_CHECK(reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) == 0, "Tensor::wrap: ", data,
                " is not aligned to the ", dtype_size(dtype), "-byte elements of ",
                dtype_name(dtype));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.buffer_.reset(new Buffer(data, bytes, device));
  return t;
}

Tensor Tensor::borrow() const {
  Tensor t = share();
  if (buffer_) t.buffer_.reset(new Buffer(buffer_->data(), buffer_->bytes(), buffer_->device()));
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  CUDARTS_CHECK(defined() && ndim() >= 1, "Tensor::slice on ", describe());
  CUDARTS_CHECK(0 <= begin && begin <= end && end <= shape_[0], "Tensor::slice [", begin, ", ", end,
                ") out of range for ", describe());
  Tensor t = share();
  const int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  t.offset_bytes_ += static_cast<size_t>(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  CUDARTS_CHECK(shape.numel() == numel(), "Tensor::reshape of ", describe(), " to ", shape,
                ": element counts differ (", numel(), " vs ", shape.numel(), ")");
  Tensor t = share();
  t.shape_ = shape;
  return t;
}

Tensor Tensor::clone(Context& ctx) const {
  CUDARTS_CHECK(defined(), "Tensor::clone of an undefined tensor");
  CUDARTS_CHECK(ctx.device() == device(), "Tensor::clone: tensor is ", describe(),
                " but the context is on ", ctx.device().str());
  Tensor t = empty(ctx, shape_, dtype_);
  ops::copy(ctx, *this, t);
  return t;
}

Tensor Tensor::to(Context& dst) const {
  CUDARTS_CHECK(defined(), "Tensor::to on an undefined tensor");
  check_not_capturing(buffer_->allocator(), "Tensor::to", describe());
  check_not_capturing(&dst.allocator(), "Tensor::to", describe());
  Tensor t = empty(dst, shape_, dtype_);
  if (nbytes() == 0) return t;
  if (device().is_cuda()) {
    if (dst.device().is_cpu()) {
      cuda_bridge::copy_to_host(t.raw(), raw(), nbytes(), device().index);
      return t;
    }
    // Work queued on another context's stream must be finished before dst reads it, and the
    // copy must be finished before this tensor's buffer can return to its allocator.
    cuda_bridge::device_synchronize(device().index);
    dst.backend().copy_bytes(t.raw(), t.device(), raw(), device(), nbytes());
    dst.synchronize();
    return t;
  }
  dst.backend().copy_bytes(t.raw(), t.device(), raw(), device(), nbytes());
  return t;
}

std::vector<float> Tensor::to_vector() const {
  CUDARTS_CHECK(defined(), "Tensor::to_vector on an undefined tensor");
  CUDARTS_CHECK(dtype_ == DType::F32, "Tensor::to_vector on ", describe(),
                ": use to_vector_i32 for i32");
  check_not_capturing(buffer_->allocator(), "Tensor::to_vector", describe());
  std::vector<float> v(static_cast<size_t>(numel()));
  if (v.empty()) return v;
  if (device().is_cuda())
    cuda_bridge::copy_to_host(v.data(), raw(), nbytes(), device().index);
  else
    std::memcpy(v.data(), raw(), nbytes());
  return v;
}

std::vector<int32_t> Tensor::to_vector_i32() const {
  CUDARTS_CHECK(defined() && dtype_ == DType::I32, "Tensor::to_vector_i32 on ", describe());
  check_not_capturing(buffer_->allocator(), "Tensor::to_vector_i32", describe());
  std::vector<int32_t> v(static_cast<size_t>(numel()));
  if (v.empty()) return v;
  if (device().is_cuda())
    cuda_bridge::copy_to_host(v.data(), raw(), nbytes(), device().index);
  else
    std::memcpy(v.data(), raw(), nbytes());
  return v;
}

float Tensor::item() const {
  CUDARTS_CHECK(numel() == 1, "Tensor::item on ", describe(), ": expected one element");
  return to_vector()[0];
}

}  // namespace cudarts
