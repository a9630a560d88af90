// An emulation of the CUDA execution model for running kernels as host code (tests only; needs
// the CUDA headers, not a GPU): the blocks of a grid one after another, the threads (up to
// kThreads) of a block as cooperative fibers (ucontext) that switch only at barriers and shuffles,
// a block barrier that reports divergence (a live thread that never arrives) as a deadlock,
// shuffles through a per-warp exchange. What this cannot see: the GPU memory model, real timing,
// register and shared-memory limits of the device. The including test defines the attribute
// macros (__global__, __shared__, ...) as its kernels need them.
#pragma once
#include <cuda_runtime.h>  // dim3, uint3, cudaStream_t
#include <gtest/gtest.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

#include "reduce_sizes.h"

// ---------------------------------------------------------------- the emulated machine
namespace emu {

constexpr int kThreads = 256;  // the most threads of an emulated block
constexpr int kWarps = kThreads / 32;
constexpr size_t kStackBytes = size_t(64) << 10;

struct Barrier {
  int expected = 0, arrived = 0;
  long generation = 0;
};

struct Machine {
  ucontext_t scheduler;
  ucontext_t fibers[kThreads];
  std::vector<char> stacks = std::vector<char>(kStackBytes * kThreads);
  bool done[kThreads] = {};
  int current = 0;
  long progress = 0;  // barriers completed + threads finished
  Barrier block;
  Barrier warps[kWarps];
  float exchange[kWarps][32];
  std::function<void()> body;
};

inline Machine& machine() {
  static Machine m;
  return m;
}

inline void yield() {
  Machine& m = machine();
  swapcontext(&m.fibers[m.current], &m.scheduler);
}

inline void wait(Barrier& b) {
  const long gen = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    ++machine().progress;
    return;
  }
  while (b.generation == gen) yield();
}

inline void fiber_main() {
  Machine& m = machine();
  m.body();
  m.done[m.current] = true;
  ++m.progress;
  swapcontext(&m.fibers[m.current], &m.scheduler);  // never resumed
}

}  // namespace emu

// The CUDA built-ins the kernels use (the host compilation of cuda_runtime.h declares none).
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

inline void __syncthreads() {
  emu::wait(emu::machine().block);
}

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) throw std::logic_error("emulation: only full-warp shuffles");
  emu::Machine& m = emu::machine();
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  m.exchange[warp][lane] = v;
  emu::wait(m.warps[warp]);
  const float r = m.exchange[warp][lane ^ lane_mask];
  emu::wait(m.warps[warp]);
  return r;
}

namespace emu {
// Runs `body` (a call of one kernel with its arguments) over the blocks of `grid` (x fastest),
// `threads` threads each (at most kThreads; block_sum needs all of them); `before_block` runs
// before every block, `after_block` after it.
inline void run_blocks(dim3 grid, int threads, const std::function<void()>& body,
                       const std::function<void()>& before_block = {},
                       const std::function<void(dim3)>& after_block = {}) {
  Machine& m = machine();
  if (threads < 1 || threads > kThreads) throw std::logic_error("emulation: bad block size");
  gridDim = grid;
  blockDim = dim3(unsigned(threads), 1, 1);
  m.body = body;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        if (before_block) before_block();
        m.block = {threads, 0, 0};
        for (int w = 0; w < kWarps; ++w) m.warps[w] = {std::clamp(threads - 32 * w, 0, 32), 0, 0};
        for (int t = 0; t < threads; ++t) {
          m.done[t] = false;
          getcontext(&m.fibers[t]);
          m.fibers[t].uc_stack.ss_sp = m.stacks.data() + size_t(t) * kStackBytes;
          m.fibers[t].uc_stack.ss_size = kStackBytes;
          m.fibers[t].uc_link = nullptr;
          makecontext(&m.fibers[t], fiber_main, 0);
        }
        for (;;) {
          const long before = m.progress;
          bool live = false;
          for (int t = 0; t < threads; ++t) {
            if (m.done[t]) continue;
            live = true;
            m.current = t;
            threadIdx = {unsigned(t), 0, 0};
            blockIdx = {bx, by, bz};
            swapcontext(&m.scheduler, &m.fibers[t]);
          }
          if (!live) break;
          ASSERT_NE(m.progress, before) << "block (" << bx << ", " << by << ", " << bz
                                        << "): threads wait at a barrier others never reach";
        }
        if (after_block) after_block(dim3(bx, by, bz));
      }
}

// A kernel launched with kThreads threads per block (the reductions' block size).
inline void run_grid(dim3 grid, const std::function<void()>& body,
                     const std::function<void()>& before_block = {},
                     const std::function<void(dim3)>& after_block = {}) {
  run_blocks(grid, kThreads, body, before_block, after_block);
}

// A serial kernel (<<<1, 1>>>).
inline void run_serial(const std::function<void()>& body) {
  run_blocks(dim3(1), 1, body);
}
}  // namespace emu

namespace emu {
constexpr int64_t kGuard = 37;  // guard elements before and after every buffer
constexpr float kOutGuard = 4242.0f;

// A host buffer framed by guards: NaN for inputs (a stray read poisons a result), kOutGuard for
// outputs (a stray write is seen).
template <class T>
struct Framed {
  std::vector<T> all;
  T* data() { return all.data() + kGuard; }
  int64_t n() const { return int64_t(all.size()) - 2 * kGuard; }
  std::vector<T> body() const { return {all.begin() + kGuard, all.end() - kGuard}; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i) {
      const T a = all[size_t(i)], b = all[all.size() - 1 - size_t(i)];
      if (!((std::isnan(a) && std::isnan(b)) || (a == T(kOutGuard) && b == T(kOutGuard))))
        return false;
    }
    return true;
  }
};

template <class T>
Framed<T> framed(const std::vector<T>& v, T guard) {
  Framed<T> f;
  f.all.assign(size_t(v.size() + 2 * kGuard), guard);
  std::copy(v.begin(), v.end(), f.all.begin() + kGuard);
  return f;
}
}  // namespace emu

// CUB's block sum (reduce.cuh: every thread of the block calls it and gets the total) for the
// emulated kernels, which are compiled with CUDARTS_KERNEL_EMULATION instead of reduce.cuh: a
// fixed-order sum over the block's threads.
namespace cudarts::cuda {
static_assert(kReduceBlock == emu::kThreads);
inline double block_sum(double v) {
  static double values[kReduceBlock];
  values[threadIdx.x] = v;
  __syncthreads();
  double s = 0.0;
  for (double x : values) s += x;
  __syncthreads();
  return s;
}
}  // namespace cudarts::cuda

namespace emu {
// ||got - want|| / ||want|| in double; infinite when got has a non-finite element.
inline double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double d = 0.0, r = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    d += std::pow(double(got[i]) - want[i], 2);
    r += std::pow(double(want[i]), 2);
  }
  return std::sqrt(d / std::max(r, 1e-300));
}
}  // namespace emu
