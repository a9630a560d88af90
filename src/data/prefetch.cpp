// Dataset padding and the batch prefetcher (a worker thread gathering the next host batch).
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "backend.h"
#include "cuda_bridge.h"
#include "cudarts/context.h"
#include "cudarts/data.h"
#include "cudarts/error.h"

namespace cudarts {

Dataset Dataset::padded(int64_t size, float value) const {
  CUDARTS_CHECK(size >= h && size >= w, "Dataset '", name, "': cannot pad ", h, "x", w, " to ",
                size, "x", size);
  if (size == h && size == w) return *this;
  Dataset d = metadata();
  d.h = size;
  d.w = size;
  d.labels = labels;
  d.images.assign(size_t(n * c * size * size), value);
  const int64_t top = (size - h) / 2, left = (size - w) / 2;
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t r = 0; r < h; ++r)
      std::memcpy(d.images.data() + (i * size + top + r) * size + left,
                  images.data() + (i * h + r) * w, sizeof(float) * size_t(w));
  return d;
}

namespace {
constexpr int kSlots = 3;  // batches in flight: being filled, ready, being uploaded
}  // namespace

// One host batch buffer. With a GPU context: page-locked memory plus the event recorded after
// its upload was enqueued.
struct Slot {
  float* images = nullptr;
  int32_t* labels = nullptr;
  std::vector<float> images_pageable;
  std::vector<int32_t> labels_pageable;
  void* uploaded = nullptr;  // CUDA event, or nullptr
  bool pending_upload = false;
  int64_t count = 0;
};

struct BatchPrefetcher::State {
  std::mutex mutex;
  std::condition_variable cv;
  Slot slots[kSlots];
  std::deque<int> ready;  // slots filled, in batch order
  std::deque<int> free;   // slots the worker may fill
  bool stop = false;
  bool pinned = false;
  std::string error;
  std::thread worker;
};

BatchPrefetcher::BatchPrefetcher(Context& ctx, const Dataset& data,
                                 std::vector<std::vector<int64_t>> batches)
    : data_(data), batches_(std::move(batches)), state_(std::make_unique<State>()) {
  size_t largest = 0;
  for (auto& b : batches_) {
    largest = std::max(largest, b.size());
    for (int64_t k : b)
      CUDARTS_CHECK(k >= 0 && k < data_.n, "BatchPrefetcher: index ", k, " outside dataset '",
                    data_.name, "' of ", data_.n, " examples");
  }
  State& st = *state_;
  st.pinned = ctx.device().is_cuda();
  const size_t floats = largest * size_t(data_.image_size());
  for (int i = 0; i < kSlots; ++i) {
    Slot& slot = st.slots[i];
    if (st.pinned) {
      slot.images = static_cast<float*>(cuda_bridge::host_alloc_pinned(floats * sizeof(float) + 1));
      slot.labels = static_cast<int32_t*>(cuda_bridge::host_alloc_pinned(largest * 4 + 1));
      slot.uploaded = cuda_bridge::event_create(ctx.device().index);
    } else {
      slot.images_pageable.resize(floats);
      slot.labels_pageable.resize(largest);
      slot.images = slot.images_pageable.data();
      slot.labels = slot.labels_pageable.data();
    }
    st.free.push_back(i);
  }
  st.worker = std::thread([this] { work(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  State& st = *state_;
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    st.stop = true;
  }
  st.cv.notify_all();
  st.worker.join();
  for (Slot& slot : st.slots) {
    if (!st.pinned) continue;
    if (slot.pending_upload) {
      try {
        cuda_bridge::event_synchronize(slot.uploaded);
      } catch (const Error&) {
      }
    }
    cuda_bridge::event_destroy(slot.uploaded);
    cuda_bridge::host_free_pinned(slot.images);
    cuda_bridge::host_free_pinned(slot.labels);
  }
}

void BatchPrefetcher::work() {
  State& st = *state_;
  const int64_t sz = data_.image_size();
  try {
    for (const auto& idx : batches_) {
      int s = -1;
      {
        std::unique_lock<std::mutex> lock(st.mutex);
        st.cv.wait(lock, [&] { return st.stop || !st.free.empty(); });
        if (st.stop) return;
        s = st.free.front();
        st.free.pop_front();
      }
      Slot& slot = st.slots[s];
      if (slot.pending_upload) {  // the copy out of this buffer must have finished
        cuda_bridge::event_synchronize(slot.uploaded);
        slot.pending_upload = false;
      }
      slot.count = int64_t(idx.size());
      for (size_t i = 0; i < idx.size(); ++i) {
        std::memcpy(slot.images + int64_t(i) * sz, data_.images.data() + idx[i] * sz,
                    sizeof(float) * size_t(sz));
        slot.labels[i] = data_.labels[size_t(idx[i])];
      }
      std::lock_guard<std::mutex> lock(st.mutex);
      st.ready.push_back(s);
      st.cv.notify_all();
    }
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lock(st.mutex);
    st.error = e.what();
    st.cv.notify_all();
  }
}

Batch BatchPrefetcher::next(Context& ctx) {
  CUDARTS_CHECK(!done(), "BatchPrefetcher: all ", batches_.size(), " batches already taken");
  CUDARTS_CHECK(!ctx.capturing(), "BatchPrefetcher::next while a StepGraph is capturing on ",
                ctx.device().str(),
                ": uploads cannot be captured; take the batch before "
                "replay() and copy it into the graph's static input tensors");
  State& st = *state_;
  int s = -1;
  {
    std::unique_lock<std::mutex> lock(st.mutex);
    st.cv.wait(lock, [&] { return !st.ready.empty() || !st.error.empty(); });
    CUDARTS_CHECK(st.error.empty(), "BatchPrefetcher: ", st.error);
    s = st.ready.front();
    st.ready.pop_front();
  }
  Slot& slot = st.slots[s];
  const int64_t n = slot.count;
  Batch b{Tensor::empty(ctx, Shape{n, data_.c, data_.h, data_.w}),
          Tensor::empty(ctx, Shape{n}, DType::I32)};
  ctx.backend().copy_bytes(b.images.raw(), b.images.device(), slot.images, Device::cpu(),
                           b.images.nbytes());
  ctx.backend().copy_bytes(b.labels.raw(), b.labels.device(), slot.labels, Device::cpu(),
                           b.labels.nbytes());
  if (st.pinned) {
    cuda_bridge::event_record(slot.uploaded, ctx.stream());
    slot.pending_upload = true;
  }
  {
    std::lock_guard<std::mutex> lock(st.mutex);
    st.free.push_back(s);
  }
  st.cv.notify_all();
  ++taken_;
  return b;
}

}  // namespace cudarts
