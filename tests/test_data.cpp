// Tests of the data layer: read_idx on raw and gzip IDX files the tests write themselves (and
// on broken ones), load_fashion_mnist on a tiny generated directory, make_batch,
// shuffled_indices, and a smoke test on the real dataset when it is installed.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "cudarts/checkpoint.h"
#include "cudarts/data.h"
#include "cudarts/error.h"

namespace cudarts {
namespace {

namespace fs = std::filesystem;

// An IDX file's bytes: magic (0, 0, type, ndim), big-endian dimensions, then the payload.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                               uint8_t type = 0x08) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(static_cast<uint8_t>(d >> 24));
    b.push_back(static_cast<uint8_t>(d >> 16));
    b.push_back(static_cast<uint8_t>(d >> 8));
    b.push_back(static_cast<uint8_t>(d));
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_raw(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

void write_gzip(const fs::path& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << "cannot open " << path;
  if (!bytes.empty())
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Pixel values that cover 0, 255 and everything between, different for every image.
std::vector<uint8_t> pattern(size_t n, unsigned salt = 0) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * 7 + salt * 13) % 256);
  return v;
}

// The message of the cudarts::Error that `f` throws ("" and a test failure when none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a cudarts::Error";
  return "";
}

// Each test gets its own directory (ctest runs tests in parallel processes).
class DataFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "cudarts_test_data_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << "mkdtemp failed for " << templ;
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path path(const std::string& name) const { return dir_ / name; }

  fs::path dir_;
};

// ---------------------------------------------------------------- read_idx

TEST_F(DataFiles, ReadsRawIdx) {
  const std::vector<uint8_t> data = pattern(3 * 4 * 5);
  write_raw(path("a.idx"), idx_bytes({3, 4, 5}, data));
  const IdxArray a = read_idx(path("a.idx").string());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(a.data, data);
}

TEST_F(DataFiles, ReadsGzipIdx) {
  const std::vector<uint8_t> data = pattern(6 * 28 * 28, 3);
  write_gzip(path("a.idx.gz"), idx_bytes({6, 28, 28}, data));
  // The file really is compressed: it starts with the gzip magic.
  const std::vector<uint8_t> on_disk = read_bytes(path("a.idx.gz"));
  ASSERT_GE(on_disk.size(), 2u);
  EXPECT_EQ(on_disk[0], 0x1f);
  EXPECT_EQ(on_disk[1], 0x8b);
  const IdxArray a = read_idx(path("a.idx.gz").string());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{6, 28, 28}));
  EXPECT_EQ(a.data, data);
}

TEST_F(DataFiles, ReadsOneDimensionalIdx) {
  const std::vector<uint8_t> labels = {0, 9, 3, 3, 7};
  write_gzip(path("labels.gz"), idx_bytes({5}, labels));
  const IdxArray a = read_idx(path("labels.gz").string());
  EXPECT_EQ(a.dims, (std::vector<int64_t>{5}));
  EXPECT_EQ(a.data, labels);
}

TEST_F(DataFiles, TruncatedPayloadNamesFileOffsetAndExpectation) {
  std::vector<uint8_t> bytes = idx_bytes({5, 28, 28}, pattern(5 * 28 * 28));
  bytes.resize(bytes.size() - 100);
  write_raw(path("short.idx"), bytes);
  const std::string msg = error_of([&] { read_idx(path("short.idx").string()); });
  EXPECT_NE(msg.find(path("short.idx").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 16"), std::string::npos) << msg;      // where the payload starts
  EXPECT_NE(msg.find("expected 3920"), std::string::npos) << msg;  // 5 * 28 * 28 bytes
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST_F(DataFiles, TruncatedGzipPayloadIsAnError) {
  std::vector<uint8_t> bytes = idx_bytes({5, 28, 28}, pattern(5 * 28 * 28));
  bytes.resize(bytes.size() - 1);
  write_gzip(path("short.idx.gz"), bytes);
  const std::string msg = error_of([&] { read_idx(path("short.idx.gz").string()); });
  EXPECT_NE(msg.find("short.idx.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 3920"), std::string::npos) << msg;
}

TEST_F(DataFiles, TrailingBytesAreAnError) {
  std::vector<uint8_t> bytes = idx_bytes({2, 3}, pattern(6));
  bytes.push_back(42);
  write_raw(path("long.idx"), bytes);
  const std::string msg = error_of([&] { read_idx(path("long.idx").string()); });
  EXPECT_NE(msg.find("long.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 6"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trailing"), std::string::npos) << msg;
}

TEST_F(DataFiles, TruncatedHeaderNamesFileOffsetAndExpectation) {
  std::vector<uint8_t> bytes = idx_bytes({5, 28, 28}, {});
  bytes.resize(10);  // the header needs 4 + 3 * 4 = 16 bytes
  write_raw(path("header.idx"), bytes);
  const std::string msg = error_of([&] { read_idx(path("header.idx").string()); });
  EXPECT_NE(msg.find("header.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("16 header bytes"), std::string::npos) << msg;
}

TEST_F(DataFiles, TooShortForMagicIsAnError) {
  write_raw(path("tiny.idx"), {0, 0});
  const std::string msg = error_of([&] { read_idx(path("tiny.idx").string()); });
  EXPECT_NE(msg.find("tiny.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 0"), std::string::npos) << msg;
}

TEST_F(DataFiles, EmptyFileIsAnError) {
  write_raw(path("empty.idx"), {});
  const std::string msg = error_of([&] { read_idx(path("empty.idx").string()); });
  EXPECT_NE(msg.find("empty.idx"), std::string::npos) << msg;
}

TEST_F(DataFiles, WrongMagicIsAnError) {
  std::vector<uint8_t> bytes = idx_bytes({4}, pattern(4));
  bytes[0] = 0x50;  // e.g. a text or zip file
  write_raw(path("magic.idx"), bytes);
  const std::string msg = error_of([&] { read_idx(path("magic.idx").string()); });
  EXPECT_NE(msg.find("magic.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bytes 0-1"), std::string::npos) << msg;
}

TEST_F(DataFiles, WrongTypeByteIsAnError) {
  write_raw(path("float.idx"), idx_bytes({4}, pattern(16), /*type=*/0x0D));  // 0x0D: float32
  const std::string msg = error_of([&] { read_idx(path("float.idx").string()); });
  EXPECT_NE(msg.find("float.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("0xd"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 0x08"), std::string::npos) << msg;
}

TEST_F(DataFiles, BadDimensionCountIsAnError) {
  std::vector<uint8_t> bytes = {0, 0, 0x08, 0};  // zero dimensions
  write_raw(path("dims.idx"), bytes);
  const std::string msg = error_of([&] { read_idx(path("dims.idx").string()); });
  EXPECT_NE(msg.find("dims.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("byte 3"), std::string::npos) << msg;
}

TEST_F(DataFiles, ZeroDimensionIsAnError) {
  write_raw(path("zero.idx"), idx_bytes({3, 0}, {}));
  const std::string msg = error_of([&] { read_idx(path("zero.idx").string()); });
  EXPECT_NE(msg.find("zero.idx"), std::string::npos) << msg;
  EXPECT_NE(msg.find("dimension 1 at offset 8"), std::string::npos) << msg;
}

TEST_F(DataFiles, CorruptGzipStreamIsAnError) {
  write_gzip(path("bad.gz"), idx_bytes({8, 28, 28}, pattern(8 * 28 * 28)));
  std::vector<uint8_t> gz = read_bytes(path("bad.gz"));
  ASSERT_GT(gz.size(), 40u);
  // gzopen writes a 10-byte header; the first deflate byte follows. 0xFF declares a final
  // block of the reserved type 3, which no inflater accepts.
  gz[10] = 0xFF;
  write_raw(path("bad.gz"), gz);
  const std::string msg = error_of([&] { read_idx(path("bad.gz").string()); });
  EXPECT_NE(msg.find("bad.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
}

TEST_F(DataFiles, GzipChecksumMismatchIsAnError) {
  write_gzip(path("crc.gz"), idx_bytes({8, 28, 28}, pattern(8 * 28 * 28)));
  std::vector<uint8_t> gz = read_bytes(path("crc.gz"));
  gz[gz.size() - 8] ^= 0x5A;  // the CRC-32 of the trailer no longer matches the data
  write_raw(path("crc.gz"), gz);
  const std::string msg = error_of([&] { read_idx(path("crc.gz").string()); });
  EXPECT_NE(msg.find("crc.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
}

TEST_F(DataFiles, TruncatedGzipStreamIsAnError) {
  write_gzip(path("cut.gz"), idx_bytes({8, 28, 28}, pattern(8 * 28 * 28)));
  std::vector<uint8_t> gz = read_bytes(path("cut.gz"));
  gz.resize(gz.size() / 2);
  write_raw(path("cut.gz"), gz);
  const std::string msg = error_of([&] { read_idx(path("cut.gz").string()); });
  EXPECT_NE(msg.find("cut.gz"), std::string::npos) << msg;
}

TEST_F(DataFiles, MissingFileIsAnError) {
  const std::string missing = path("nothing-here.idx").string();
  const std::string msg = error_of([&] { read_idx(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- load_fashion_mnist

// A Fashion-MNIST directory with `n_train` and `n_test` images of 28x28.
void write_fashion_mnist(const fs::path& dir, uint32_t n_train, uint32_t n_test) {
  const std::pair<const char*, uint32_t> splits[] = {{"train", n_train}, {"t10k", n_test}};
  for (const auto& [stem, n] : splits) {
    std::vector<uint8_t> labels(n);
    for (uint32_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>((i * 3 + 1) % 10);
    write_gzip(dir / (std::string(stem) + "-images-idx3-ubyte.gz"),
               idx_bytes({n, 28, 28}, pattern(size_t(n) * 28 * 28, n)));
    write_gzip(dir / (std::string(stem) + "-labels-idx1-ubyte.gz"), idx_bytes({n}, labels));
  }
}

TEST_F(DataFiles, LoadsFashionMnistAndNormalises) {
  write_fashion_mnist(dir_, 5, 3);
  for (const bool train : {true, false}) {
    SCOPED_TRACE(train ? "train" : "t10k");
    const uint32_t n = train ? 5 : 3;
    const Dataset d = load_fashion_mnist(dir_.string(), train);
    EXPECT_EQ(d.n, n);
    EXPECT_EQ(d.c, 1);
    EXPECT_EQ(d.h, 28);
    EXPECT_EQ(d.w, 28);
    EXPECT_EQ(d.num_classes, 10);
    EXPECT_EQ(d.image_size(), 28 * 28);
    ASSERT_EQ(d.images.size(), size_t(n) * 28 * 28);
    ASSERT_EQ(d.labels.size(), size_t(n));
    const std::vector<uint8_t> pixels = pattern(size_t(n) * 28 * 28, n);
    for (size_t i = 0; i < pixels.size(); ++i) {
      const float expected = (pixels[i] / 255.0f - 0.2860f) / 0.3530f;
      ASSERT_NEAR(d.images[i], expected, 1e-5f) << "pixel " << i << " = " << int(pixels[i]);
    }
    for (uint32_t i = 0; i < n; ++i) EXPECT_EQ(d.labels[i], int32_t((i * 3 + 1) % 10));
  }
}

TEST_F(DataFiles, NormalisationEndPoints) {
  write_fashion_mnist(dir_, 5, 3);
  const Dataset d = load_fashion_mnist(dir_.string(), true);
  // pattern() steps by 7 (coprime to 256) over 3920 pixels, so 0 and 255 both occur.
  const std::vector<uint8_t> pixels = pattern(5 * 28 * 28, 5);
  const auto zero = std::find(pixels.begin(), pixels.end(), 0);
  const auto full = std::find(pixels.begin(), pixels.end(), 255);
  ASSERT_NE(zero, pixels.end());
  ASSERT_NE(full, pixels.end());
  EXPECT_NEAR(d.images[zero - pixels.begin()], -0.2860f / 0.3530f, 1e-5f);
  EXPECT_NEAR(d.images[full - pixels.begin()], (1.0f - 0.2860f) / 0.3530f, 1e-5f);
}

TEST_F(DataFiles, MissingFashionMnistDirectoryNamesThePackage) {
  const std::string missing = path("no-such-dir").string();
  const std::string msg = error_of([&] { load_fashion_mnist(missing, true); });
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
}

TEST_F(DataFiles, FashionMnistLabelCountMustMatch) {
  write_fashion_mnist(dir_, 5, 3);
  write_gzip(path("train-labels-idx1-ubyte.gz"), idx_bytes({4}, {1, 2, 3, 4}));
  const std::string msg = error_of([&] { load_fashion_mnist(dir_.string(), true); });
  EXPECT_NE(msg.find("train-labels-idx1-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 5"), std::string::npos) << msg;
}

TEST_F(DataFiles, FashionMnistLabelOutOfRange) {
  write_fashion_mnist(dir_, 5, 3);
  write_gzip(path("t10k-labels-idx1-ubyte.gz"), idx_bytes({3}, {1, 10, 2}));
  const std::string msg = error_of([&] { load_fashion_mnist(dir_.string(), false); });
  EXPECT_NE(msg.find("t10k-labels-idx1-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("offset 9"), std::string::npos) << msg;  // 8-byte header + index 1
}

TEST_F(DataFiles, FashionMnistImagesMustBeThreeDimensional) {
  write_fashion_mnist(dir_, 5, 3);
  write_gzip(path("train-images-idx3-ubyte.gz"), idx_bytes({5, 784}, pattern(5 * 784)));
  const std::string msg = error_of([&] { load_fashion_mnist(dir_.string(), true); });
  EXPECT_NE(msg.find("train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 3"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- Dataset, make_batch

// 4 examples of (1, 2, 3): example k holds 10 k + 0..5; label 3 - k.
Dataset tiny_dataset() {
  Dataset d;
  d.name = "tiny";
  d.n = 4;
  d.c = 1;
  d.h = 2;
  d.w = 3;
  d.num_classes = 4;
  for (int k = 0; k < 4; ++k) {
    for (int j = 0; j < 6; ++j) d.images.push_back(float(10 * k + j));
    d.labels.push_back(3 - k);
  }
  return d;
}

TEST(MakeBatch, GathersImagesAndLabels) {
  Context ctx(Device::cpu());
  const Dataset d = tiny_dataset();
  const Batch b = make_batch(ctx, d, {2, 0, 2});
  EXPECT_EQ(b.images.shape(), (Shape{3, 1, 2, 3}));
  EXPECT_EQ(b.images.dtype(), DType::F32);
  EXPECT_EQ(b.labels.shape(), (Shape{3}));
  EXPECT_EQ(b.labels.dtype(), DType::I32);
  EXPECT_TRUE(b.images.device().is_cpu());
  const std::vector<float> im = b.images.to_vector();
  for (int i = 0; i < 3; ++i) {
    const int k = i == 1 ? 0 : 2;
    for (int j = 0; j < 6; ++j) EXPECT_EQ(im[i * 6 + j], float(10 * k + j)) << i << "," << j;
  }
  EXPECT_EQ(b.labels.to_vector_i32(), (std::vector<int32_t>{1, 3, 1}));
}

TEST(MakeBatch, OutOfRangeIndexIsAnError) {
  Context ctx(Device::cpu());
  const Dataset d = tiny_dataset();
  std::string msg = error_of([&] { make_batch(ctx, d, {0, 4}); });
  EXPECT_NE(msg.find("index 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
  msg = error_of([&] { make_batch(ctx, d, {-1}); });
  EXPECT_NE(msg.find("index -1"), std::string::npos) << msg;
}

TEST(DatasetSubset, TakesARangeOfExamples) {
  const Dataset d = tiny_dataset();
  const Dataset s = d.subset(1, 3);
  EXPECT_EQ(s.n, 2);
  EXPECT_EQ(s.h, 2);
  EXPECT_EQ(s.w, 3);
  ASSERT_EQ(s.images.size(), 12u);
  EXPECT_EQ(s.images.front(), 10.0f);
  EXPECT_EQ(s.images.back(), 25.0f);
  EXPECT_EQ(s.labels, (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(d.subset(2, 2).n, 0);
  const std::string msg = error_of([&] { d.subset(3, 5); });
  EXPECT_NE(msg.find("tiny"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- shuffled_indices

TEST(ShuffledIndices, IsAPermutation) {
  for (const int64_t n : {0, 1, 2, 7, 1000}) {
    std::vector<int64_t> p = shuffled_indices(n, 42, 0);
    ASSERT_EQ(p.size(), size_t(n));
    std::sort(p.begin(), p.end());
    std::vector<int64_t> identity(static_cast<size_t>(n));
    std::iota(identity.begin(), identity.end(), 0);
    EXPECT_EQ(p, identity) << "n = " << n;
  }
}

TEST(ShuffledIndices, SameSeedSameOrderOtherSeedOtherOrder) {
  const std::vector<int64_t> a = shuffled_indices(1000, 7, 0);
  EXPECT_EQ(a, shuffled_indices(1000, 7, 0));
  EXPECT_NE(a, shuffled_indices(1000, 8, 0));
  EXPECT_NE(a, shuffled_indices(1000, 7, 5000));
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(a, identity);
}

TEST(ShuffledIndices, PositionsAreRoughlyUniform) {
  // Where element 0 lands, over many seeds: every one of 8 positions about 1/8 of the time.
  constexpr int kTrials = 4000, kN = 8;
  std::vector<int> count(kN, 0);
  for (int s = 0; s < kTrials; ++s) {
    const std::vector<int64_t> p = shuffled_indices(kN, uint64_t(s), 0);
    ++count[std::find(p.begin(), p.end(), 0) - p.begin()];
  }
  for (int i = 0; i < kN; ++i) EXPECT_NEAR(count[i], kTrials / kN, 100) << "position " << i;
}

// ---------------------------------------------------------------- the real dataset

TEST(FashionMnistSmoke, InstalledTestSplit) {
  const std::string dir = default_fashion_mnist_dir();
  if (!fs::exists(dir))
    GTEST_SKIP() << dir << " not found: install Debian's dataset-fashion-mnist package "
                 << "(scripts/setup.sh does) to run this test";
  const Dataset d = load_fashion_mnist(dir, /*train=*/false);
  EXPECT_EQ(d.n, 10000);
  EXPECT_EQ(d.c, 1);
  EXPECT_EQ(d.h, 28);
  EXPECT_EQ(d.w, 28);
  ASSERT_EQ(d.labels.size(), 10000u);
  std::vector<int> per_class(10, 0);
  for (const int32_t label : d.labels) {
    ASSERT_GE(label, 0);
    ASSERT_LE(label, 9);
    ++per_class[label];
  }
  for (int k = 0; k < 10; ++k) EXPECT_EQ(per_class[k], 1000) << "class " << k;
  // Normalised with the training statistics, the test pixels have mean near 0, std near 1.
  double sum = 0.0, sum_sq = 0.0;
  for (const float v : d.images) {
    sum += v;
    sum_sq += double(v) * v;
  }
  const double mean = sum / double(d.images.size());
  const double stddev = std::sqrt(sum_sq / double(d.images.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(stddev, 1.0, 0.05);
}

// ---------------------------------------------------------------- CIFAR-10

// Writes `records` CIFAR-10 records: label r % 10, pixel i of record r = (r + i) % 256.
void write_cifar(const fs::path& p, int records, int label_offset = 0) {
  std::vector<uint8_t> bytes;
  for (int r = 0; r < records; ++r) {
    bytes.push_back(static_cast<uint8_t>((r + label_offset) % 10));
    for (int i = 0; i < 3072; ++i) bytes.push_back(static_cast<uint8_t>((r + i) % 256));
  }
  write_raw(p, bytes);
}

TEST_F(DataFiles, ReadsCifar10BinaryBatches) {
  for (int b = 1; b <= 5; ++b) write_cifar(path("data_batch_" + std::to_string(b) + ".bin"), 2, b);
  write_cifar(path("test_batch.bin"), 3);
  const Dataset train = load_cifar10(dir_.string(), true);
  EXPECT_EQ(train.n, 10);
  EXPECT_EQ(train.c, 3);
  EXPECT_EQ(train.h, 32);
  EXPECT_EQ(train.labels[0], 1);  // batch 1, record 0: label (0 + 1) % 10
  EXPECT_EQ(train.labels[9], (1 + 5) % 10);
  // Record 1 of batch 1, green plane, pixel 0: byte (1 + 1024) % 256 = 1.
  const float g = train.images[size_t(1 * 3072 + 1024)];
  EXPECT_NEAR(g, (1.0f / 255.0f - 0.4822f) / 0.2435f, 1e-6);
  const Dataset test = load_cifar10(dir_.string(), false);
  EXPECT_EQ(test.n, 3);
  EXPECT_EQ(load_dataset("cifar10", dir_.string(), false).n, 3);
}

TEST_F(DataFiles, Cifar10MissingAndTruncatedFilesAreNamed) {
  write_cifar(path("data_batch_1.bin"), 1);
  const std::string missing = error_of([&] { load_cifar10(dir_.string(), true); });
  EXPECT_NE(missing.find("data_batch_2.bin"), std::string::npos) << missing;
  EXPECT_NE(missing.find("data_batch_5.bin"), std::string::npos) << missing;
  EXPECT_EQ(missing.find(path("data_batch_1.bin").string()), std::string::npos) << missing;
  std::vector<uint8_t> cut(3073 + 100, 1);
  write_raw(path("test_batch.bin"), cut);
  const std::string trunc = error_of([&] { load_cifar10(dir_.string(), false); });
  EXPECT_NE(trunc.find("test_batch.bin"), std::string::npos) << trunc;
  EXPECT_NE(trunc.find("offset 3073"), std::string::npos) << trunc;
  const std::string none = error_of([&] { load_dataset("cifar10", "", true); });
  EXPECT_NE(none.find("--data"), std::string::npos) << none;
  const std::string unknown = error_of([&] { load_dataset("mnist", "", true); });
  EXPECT_NE(unknown.find("unknown dataset 'mnist'"), std::string::npos) << unknown;
  // Bad files are InputErrors (exit status 3 in the programs), bad options ConfigErrors (2).
  EXPECT_THROW(load_cifar10(dir_.string(), true), InputError);
  EXPECT_THROW(load_dataset("mnist", "", true), ConfigError);
}

TEST_F(DataFiles, Cifar10DirectoryInPlaceOfABatchFileIsSaid) {
  for (int b = 1; b <= 5; ++b) write_cifar(path("data_batch_" + std::to_string(b) + ".bin"), 2, b);
  fs::remove(path("data_batch_3.bin"));
  fs::create_directories(path("data_batch_3.bin"));
  const std::string msg = error_of([&] { load_cifar10(dir_.string(), true); });
  EXPECT_NE(msg.find("data_batch_3.bin' is a directory"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("missing"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- prefetching and padding

TEST(BatchPrefetcher, DeliversTheSameBatchesAsMakeBatchInOrder) {
  Context ctx;
  Dataset d;
  d.name = "toy";
  d.n = 50;
  d.c = 2;
  d.h = 3;
  d.w = 3;
  d.num_classes = 10;
  for (int64_t i = 0; i < d.n * d.image_size(); ++i) d.images.push_back(float(i) * 0.5f);
  for (int64_t i = 0; i < d.n; ++i) d.labels.push_back(int32_t(i % 10));
  std::vector<std::vector<int64_t>> batches;
  const std::vector<int64_t> order = shuffled_indices(d.n, 3, 0);
  for (int b = 0; b < 7; ++b)
    batches.emplace_back(order.begin() + b * 7, order.begin() + b * 7 + (b == 6 ? 5 : 7));
  BatchPrefetcher pf(ctx, d, batches);
  EXPECT_EQ(pf.size(), 7u);
  for (const auto& idx : batches) {
    ASSERT_FALSE(pf.done());
    Batch got = pf.next(ctx);
    Batch want = make_batch(ctx, d, idx);
    EXPECT_EQ(got.images.shape(), want.images.shape());
    EXPECT_EQ(got.images.to_vector(), want.images.to_vector());
    EXPECT_EQ(got.labels.to_vector_i32(), want.labels.to_vector_i32());
  }
  EXPECT_TRUE(pf.done());
  EXPECT_THROW(pf.next(ctx), Error);
  EXPECT_THROW(BatchPrefetcher(ctx, d, {{0, 50}}), Error);
  // Destroying a prefetcher whose batches were not all taken must not hang.
  BatchPrefetcher partial(ctx, d, batches);
  partial.next(ctx);
}

TEST(DatasetPadding, CentresImagesOnTheBackground) {
  Dataset d;
  d.name = "toy";
  d.n = 1;
  d.c = 1;
  d.h = 2;
  d.w = 2;
  d.images = {1, 2, 3, 4};
  d.labels = {0};
  const Dataset p = d.padded(4, -1.0f);
  EXPECT_EQ(p.h, 4);
  EXPECT_EQ(p.images,
            (std::vector<float>{-1, -1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1, -1, -1, -1}));
  EXPECT_THROW(d.padded(1, 0.0f), Error);
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// A safetensors file written by tests/fuzz/make_seeds.py from the format's description (not by
// the C++ writer) loads with its checksums verified, and a flipped data bit is caught.
TEST(Safetensors, IndependentlyWrittenFileWithChecksumsLoads) {
  const std::string path =
      std::string(CUDARTS_SOURCE_DIR) + "/tests/fuzz/seeds/fuzz_safetensors/valid.safetensors";
  std::map<std::string, std::string> md;
  const TensorMap t = load_safetensors(path, &md, true);
  EXPECT_EQ(t.at("a").f32, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(t.at("a").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(t.at("b").i32, (std::vector<int32_t>{7, -1, 0}));
  EXPECT_NE(md.at("cudarts").find("\"epoch\": 1"), std::string::npos);
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes[bytes.size() - 3] ^= 0x10;
  const std::string damaged = ::testing::TempDir() + "/damaged_seed.safetensors";
  std::ofstream(damaged, std::ios::binary) << bytes;
  EXPECT_THROW(load_safetensors(damaged, nullptr, true), InputError);
}

}  // namespace
}  // namespace cudarts
