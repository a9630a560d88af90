// Philox4x32-10: the published known-answer vectors, reproducibility, distribution sanity,
// and bit-equality between the host implementation and the device kernels (GPU only).
#include "test_util.h"

namespace cudarts {
namespace {

// Known-answer vectors of the Random123 distribution (counter, key -> output).
TEST(Philox, KnownAnswerVectors) {
  Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  Philox4 b = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[1], 0x41c83b0eu);
  EXPECT_EQ(b.v[2], 0xa20bc7c6u);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
  Philox4 c =
      philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c.v[0], 0xd16cfe09u);
  EXPECT_EQ(c.v[1], 0x94fdccebu);
  EXPECT_EQ(c.v[2], 0x5001e420u);
  EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(Philox, WordIndexingMapsToCounterBlocks) {
  // Word i of (seed, offset) is lane i%4 of block offset + i/4, key = seed.
  const uint64_t seed = 0x0123456789abcdefull;
  const Philox4 blk = philox4x32_10(7 + 2, 0, 0, 0, 0x89abcdefu, 0x01234567u);
  for (int lane = 0; lane < 4; ++lane) EXPECT_EQ(philox_word(seed, 7, 0, 8 + lane), blk.v[lane]);
}

TEST(Philox, UniformIsInOpenIntervalAndExact) {
  EXPECT_GT(philox_uniform(0u), 0.0f);
  EXPECT_LT(philox_uniform(~0u), 1.0f);
  EXPECT_EQ(philox_uniform(0u), 0.5f / 8388608.0f);
  double sum = 0.0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) sum += philox_uniform(philox_word(1, 0, 0, uint64_t(i)));
  EXPECT_NEAR(sum / n, 0.5, 4 * std::sqrt(1.0 / 12.0 / n));
}

TEST(Philox, SameSeedSameStreamDifferentSeedDifferent) {
  Context c1(Device::cpu(), ContextOptions{42}), c2(Device::cpu(), ContextOptions{42}),
      c3(Device::cpu(), ContextOptions{43});
  Tensor a = Tensor::empty(c1, Shape{1000}), b = Tensor::empty(c2, Shape{1000}),
         c = Tensor::empty(c3, Shape{1000});
  init_normal(c1, a, 0.0f, 1.0f);
  init_normal(c2, b, 0.0f, 1.0f);
  init_normal(c3, c, 0.0f, 1.0f);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  // A second draw continues the stream instead of repeating it.
  Tensor a2 = Tensor::empty(c1, Shape{1000});
  init_normal(c1, a2, 0.0f, 1.0f);
  EXPECT_NE(a.to_vector(), a2.to_vector());
}

TEST(Philox, NormalDrawHasUnitMoments) {
  const std::vector<float> v = draw_normal(9, 0, 200000, 0.0f, 1.0f);
  double m = 0.0, s = 0.0;
  for (float x : v) m += x;
  m /= double(v.size());
  for (float x : v) s += (x - m) * (x - m);
  s /= double(v.size());
  EXPECT_NEAR(m, 0.0, 0.01);
  EXPECT_NEAR(s, 1.0, 0.02);
}

TEST(Philox, RandomOpsMatchHostDraws) {
  Context ctx;
  Tensor w = Tensor::empty(ctx, Shape{37}, DType::I32);
  ops::random_words(ctx, w, 11, 5);
  const std::vector<int32_t> words = w.to_vector_i32();
  for (int i = 0; i < 37; ++i) EXPECT_EQ(uint32_t(words[i]), philox_word(11, 5, 0, uint64_t(i)));
  Tensor u = Tensor::empty(ctx, Shape{37});
  ops::random_uniform(ctx, u, 11, 5, -2.0f, 3.0f);
  EXPECT_EQ(u.to_vector(), draw_uniform(11, 5, 37, -2.0f, 3.0f));
}

TEST(Philox, DeviceMatchesHostBitForBit) {
  CUDARTS_REQUIRE_GPU();
  Context cpu, gpu(Device::cuda(0));
  for (int64_t n : {1, 1000, 1 << 20}) {
    Tensor hw = Tensor::empty(cpu, Shape{n}, DType::I32),
           dw = Tensor::empty(gpu, Shape{n}, DType::I32);
    ops::random_words(cpu, hw, 0xfeedull << 32 | 7, 12345);
    ops::random_words(gpu, dw, 0xfeedull << 32 | 7, 12345);
    EXPECT_EQ(hw.to_vector_i32(), dw.to_vector_i32()) << "n = " << n;
    Tensor hu = Tensor::empty(cpu, Shape{n}), du = Tensor::empty(gpu, Shape{n});
    ops::random_uniform(cpu, hu, 3, 99, 0.0f, 1.0f);
    ops::random_uniform(gpu, du, 3, 99, 0.0f, 1.0f);
    EXPECT_EQ(hu.to_vector(), du.to_vector()) << "n = " << n;
  }
}

}  // namespace
}  // namespace cudarts
