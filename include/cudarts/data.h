// Datasets held on the host: IDX (MNIST-family, optionally gzip) reading, Fashion-MNIST
// from Debian's dataset-fashion-mnist package, and batch assembly onto a device.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cudarts/context.h"
#include "cudarts/tensor.h"

namespace cudarts {

// An IDX array: unsigned-byte payload with its dimensions.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Reads an IDX file (gzip-compressed or raw, detected from the first bytes). Errors name the
// file, the byte offset and what was expected there.
IdxArray read_idx(const std::string& path);

// Images as float NCHW (normalised), labels as class indices.
struct Dataset {
  std::string name;
  int64_t n = 0, c = 0, h = 0, w = 0;
  int num_classes = 0;
  std::vector<float> images;
  std::vector<int32_t> labels;
  int64_t image_size() const { return c * h * w; }
  // Everything but the images and labels (name, sizes, classes, background).
  Dataset metadata() const;
  // The examples [begin, end) as a new dataset.
  Dataset subset(int64_t begin, int64_t end) const;
  // Images zero-padded (with `value`, e.g. the normalised background) to size x size, centred.
  Dataset padded(int64_t size, float value) const;
  // The normalised value of a black pixel in channel 0 (the padding for Fashion-MNIST).
  float background = 0.0f;
};

// $FASHION_MNIST_DIR when set, else where Debian's dataset-fashion-mnist package puts the files.
std::string default_fashion_mnist_dir();
// train = true: the 60000 training images; false: the 10000 test images.
// Pixels are scaled to [0, 1] and normalised with the training set's mean/std.
Dataset load_fashion_mnist(const std::string& dir, bool train);

// CIFAR-10, binary version: data_batch_1..5.bin (train) or test_batch.bin in `dir`; each
// record is a label byte and 3072 pixel bytes (R, G, B planes of 32x32). Pixels are scaled to
// [0, 1] and normalised per channel. A missing file is named in the error.
Dataset load_cifar10(const std::string& dir, bool train);

// "fashion-mnist" (dir may be empty: Debian's package) or "cifar10".
Dataset load_dataset(const std::string& name, const std::string& dir, bool train);

// One batch on a device: images (B, C, H, W) f32 and labels (B) i32.
struct Batch {
  Tensor images;
  Tensor labels;
};
// Gathers the examples `indices` of `data` into a batch on ctx's device.
Batch make_batch(Context& ctx, const Dataset& data, const std::vector<int64_t>& indices);
// A permutation of [0, n) drawn from the Philox stream (seed, offset).
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t offset);

// Assembles host batches on a worker thread, ahead of the consumer, so the device never waits
// for the gather; next() uploads the prepared batch to ctx's device. For a GPU context the
// host batches live in a ring of page-locked buffers and the upload is an asynchronous copy on
// the context's stream; a buffer is refilled only after its copy has completed (an event).
class BatchPrefetcher {
 public:
  BatchPrefetcher(Context& ctx, const Dataset& data, std::vector<std::vector<int64_t>> batches);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;
  bool done() const { return taken_ >= batches_.size(); }
  size_t size() const { return batches_.size(); }
  Batch next(Context& ctx);

 private:
  struct State;
  void work();
  const Dataset& data_;
  std::vector<std::vector<int64_t>> batches_;
  size_t taken_ = 0;
  std::unique_ptr<State> state_;
};

}  // namespace cudarts
