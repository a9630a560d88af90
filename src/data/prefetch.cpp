// Dataset padding and the batch prefetcher (a worker thread gathering the next host batch).
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "cudarts/data.h"
#include "cudarts/error.h"

namespace cudarts {

Dataset Dataset::padded(int64_t size, float value) const {
  CUDARTS_CHECK(size >= h && size >= w, "Dataset '", name, "': cannot pad ", h, "x", w, " to ",
                size, "x", size);
  if (size == h && size == w) return *this;
  Dataset d;
  d.name = name;
  d.n = n;
  d.c = c;
  d.h = size;
  d.w = size;
  d.num_classes = num_classes;
  d.background = background;
  d.labels = labels;
  d.images.assign(size_t(n * c * size * size), value);
  const int64_t top = (size - h) / 2, left = (size - w) / 2;
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t r = 0; r < h; ++r)
      std::memcpy(d.images.data() + (i * size + top + r) * size + left,
                  images.data() + (i * h + r) * w, sizeof(float) * size_t(w));
  return d;
}

struct BatchPrefetcher::HostBatch {
  std::vector<float> images;
  std::vector<int32_t> labels;
  int64_t count = 0;
};

struct BatchPrefetcher::State {
  std::mutex mutex;
  std::condition_variable cv;
  std::deque<HostBatch> ready;
  bool stop = false;
  std::string error;
  std::thread worker;
};

BatchPrefetcher::BatchPrefetcher(const Dataset& data, std::vector<std::vector<int64_t>> batches)
    : data_(data), batches_(std::move(batches)), state_(std::make_unique<State>()) {
  for (auto& b : batches_)
    for (int64_t k : b)
      CUDARTS_CHECK(k >= 0 && k < data_.n, "BatchPrefetcher: index ", k, " outside dataset '",
                    data_.name, "' of ", data_.n, " examples");
  state_->worker = std::thread([this] { work(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stop = true;
  }
  state_->cv.notify_all();
  state_->worker.join();
}

void BatchPrefetcher::work() {
  const int64_t sz = data_.image_size();
  for (const auto& idx : batches_) {
    HostBatch hb;
    hb.count = int64_t(idx.size());
    hb.images.resize(size_t(hb.count * sz));
    hb.labels.resize(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      std::memcpy(hb.images.data() + int64_t(i) * sz, data_.images.data() + idx[i] * sz,
                  sizeof(float) * size_t(sz));
      hb.labels[i] = data_.labels[size_t(idx[i])];
    }
    std::unique_lock<std::mutex> lock(state_->mutex);
    state_->cv.wait(lock, [&] { return state_->stop || state_->ready.size() < 2; });
    if (state_->stop) return;
    state_->ready.push_back(std::move(hb));
    state_->cv.notify_all();
  }
}

Batch BatchPrefetcher::next(Context& ctx) {
  CUDARTS_CHECK(!done(), "BatchPrefetcher: all ", batches_.size(), " batches already taken");
  HostBatch hb;
  {
    std::unique_lock<std::mutex> lock(state_->mutex);
    state_->cv.wait(lock, [&] { return !state_->ready.empty(); });
    hb = std::move(state_->ready.front());
    state_->ready.pop_front();
  }
  state_->cv.notify_all();
  ++taken_;
  return {Tensor::from_vector(ctx, Shape{hb.count, data_.c, data_.h, data_.w}, hb.images),
          Tensor::from_vector_i32(ctx, Shape{hb.count}, hb.labels)};
}

}  // namespace cudarts
