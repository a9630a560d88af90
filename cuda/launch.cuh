// Launch geometry shared by the grid-stride kernels of the CUDA backend (internal).
#pragma once
#include <cstdint>

namespace cudarts::cuda {

constexpr int kBlock = 256;  // threads per block of the elementwise kernels

// Blocks for n elements in a grid-stride loop (at least 1, capped).
inline int grid_for(int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  return static_cast<int>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

}  // namespace cudarts::cuda
