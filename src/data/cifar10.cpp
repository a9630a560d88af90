// CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"):
// records of 1 label byte + 3072 pixel bytes, planes R, G, B of 32x32.
#include <filesystem>
#include <fstream>

#include "cudarts/data.h"
#include "cudarts/error.h"

namespace cudarts {

namespace {
constexpr int64_t kSide = 32, kPixels = 3 * kSide * kSide, kRecord = 1 + kPixels;
// Per-channel mean and standard deviation of the CIFAR-10 training pixels (in [0, 1]).
constexpr float kMean[3] = {0.4914f, 0.4822f, 0.4465f};
constexpr float kStd[3] = {0.2470f, 0.2435f, 0.2616f};

void append_file(const std::string& path, Dataset& d) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  CUDARTS_INPUT_CHECK(f.good(), "cannot open CIFAR-10 file '", path, "'");
  const int64_t size = static_cast<int64_t>(f.tellg());
  CUDARTS_INPUT_CHECK(size > 0 && size % kRecord == 0, "'", path, "': ", size,
                      " bytes is not a whole number of ", kRecord,
                      "-byte CIFAR-10 records (the last record starting at offset ",
                      size / kRecord * kRecord, " is incomplete)");
  f.seekg(0);
  std::vector<unsigned char> bytes(static_cast<size_t>(size));
  f.read(reinterpret_cast<char*>(bytes.data()), size);
  CUDARTS_INPUT_CHECK(f.good(), "'", path, "': read failed");
  const int64_t records = size / kRecord;
  for (int64_t r = 0; r < records; ++r) {
    const unsigned char* rec = bytes.data() + r * kRecord;
    CUDARTS_INPUT_CHECK(rec[0] < 10, "'", path, "': label ", int(rec[0]), " at offset ",
                        r * kRecord, ", expected 0..9");
    d.labels.push_back(rec[0]);
    for (int64_t i = 0; i < kPixels; ++i) {
      const int64_t c = i / (kSide * kSide);
      d.images.push_back((float(rec[1 + i]) / 255.0f - kMean[c]) / kStd[c]);
    }
  }
  d.n += records;
}
}  // namespace

Dataset load_cifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train)
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  else
    files.push_back(dir + "/test_batch.bin");
  std::string missing;
  for (const auto& f : files) {
    std::error_code ec;
    const auto st = std::filesystem::status(f, ec);
    if (std::filesystem::is_regular_file(st)) continue;
    CUDARTS_INPUT_CHECK(!std::filesystem::exists(st), "CIFAR-10: '", f, "' is ",
                        std::filesystem::is_directory(st) ? "a directory" : "not a regular file",
                        ", expected the binary batch file of that name");
    missing += (missing.empty() ? "" : ", ") + f;
  }
  CUDARTS_INPUT_CHECK(
      missing.empty(), "CIFAR-10 (binary version) not found: missing ", missing,
      ". Download cifar-10-binary.tar.gz (scripts/get_cifar10.sh) and pass the folder "
      "holding data_batch_1.bin ... test_batch.bin");
  Dataset d;
  d.name = std::string("cifar10/") + (train ? "train" : "test");
  d.c = 3;
  d.h = kSide;
  d.w = kSide;
  d.num_classes = 10;
  d.background = (0.0f - kMean[0]) / kStd[0];
  for (const auto& f : files) append_file(f, d);
  return d;
}

Dataset load_dataset(const std::string& name, const std::string& dir, bool train) {
  if (name == "fashion-mnist")
    return load_fashion_mnist(dir.empty() ? default_fashion_mnist_dir() : dir, train);
  if (name == "cifar10") {
    CUDARTS_CONFIG_CHECK(!dir.empty(),
                         "dataset cifar10 needs --data DIR (the folder of the binary "
                         "version: data_batch_1.bin ... test_batch.bin)");
    return load_cifar10(dir, train);
  }
  throw ConfigError(detail::cat("unknown dataset '", name, "'; expected fashion-mnist or cifar10"));
}

}  // namespace cudarts
