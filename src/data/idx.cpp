// IDX reader (gzip or raw through zlib), Fashion-MNIST loading, batch assembly.
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "cudarts/data.h"
#include "cudarts/error.h"
#include "cudarts/philox.h"

namespace cudarts {

namespace {

// Reads the whole (possibly gzip-compressed) file; gzread passes raw files through.
std::vector<uint8_t> read_all(const std::string& path) {
  std::error_code ec;
  CUDARTS_INPUT_CHECK(std::filesystem::exists(path, ec), "cannot open '", path, "': no such file");
  CUDARTS_INPUT_CHECK(std::filesystem::is_regular_file(path, ec), "cannot read '", path,
                      "': not a regular file");
  gzFile f = gzopen(path.c_str(), "rb");
  CUDARTS_INPUT_CHECK(f != nullptr, "cannot open '", path, "'");
  std::vector<uint8_t> out;
  std::vector<uint8_t> chunk(1 << 16);
  for (;;) {
    const int got = gzread(f, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (got < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      CUDARTS_INPUT_FAIL("'", path, "': corrupt compressed data within decompressed bytes [",
                         out.size(), ", ", out.size() + chunk.size(), ") (", msg, ")");
    }
    if (got == 0) break;
    out.insert(out.end(), chunk.begin(), chunk.begin() + got);
  }
  const int rc = gzclose(f);
  CUDARTS_INPUT_CHECK(rc == Z_OK, "'", path, "': truncated or corrupt gzip stream after ",
                      out.size(), " decompressed bytes (zlib error ", rc, ")");
  return out;
}

uint32_t read_be32(const std::vector<uint8_t>& b, size_t offset) {
  return (uint32_t(b[offset]) << 24) | (uint32_t(b[offset + 1]) << 16) |
         (uint32_t(b[offset + 2]) << 8) | uint32_t(b[offset + 3]);
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  const std::vector<uint8_t> bytes = read_all(path);
  CUDARTS_INPUT_CHECK(bytes.size() >= 4, "'", path, "': ", bytes.size(),
                      " bytes, expected an IDX header of at least 4 bytes at offset 0");
  CUDARTS_INPUT_CHECK(bytes[0] == 0 && bytes[1] == 0, "'", path,
                      "': bytes 0-1 should be zero in an IDX header, found ", int(bytes[0]), " ",
                      int(bytes[1]));
  CUDARTS_INPUT_CHECK(bytes[2] == 0x08, "'", path, "': byte 2 is type code 0x", std::hex,
                      int(bytes[2]), std::dec, ", expected 0x08 (unsigned byte)");
  const int ndim = bytes[3];
  CUDARTS_INPUT_CHECK(ndim >= 1 && ndim <= 4, "'", path, "': byte 3 gives ", ndim,
                      " dimensions, expected 1 to 4");
  const size_t header = 4 + 4 * size_t(ndim);
  CUDARTS_INPUT_CHECK(bytes.size() >= header, "'", path, "': file ends at offset ", bytes.size(),
                      " inside the header, expected ", header, " header bytes");
  IdxArray a;
  size_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    const uint32_t d = read_be32(bytes, 4 + 4 * size_t(i));
    CUDARTS_INPUT_CHECK(d > 0 && d < (1u << 28), "'", path, "': dimension ", i, " at offset ",
                        4 + 4 * i, " is ", d, ", expected a positive size");
    a.dims.push_back(d);
    count *= d;
  }
  CUDARTS_INPUT_CHECK(bytes.size() == header + count, "'", path, "': ", bytes.size() - header,
                      " data bytes after the header at offset ", header, ", expected ", count,
                      " for dimensions ", Shape(a.dims),
                      bytes.size() < header + count ? " (truncated)" : " (trailing bytes)");
  a.data.assign(bytes.begin() + header, bytes.end());
  return a;
}

Dataset Dataset::metadata() const {
  Dataset d;
  d.name = name;
  d.n = n;
  d.c = c;
  d.h = h;
  d.w = w;
  d.num_classes = num_classes;
  d.background = background;
  return d;
}

Dataset Dataset::subset(int64_t begin, int64_t end) const {
  CUDARTS_CHECK(0 <= begin && begin <= end && end <= n, "Dataset '", name, "': subset [", begin,
                ", ", end, ") out of range [0, ", n, ")");
  Dataset d = metadata();
  d.n = end - begin;
  d.images.assign(images.begin() + begin * image_size(), images.begin() + end * image_size());
  d.labels.assign(labels.begin() + begin, labels.begin() + end);
  return d;
}

std::string default_fashion_mnist_dir() {
  const char* env = std::getenv("FASHION_MNIST_DIR");
  return env && *env ? std::string(env) : std::string("/usr/share/datasets/fashion-mnist");
}

Dataset load_fashion_mnist(const std::string& dir, bool train) {
  const std::string stem = train ? "train" : "t10k";
  const std::string images_path = dir + "/" + stem + "-images-idx3-ubyte.gz";
  const std::string labels_path = dir + "/" + stem + "-labels-idx1-ubyte.gz";
  for (const std::string& p : {images_path, labels_path}) {
    std::ifstream f(p, std::ios::binary);
    CUDARTS_INPUT_CHECK(f.good(), "Fashion-MNIST file '", p,
                        "' not found. Install Debian's package: sudo apt-get install "
                        "dataset-fashion-mnist (or run scripts/setup.sh), or pass the directory "
                        "holding the IDX .gz files");
  }
  const IdxArray im = read_idx(images_path);
  const IdxArray lb = read_idx(labels_path);
  CUDARTS_INPUT_CHECK(im.dims.size() == 3, "'", images_path, "': ", im.dims.size(),
                      " dimensions, expected 3 (count, rows, columns)");
  CUDARTS_INPUT_CHECK(lb.dims.size() == 1 && lb.dims[0] == im.dims[0], "'", labels_path,
                      "': ", lb.dims.size() ? lb.dims[0] : 0, " labels, expected ", im.dims[0],
                      " (one per image of '", images_path, "')");
  Dataset d;
  d.name = std::string("fashion-mnist/") + stem;
  d.n = im.dims[0];
  d.c = 1;
  d.h = im.dims[1];
  d.w = im.dims[2];
  d.num_classes = 10;
  // Mean and standard deviation of the Fashion-MNIST training pixels (in [0, 1]).
  constexpr float kMean = 0.2860f, kStd = 0.3530f;
  d.images.resize(im.data.size());
  for (size_t i = 0; i < im.data.size(); ++i)
    d.images[i] = (float(im.data[i]) / 255.0f - kMean) / kStd;
  d.background = (0.0f - kMean) / kStd;
  d.labels.resize(lb.data.size());
  for (size_t i = 0; i < lb.data.size(); ++i) {
    CUDARTS_INPUT_CHECK(lb.data[i] < 10, "'", labels_path, "': label ", int(lb.data[i]),
                        " at offset ", 8 + i, ", expected 0..9");
    d.labels[i] = lb.data[i];
  }
  return d;
}

Batch make_batch(Context& ctx, const Dataset& data, const std::vector<int64_t>& indices) {
  const int64_t b = static_cast<int64_t>(indices.size()), sz = data.image_size();
  std::vector<float> images(static_cast<size_t>(b * sz));
  std::vector<int32_t> labels(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t k = indices[i];
    CUDARTS_CHECK(k >= 0 && k < data.n, "make_batch: index ", k, " outside dataset '", data.name,
                  "' of ", data.n, " examples");
    std::memcpy(images.data() + i * sz, data.images.data() + k * sz, sizeof(float) * sz);
    labels[i] = data.labels[k];
  }
  return {Tensor::from_vector(ctx, Shape{b, data.c, data.h, data.w}, images),
          Tensor::from_vector_i32(ctx, Shape{b}, labels)};
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, uint64_t offset) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  // Fisher-Yates with Philox words (64-bit draws from two words).
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t lo = philox_word(seed, offset, 1, uint64_t(2 * i));
    const uint64_t hi = philox_word(seed, offset, 1, uint64_t(2 * i + 1));
    const uint64_t r = ((hi << 32) | lo) % uint64_t(i + 1);
    std::swap(idx[i], idx[r]);
  }
  return idx;
}

}  // namespace cudarts
