// The sizes of the deterministic reductions (reduce.cuh), without CUDA or CUB: the kernels'
// launchers and the host emulation of the kernels (tests/cuda_emulation.h) share them.
#pragma once
#include <cstdint>

namespace cudarts::cuda {

constexpr int kWarp = 32;
constexpr int kReduceBlock = 256;      // threads of every block that calls block_sum
constexpr int64_t kMaxPartials = 256;  // per-row partial sums of a first pass, at most

// How many blocks (= partial sums) a first pass over n elements uses: a function of n only.
inline int64_t partial_count(int64_t n) {
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  return blocks < 1 ? 1 : (blocks < kMaxPartials ? blocks : kMaxPartials);
}

}  // namespace cudarts::cuda
