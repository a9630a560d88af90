// Philox4x32-10 counter-based RNG (Salmon et al., SC'11), one implementation for host and
// device code, so a (seed, offset) pair gives the same bits on CPU and GPU.
// Element i of a draw at `offset` uses counter block (offset + i/4, stream), lane i%4.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define CUDARTS_HD __host__ __device__ __forceinline__
#else
#define CUDARTS_HD inline
#endif

namespace cudarts {

struct Philox4 {
  uint32_t v[4];
};

CUDARTS_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// counter (c0..c3), key (k0, k1) -> 4 random 32-bit words.
CUDARTS_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                 uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kMul0, c0, hi0, lo0);
    philox_mulhilo(kMul1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The 32-bit word number `index` of the stream (seed, stream) starting at block `offset`.
CUDARTS_HD uint32_t philox_word(uint64_t seed, uint64_t offset, uint32_t stream, uint64_t index) {
  const uint64_t block = offset + index / 4;
  const Philox4 r =
      philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), stream, 0u,
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[index % 4];
}

// Uniform in the open interval (0, 1), exactly representable, identical on host and device.
CUDARTS_HD float philox_uniform(uint32_t word) {
  return (static_cast<float>(word >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

// How many counter blocks a draw of n words consumes.
CUDARTS_HD uint64_t philox_blocks(uint64_t n) {
  return (n + 3) / 4;
}

}  // namespace cudarts
