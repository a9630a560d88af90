// The pooling kernels (cuda/pool_kernels.cuh) run as host code under the emulation of
// cuda_emulation.h, in the launchers' geometry (cuda/pool.cu), against the CPU ops
// (ops::pool2d_* on a CPU context) bit for bit: the kernels repeat the CPU's arithmetic and its
// order of additions, ties (the first maximum of a window takes the gradient) and a NaN
// included. Inputs and outputs framed by guards. Built with the CUDA backend (it needs the CUDA
// headers), runs without a GPU.
#include <cmath>
#include <cstring>
#include <limits>

#include "cuda_emulation.h"  // first: cuda_runtime.h, whose attribute macros are redefined below
#include "launch.cuh"
#include "test_util.h"

#include "emulated_attributes.h"

#include "pool_kernels.cuh"

namespace cudarts {
namespace {

namespace pl = cuda::pool;
using Framed = emu::Framed<float>;
using emu::framed;
using emu::kOutGuard;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Case {
  const char* name;
  Shape x;
  int kernel, stride, pad;
  bool ties;  // values from {-2, ..., 2}: windows with several maxima
};

void launch(int64_t n, const std::function<void()>& kernel) {
  emu::run_grid(dim3(unsigned(cuda::grid_for(n))), kernel);
}

void check_case(const Case& c, PoolMode mode) {
  const bool max = mode == PoolMode::Max;
  SCOPED_TRACE(detail::cat(c.name, max ? ", max" : ", average"));
  const Pool2dParams p = Pool2dParams::make(mode, c.kernel, c.stride, c.pad);
  const Shape ys = ops::pool2d_output_shape(c.x, p);
  const auto pr = pl::make_problem(c.x, ys, p);
  ASSERT_TRUE(pr.has_value());
  auto x = test::random_vector(size_t(c.x.numel()), 1);
  if (c.ties)
    for (float& v : x) v = std::round(2.0f * v);
  if (max && x.size() > 20) x[17] = kNaN;  // NaN never wins a maximum; first in a window: kept
  const auto g = test::random_vector(size_t(ys.numel()), 2);

  Context cpu;
  Tensor tx = Tensor::from_vector(cpu, c.x, x), tg = Tensor::from_vector(cpu, ys, g);
  Tensor ty = Tensor::empty(cpu, ys), tdx = Tensor::empty(cpu, c.x);
  ops::pool2d_fwd(cpu, tx, ty, p);
  ops::pool2d_bwd(cpu, tx, ty, tg, tdx, p);

  Framed fx = framed(x, kNaN), fg = framed(g, kNaN);
  Framed fy = framed(std::vector<float>(size_t(ys.numel()), kNaN), kOutGuard);
  launch(ys.numel(), [&] {
    if (max)
      pl::pool_fwd_kernel<float, true>(fx.data(), fy.data(), *pr);
    else
      pl::pool_fwd_kernel<float, false>(fx.data(), fy.data(), *pr);
  });
  EXPECT_TRUE(fy.guards_intact()) << "forward wrote outside y";
  EXPECT_TRUE(same_bits(fy.body(), ty.to_vector())) << "forward";

  Framed fdx = framed(std::vector<float>(size_t(c.x.numel()), kNaN), kOutGuard);
  std::vector<uint8_t> arg(size_t(ys.numel()) + 2, 0xee);  // a guard byte at each end
  if (max)
    launch(ys.numel(), [&] { pl::pool_argmax_kernel<float>(fx.data(), arg.data() + 1, *pr); });
  EXPECT_EQ(arg.front(), 0xee);
  EXPECT_EQ(arg.back(), 0xee);
  launch(c.x.numel(), [&] {
    if (max)
      pl::pool_bwd_kernel<float, true>(fg.data(), arg.data() + 1, fdx.data(), *pr);
    else
      pl::pool_bwd_kernel<float, false>(fg.data(), nullptr, fdx.data(), *pr);
  });
  EXPECT_TRUE(fdx.guards_intact()) << "backward wrote outside dx";
  EXPECT_TRUE(same_bits(fdx.body(), tdx.to_vector())) << "backward";
}

// The DARTS poolings (3x3, stride 1 and 2, pad 1) on even and odd maps, with ties; 2x2 stride 2;
// a window larger than the map (4x4 pad 2 on 3x3); 1x1 maps; unequal extents.
TEST(PoolEmulation, ForwardAndBackwardRepeatTheCpuBits) {
  const std::vector<Case> cases = {
      {"3x3 s1 p1", {2, 3, 8, 8}, 3, 1, 1, false},
      {"3x3 s1 p1 ties", {2, 2, 7, 9}, 3, 1, 1, true},
      {"3x3 s2 p1 odd", {2, 3, 9, 7}, 3, 2, 1, false},
      {"3x3 s2 p1 ties", {1, 4, 8, 8}, 3, 2, 1, true},
      {"2x2 s2", {3, 2, 8, 6}, 2, 2, 0, true},
      {"4x4 s1 p2 on 3x3", {1, 2, 3, 3}, 4, 1, 2, false},
      {"3x3 s1 p1 on 1x1", {2, 3, 1, 1}, 3, 1, 1, false},
      {"3x3 s2 p1 on 2x5", {1, 1, 2, 5}, 3, 2, 1, true},
  };
  for (const Case& c : cases)
    for (PoolMode m : {PoolMode::Max, PoolMode::Average}) check_case(c, m);
}

// An element's plane and offset: the 32-bit division where both fit, the 64-bit one beyond
// (tensors of 2^32 elements are out of a test's memory; the helper is not). Expected values
// from exact integer arithmetic by hand (Python).
TEST(PoolEmulation, PlaneIndexBothWays) {
  const struct {
    int64_t e, size, plane;
    int at;
  } probes[] = {
      {0, 7, 0, 0},
      {6, 7, 0, 6},
      {7, 7, 1, 0},
      {1000, 64, 15, 40},
      {0xffffffffll, 1024, 4194303, 1023},       // the largest 32-bit element
      {0x100000000ll, 1024, 4194304, 0},         // the first 64-bit one
      {int64_t(5) << 32, 0x7fffffffll, 10, 10},  // the largest plane the kernels take
      {12345678901ll, 1 << 20, 11773, 793653},
  };
  for (const auto& p : probes) {
    const cuda::pool::PlaneIndex ix = cuda::pool::plane_index(p.e, p.size);
    EXPECT_EQ(ix.plane, p.plane) << p.e << " / " << p.size;
    EXPECT_EQ(ix.at, p.at) << p.e << " % " << p.size;
    EXPECT_EQ(ix.plane * p.size + ix.at, p.e);
  }
}

TEST(PoolEmulation, UncoveredPoolingsAreRefused) {
  const Shape x{1, 1, 40, 40};
  EXPECT_TRUE(pl::make_problem(x, Shape{1, 1, 38, 38}, Pool2dParams::make(PoolMode::Max, 3, 1, 0))
                  .has_value());
  // A 16x16 window has 256 elements: its argmax does not fit a byte.
  EXPECT_FALSE(pl::make_problem(x, Shape{1, 1, 25, 25}, Pool2dParams::make(PoolMode::Max, 16, 1, 0))
                   .has_value());
}

}  // namespace
}  // namespace cudarts
