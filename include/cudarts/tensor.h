// Tensor: a dense, contiguous, row-major array on one device.
// Storage is an RAII Buffer drawn from a Context's allocator. A Tensor handle is
// move-only; share(), slice() and reshape() give further handles (views) on the same
// storage, clone() and to() give copies. There are no implicit device transfers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudarts/allocator.h"
#include "cudarts/device.h"
#include "cudarts/shape.h"

namespace cudarts {

class Context;

enum class DType { F32, I32 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

// Owning, move-only block of device or host memory.
class Buffer {
 public:
  Buffer(std::shared_ptr<Allocator> allocator, size_t bytes);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  // The allocator that owns the memory (nullptr for a borrowed buffer).
  Allocator* allocator() const { return allocator_.get(); }

 private:
  friend class Tensor;
  Buffer(void* data, size_t bytes, Device device);  // borrowed: never freed by this Buffer
  std::shared_ptr<Allocator> allocator_;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined tensor: defined() is false
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // Uninitialised storage on ctx's device.
  static Tensor empty(Context& ctx, const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(Context& ctx, const Shape& shape, DType dtype = DType::F32);
  static Tensor full(Context& ctx, const Shape& shape, float value);
  // A tensor over memory the caller owns: host memory for Device::cpu(), device memory of that
  // GPU for Device::cuda(i). No copy; cudarts never frees it. The caller keeps the memory alive
  // while the tensor, its views, or a StepGraph that captured it are in use. `data` must be
  // aligned to the element size (and non-null unless the shape is empty).
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device);
  // Host values copied to ctx's device (a visible upload).
  static Tensor from_vector(Context& ctx, const Shape& shape, const std::vector<float>& values);
  static Tensor from_vector_i32(Context& ctx, const Shape& shape,
                                const std::vector<int32_t>& values);

  bool defined() const { return static_cast<bool>(buffer_); }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const;
  std::string describe() const;  // e.g. "f32[2, 3, 8, 8] on cpu"

  // Raw pointers. On CUDA tensors these are device pointers.
  float* data() const;
  int32_t* data_i32() const;
  void* raw() const;

  // Another handle on the same storage (no copy).
  Tensor share() const;
  // A handle on the same memory that does not keep it alive (a raw pointer with a shape):
  // what a captured graph holds. Internal; valid while the owner lives (or its graph pool).
  Tensor borrow() const;
  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same number of elements.
  Tensor reshape(const Shape& shape) const;
  // Deep copy on the same device (uses ctx's allocator and stream; ctx must be on that device).
  Tensor clone(Context& ctx) const;
  // Deep copy onto dst's device. Reading a CUDA tensor waits for that device.
  Tensor to(Context& dst) const;
  // Host copy of the values (waits for the device when the tensor is on a GPU).
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_vector_i32() const;
  // The single value of a one-element tensor, read to the host.
  float item() const;

  // True when both handles view exactly the same elements of the same storage.
  bool same_storage(const Tensor& o) const { return buffer_ == o.buffer_; }
  // True when this is the only handle on its storage and covers all of it (nothing else sees
  // the memory: it may be moved).
  bool sole_handle() const {
    return buffer_ && buffer_.use_count() == 1 && offset_bytes_ == 0 &&
           nbytes() == buffer_->bytes();
  }

 private:
  std::shared_ptr<Buffer> buffer_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace cudarts
