// The CPU reference ops against independent naive loops (double precision) written here,
// plus a few hand-computed cases. These prove the reference that every backend is
// compared with.
#include <cstring>
#include <limits>

#include "test_util.h"

namespace cudarts {
namespace {

using test::all_close;
using test::random_vector;

struct ConvCase {
  int64_t n, c, h, w, k, r;
  Conv2dParams p;
  bool bias;
};

std::string conv_name(const ConvCase& cc) {
  return detail::cat("x[", cc.n, ",", cc.c, ",", cc.h, ",", cc.w, "] k", cc.k, " r", cc.r, " s",
                     cc.p.stride_h, " p", cc.p.pad_h, " d", cc.p.dilation_h, " g", cc.p.groups,
                     cc.bias ? " bias" : "");
}

// Naive direct convolution and its two gradients, in double.
struct NaiveConv {
  ConvCase cc;
  int64_t cg, kg, p, q;
  explicit NaiveConv(const ConvCase& c) : cc(c) {
    cg = c.c / c.p.groups;
    kg = c.k / c.p.groups;
    p = (c.h + 2 * c.p.pad_h - c.p.dilation_h * (c.r - 1) - 1) / c.p.stride_h + 1;
    q = (c.w + 2 * c.p.pad_w - c.p.dilation_w * (c.r - 1) - 1) / c.p.stride_w + 1;
  }
  // Calls f(n, k, pi, qi, ci_global, ri, si, input_index, weight_index) for every valid tap.
  template <class F>
  void taps(F f) const {
    for (int64_t ni = 0; ni < cc.n; ++ni)
      for (int64_t ki = 0; ki < cc.k; ++ki) {
        const int64_t g = ki / kg;
        for (int64_t pi = 0; pi < p; ++pi)
          for (int64_t qi = 0; qi < q; ++qi)
            for (int64_t cl = 0; cl < cg; ++cl)
              for (int64_t ri = 0; ri < cc.r; ++ri)
                for (int64_t si = 0; si < cc.r; ++si) {
                  const int64_t hi = pi * cc.p.stride_h - cc.p.pad_h + ri * cc.p.dilation_h;
                  const int64_t wi = qi * cc.p.stride_w - cc.p.pad_w + si * cc.p.dilation_w;
                  if (hi < 0 || hi >= cc.h || wi < 0 || wi >= cc.w) continue;
                  const int64_t ci = g * cg + cl;
                  f(((ni * cc.k + ki) * p + pi) * q + qi,
                    ((ni * cc.c + ci) * cc.h + hi) * cc.w + wi,
                    ((ki * cg + cl) * cc.r + ri) * cc.r + si);
                }
      }
  }
};

class CpuConv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CpuConv, ForwardAndGradientsMatchNaiveLoops) {
  const ConvCase cc = GetParam();
  const NaiveConv nv(cc);
  Context ctx;
  const Shape xs{cc.n, cc.c, cc.h, cc.w}, ws{cc.k, nv.cg, cc.r, cc.r}, ys{cc.n, cc.k, nv.p, nv.q};
  ASSERT_EQ(ops::conv2d_output_shape(xs, ws, cc.p), ys);
  const auto xv = random_vector(size_t(xs.numel()), 1), wv = random_vector(size_t(ws.numel()), 2),
             bv = random_vector(size_t(cc.k), 3), gv = random_vector(size_t(ys.numel()), 4),
             dw0 = random_vector(size_t(ws.numel()), 5), db0 = random_vector(size_t(cc.k), 6);
  Tensor x = Tensor::from_vector(ctx, xs, xv), w = Tensor::from_vector(ctx, ws, wv),
         b = Tensor::from_vector(ctx, Shape{cc.k}, bv), dy = Tensor::from_vector(ctx, ys, gv);
  Tensor y = Tensor::empty(ctx, ys), dx = Tensor::full(ctx, xs, 99.0f);
  Tensor dw = Tensor::from_vector(ctx, ws, dw0), db = Tensor::from_vector(ctx, Shape{cc.k}, db0);
  ops::conv2d_fwd(ctx, x, w, cc.bias ? &b : nullptr, y, cc.p);
  ops::conv2d_bwd_data(ctx, dy, w, dx, cc.p);
  ops::conv2d_bwd_filter(ctx, x, dy, dw, cc.bias ? &db : nullptr, cc.p);

  std::vector<double> ry(size_t(ys.numel()), 0.0), rdx(size_t(xs.numel()), 0.0),
      rdw(dw0.begin(), dw0.end()), rdb(db0.begin(), db0.end());
  if (cc.bias)
    for (int64_t i = 0; i < ys.numel(); ++i) ry[i] = bv[(i / (nv.p * nv.q)) % cc.k];
  nv.taps([&](int64_t yi, int64_t xi, int64_t wi) {
    ry[yi] += double(xv[xi]) * wv[wi];
    rdx[xi] += double(gv[yi]) * wv[wi];
    rdw[wi] += double(gv[yi]) * xv[xi];
  });
  if (cc.bias)
    for (int64_t i = 0; i < ys.numel(); ++i) rdb[(i / (nv.p * nv.q)) % cc.k] += gv[i];
  EXPECT_TRUE(all_close(y.to_vector(), ry, 1e-4, 1e-4)) << "forward";
  EXPECT_TRUE(all_close(dx.to_vector(), rdx, 1e-4, 1e-4)) << "backward data";
  EXPECT_TRUE(all_close(dw.to_vector(), rdw, 1e-4, 1e-3)) << "backward filter (+=)";
  if (cc.bias) EXPECT_TRUE(all_close(db.to_vector(), rdb, 1e-4, 1e-3)) << "bias gradient (+=)";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CpuConv,
    ::testing::Values(ConvCase{2, 3, 7, 6, 4, 3, Conv2dParams::make(1, 1), true},
                      ConvCase{2, 4, 9, 9, 6, 3, Conv2dParams::make(2, 1), false},
                      ConvCase{1, 4, 10, 8, 4, 3, Conv2dParams::make(1, 2, 2), false},
                      ConvCase{2, 6, 8, 8, 4, 3, Conv2dParams::make(1, 1, 1, 2), true},
                      ConvCase{3, 5, 8, 7, 5, 3, Conv2dParams::make(1, 1, 1, 5), false},
                      ConvCase{2, 4, 11, 11, 4, 5, Conv2dParams::make(2, 4, 2, 4), false},
                      ConvCase{2, 6, 5, 5, 12, 3, Conv2dParams::make(1, 1, 1, 6), true},
                      ConvCase{2, 8, 6, 6, 5, 1, Conv2dParams::make(1, 0), true},
                      ConvCase{2, 3, 7, 7, 4, 1, Conv2dParams::make(2, 0), false},
                      ConvCase{1, 2, 5, 5, 3, 5, Conv2dParams::make(1, 0), false},
                      ConvCase{8, 64, 8, 8, 64, 5, Conv2dParams::make(1, 2, 1, 64), false},
                      ConvCase{8, 64, 8, 8, 64, 1, Conv2dParams::make(1, 0), false},
                      ConvCase{8, 32, 16, 16, 32, 5, Conv2dParams::make(2, 2, 1, 32), false}),
    [](const ::testing::TestParamInfo<ConvCase>& i) { return "case" + std::to_string(i.index); });

TEST(CpuConv, HandComputedThreeByThree) {
  // x = 1..9 as a 3x3 image, w = all ones 2x2, stride 1, no padding: sums of 2x2 windows.
  Context ctx;
  Tensor x = Tensor::from_vector(ctx, Shape{1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = Tensor::from_vector(ctx, Shape{1, 1, 2, 2}, {1, 1, 1, 1});
  Tensor y = Tensor::empty(ctx, Shape{1, 1, 2, 2});
  ops::conv2d_fwd(ctx, x, w, nullptr, y, {});
  EXPECT_EQ(y.to_vector(), (std::vector<float>{12, 16, 24, 28}));
  // dy = ones: dx counts how many windows cover each pixel.
  Tensor dy = Tensor::full(ctx, Shape{1, 1, 2, 2}, 1.0f), dx = Tensor::empty(ctx, x.shape());
  ops::conv2d_bwd_data(ctx, dy, w, dx, {});
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{1, 2, 1, 2, 4, 2, 1, 2, 1}));
}

TEST(CpuBatchNorm, TrainForwardBackwardAndRunningStats) {
  Context ctx;
  const int64_t n = 3, c = 2, h = 2, w = 3, m = n * h * w;
  const Shape xs{n, c, h, w};
  const auto xv = random_vector(size_t(xs.numel()), 7, 2.0f),
             gv = random_vector(size_t(xs.numel()), 8);
  const std::vector<float> gamma{1.5f, -0.5f}, beta{0.25f, 2.0f};
  Tensor x = Tensor::from_vector(ctx, xs, xv), dy = Tensor::from_vector(ctx, xs, gv);
  Tensor g = Tensor::from_vector(ctx, Shape{c}, gamma),
         b = Tensor::from_vector(ctx, Shape{c}, beta);
  Tensor rm = Tensor::from_vector(ctx, Shape{c}, {0.5f, -1.0f}),
         rv = Tensor::from_vector(ctx, Shape{c}, {2.0f, 1.0f});
  Tensor y = Tensor::empty(ctx, xs), sm = Tensor::empty(ctx, Shape{c}),
         si = Tensor::empty(ctx, Shape{c});
  BatchNormParams prm{0.1f, 1e-5f};
  ops::batchnorm_fwd_train(ctx, x, &g, &b, &rm, &rv, y, sm, si, prm);
  Tensor dx = Tensor::empty(ctx, xs), dg = Tensor::full(ctx, Shape{c}, 1.0f),
         dbt = Tensor::zeros(ctx, Shape{c});
  ops::batchnorm_bwd(ctx, dy, x, &g, sm, si, dx, &dg, &dbt);

  std::vector<double> ry(xv.size()), rdx(xv.size()), rdg{1.0, 1.0}, rdb{0.0, 0.0}, rrm(2), rrv(2);
  const double rm0[2] = {0.5, -1.0}, rv0[2] = {2.0, 1.0};
  for (int64_t ci = 0; ci < c; ++ci) {
    std::vector<int64_t> idx;
    for (int64_t ni = 0; ni < n; ++ni)
      for (int64_t j = 0; j < h * w; ++j) idx.push_back((ni * c + ci) * h * w + j);
    double mean = 0, var = 0;
    for (auto i : idx) mean += xv[i];
    mean /= m;
    for (auto i : idx) var += (xv[i] - mean) * (xv[i] - mean);
    var /= m;
    const double is = 1.0 / std::sqrt(var + 1e-5);
    rrm[ci] = 0.9 * rm0[ci] + 0.1 * mean;
    rrv[ci] = 0.9 * rv0[ci] + 0.1 * var * m / (m - 1);
    // Backward from the textbook derivation: dx = gamma*is*(dy - mean(dy) - xhat*mean(dy*xhat)).
    double mdy = 0, mdyx = 0;
    for (auto i : idx) {
      const double xh = (xv[i] - mean) * is;
      ry[i] = gamma[ci] * xh + beta[ci];
      mdy += gv[i];
      mdyx += gv[i] * xh;
    }
    rdg[ci] += mdyx;
    rdb[ci] += mdy;
    mdy /= m;
    mdyx /= m;
    for (auto i : idx) rdx[i] = gamma[ci] * is * (gv[i] - mdy - (xv[i] - mean) * is * mdyx);
  }
  EXPECT_TRUE(all_close(y.to_vector(), ry, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(rm.to_vector(), rrm, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(rv.to_vector(), rrv, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(dx.to_vector(), rdx, 1e-4, 1e-5));
  EXPECT_TRUE(all_close(dg.to_vector(), rdg, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dbt.to_vector(), rdb, 1e-5, 1e-5));

  // Inference uses the running statistics.
  Tensor yi = Tensor::empty(ctx, xs);
  ops::batchnorm_fwd_infer(ctx, x, &g, &b, rm, rv, yi, 1e-5f);
  std::vector<double> ryi(xv.size());
  for (int64_t i = 0; i < xs.numel(); ++i) {
    const int64_t ci = (i / (h * w)) % c;
    ryi[i] = gamma[ci] * (xv[i] - rrm[ci]) / std::sqrt(rrv[ci] + 1e-5) + beta[ci];
  }
  EXPECT_TRUE(all_close(yi.to_vector(), ryi, 1e-5, 1e-5));
}

TEST(CpuBatchNorm, AffineFalseNormalisesToZeroMeanUnitVariance) {
  Context ctx;
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 5, 5}, 3, 4.0f);
  Tensor y = Tensor::empty(ctx, x.shape()), sm = Tensor::empty(ctx, Shape{3}),
         si = Tensor::empty(ctx, Shape{3});
  ops::batchnorm_fwd_train(ctx, x, nullptr, nullptr, nullptr, nullptr, y, sm, si, {});
  const auto v = y.to_vector();
  for (int c = 0; c < 3; ++c) {
    double s = 0, s2 = 0;
    for (int n = 0; n < 4; ++n)
      for (int j = 0; j < 25; ++j) {
        const double t = v[(n * 3 + c) * 25 + j];
        s += t;
        s2 += t * t;
      }
    EXPECT_NEAR(s / 100, 0.0, 1e-5);
    EXPECT_NEAR(s2 / 100, 1.0, 1e-3);
  }
}

struct PoolCase {
  PoolMode mode;
  int k, s, p;
  int64_t h, w;
};

class CpuPool : public ::testing::TestWithParam<PoolCase> {};

TEST_P(CpuPool, MatchesNaiveWindows) {
  const PoolCase pc = GetParam();
  Context ctx;
  const Pool2dParams prm = Pool2dParams::make(pc.mode, pc.k, pc.s, pc.p);
  const Shape xs{2, 3, pc.h, pc.w};
  const Shape ys = ops::pool2d_output_shape(xs, prm);
  const auto xv = test::distinct_vector(size_t(xs.numel()), 11);
  const auto gv = random_vector(size_t(ys.numel()), 12);
  Tensor x = Tensor::from_vector(ctx, xs, xv), dy = Tensor::from_vector(ctx, ys, gv);
  Tensor y = Tensor::empty(ctx, ys), dx = Tensor::full(ctx, xs, 5.0f);
  ops::pool2d_fwd(ctx, x, y, prm);
  ops::pool2d_bwd(ctx, x, y, dy, dx, prm);
  std::vector<double> ry(size_t(ys.numel())), rdx(size_t(xs.numel()), 0.0);
  for (int64_t nc = 0; nc < 6; ++nc)
    for (int64_t pi = 0; pi < ys[2]; ++pi)
      for (int64_t qi = 0; qi < ys[3]; ++qi) {
        double best = -1e30, sum = 0;
        int64_t arg = -1, count = 0;
        for (int a = 0; a < pc.k; ++a)
          for (int b = 0; b < pc.k; ++b) {
            const int64_t hi = pi * pc.s - pc.p + a, wi = qi * pc.s - pc.p + b;
            if (hi < 0 || hi >= pc.h || wi < 0 || wi >= pc.w) continue;
            const int64_t i = (nc * pc.h + hi) * pc.w + wi;
            if (xv[i] > best) best = xv[i], arg = i;
            sum += xv[i];
            ++count;
          }
        const int64_t o = (nc * ys[2] + pi) * ys[3] + qi;
        if (pc.mode == PoolMode::Max) {
          ry[o] = best;
          rdx[arg] += gv[o];
        } else {
          ry[o] = sum / count;
          for (int a = 0; a < pc.k; ++a)
            for (int b = 0; b < pc.k; ++b) {
              const int64_t hi = pi * pc.s - pc.p + a, wi = qi * pc.s - pc.p + b;
              if (hi >= 0 && hi < pc.h && wi >= 0 && wi < pc.w)
                rdx[(nc * pc.h + hi) * pc.w + wi] += gv[o] / count;
            }
        }
      }
  EXPECT_TRUE(all_close(y.to_vector(), ry, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(dx.to_vector(), rdx, 1e-5, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuPool,
                         ::testing::Values(PoolCase{PoolMode::Max, 3, 1, 1, 6, 5},
                                           PoolCase{PoolMode::Max, 2, 2, 0, 8, 8},
                                           PoolCase{PoolMode::Max, 3, 2, 1, 7, 7},
                                           PoolCase{PoolMode::Average, 3, 1, 1, 6, 5},
                                           PoolCase{PoolMode::Average, 3, 2, 1, 7, 8},
                                           PoolCase{PoolMode::Average, 2, 2, 0, 4, 6}));

TEST(CpuPool, AverageExcludesPaddingByHand) {
  // 3x3 average with padding 1 at the corner of a 2x2 image of ones and a 4: (1+1+1+4)/4.
  Context ctx;
  Tensor x = Tensor::from_vector(ctx, Shape{1, 1, 2, 2}, {1, 1, 1, 4});
  Tensor y = Tensor::empty(ctx, Shape{1, 1, 2, 2});
  ops::pool2d_fwd(ctx, x, y, Pool2dParams::make(PoolMode::Average, 3, 1, 1));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1.75f, 1.75f, 1.75f, 1.75f}));
}

TEST(CpuLinear, MatchesNaiveProducts) {
  Context ctx;
  const int64_t n = 5, in = 7, out = 3;
  const auto xv = random_vector(n * in, 1), wv = random_vector(out * in, 2),
             bv = random_vector(out, 3), gv = random_vector(n * out, 4),
             dw0 = random_vector(out * in, 5);
  Tensor x = Tensor::from_vector(ctx, Shape{n, in}, xv),
         w = Tensor::from_vector(ctx, Shape{out, in}, wv),
         b = Tensor::from_vector(ctx, Shape{out}, bv),
         dy = Tensor::from_vector(ctx, Shape{n, out}, gv);
  Tensor y = Tensor::empty(ctx, Shape{n, out}), dx = Tensor::empty(ctx, Shape{n, in});
  Tensor dw = Tensor::from_vector(ctx, Shape{out, in}, dw0),
         db = Tensor::full(ctx, Shape{out}, 1.0f);
  ops::linear_fwd(ctx, x, w, &b, y);
  ops::linear_bwd_data(ctx, dy, w, dx);
  ops::linear_bwd_weight(ctx, x, dy, dw, &db);
  std::vector<double> ry(n * out), rdx(n * in, 0), rdw(dw0.begin(), dw0.end()), rdb(out, 1.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[o];
      for (int64_t j = 0; j < in; ++j) {
        s += double(xv[i * in + j]) * wv[o * in + j];
        rdx[i * in + j] += double(gv[i * out + o]) * wv[o * in + j];
        rdw[o * in + j] += double(gv[i * out + o]) * xv[i * in + j];
      }
      ry[i * out + o] = s;
      rdb[o] += gv[i * out + o];
    }
  EXPECT_TRUE(all_close(y.to_vector(), ry, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dx.to_vector(), rdx, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(dw.to_vector(), rdw, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(db.to_vector(), rdb, 1e-5, 1e-5));
}

TEST(CpuSoftmaxXent, HandComputed) {
  // Row 0: logits (0, 0) label 1 -> loss log 2, prediction ties go to the first index (miss).
  // Row 1: logits (ln 3, 0) label 0 -> p = (3/4, 1/4), loss -ln(3/4), hit.
  Context ctx;
  Tensor z = Tensor::from_vector(ctx, Shape{2, 2}, {0.0f, 0.0f, std::log(3.0f), 0.0f});
  Tensor lab = Tensor::from_vector_i32(ctx, Shape{2}, {1, 0});
  Tensor loss = Tensor::empty(ctx, Shape{1}), dz = Tensor::empty(ctx, Shape{2, 2}),
         hits = Tensor::empty(ctx, Shape{1});
  ops::softmax_xent(ctx, z, lab, loss, dz, hits);
  EXPECT_NEAR(loss.item(), (std::log(2.0) - std::log(0.75)) / 2, 1e-6);
  EXPECT_EQ(hits.item(), 1.0f);
  EXPECT_TRUE(all_close(dz.to_vector(), {0.25, -0.25, -0.125, 0.125}, 1e-6, 1e-7));
  Tensor bad = Tensor::from_vector_i32(ctx, Shape{2}, {1, 2});
  EXPECT_THROW(ops::softmax_xent(ctx, z, bad, loss, dz, hits), Error);
}

TEST(CpuElementwise, AddScaleAxpyReluGlobalPool) {
  Context ctx;
  Tensor a = Tensor::from_vector(ctx, Shape{1, 2, 1, 2}, {1, -2, 3, -4});
  Tensor b = Tensor::from_vector(ctx, Shape{1, 2, 1, 2}, {10, 20, 30, 40});
  Tensor y = Tensor::empty(ctx, a.shape());
  ops::add(ctx, a, b, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{11, 18, 33, 36}));
  ops::scale(ctx, a, -2.0f, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{-2, 4, -6, 8}));
  ops::axpy(ctx, 0.5f, b, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{3, 14, 9, 28}));
  ops::relu_fwd(ctx, a, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{1, 0, 3, 0}));
  Tensor dx = Tensor::empty(ctx, a.shape());
  ops::relu_bwd(ctx, b, y, dx);
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{10, 0, 30, 0}));
  Tensor g = Tensor::empty(ctx, Shape{1, 2});
  ops::global_avgpool_fwd(ctx, b, g);
  EXPECT_EQ(g.to_vector(), (std::vector<float>{15, 35}));
  ops::global_avgpool_bwd(ctx, g, dx);
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{7.5f, 7.5f, 17.5f, 17.5f}));
}

// add_n is the left-to-right float sum that add + axpy give term by term (GradSum relies on
// it to keep searches bit-identical); sizes past one 4096-element chunk and a single term.
TEST(CpuElementwise, AddNEqualsTheTermByTermSum) {
  Context ctx;
  for (int terms : {1, 2, 5}) {
    const int64_t n = 9000;
    std::vector<std::vector<float>> v;
    std::vector<Tensor> xs;
    std::vector<const Tensor*> ps;
    for (int t = 0; t < terms; ++t) {
      v.push_back(random_vector(n, 40 + t));
      xs.push_back(Tensor::from_vector(ctx, Shape{n}, v.back()));
    }
    for (auto& x : xs) ps.push_back(&x);
    Tensor y = Tensor::empty(ctx, Shape{n});
    ops::add_n(ctx, ps, y);
    const std::vector<float> got = y.to_vector();
    for (int64_t i = 0; i < n; ++i) {
      volatile float acc = v[0][size_t(i)];  // float rounding after every term
      for (int t = 1; t < terms; ++t) acc = acc + v[size_t(t)][size_t(i)];
      ASSERT_EQ(got[size_t(i)], acc) << terms << " terms, element " << i;
    }
  }
  Tensor a = Tensor::from_vector(ctx, Shape{3}, {1e8f, 1.0f, 1e8f});
  Tensor b = Tensor::from_vector(ctx, Shape{3}, {1.0f, 1e8f, -1e8f});
  Tensor c = Tensor::from_vector(ctx, Shape{3}, {-1e8f, -1e8f, 1.0f});
  Tensor y = Tensor::empty(ctx, Shape{3});
  // (1e8 + 1) - 1e8 = 0 in float but (1e8 - 1e8) + 1 = 1: the order shows.
  ops::add_n(ctx, {&a, &b, &c}, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.0f, 0.0f, 1.0f}));
}

// The mix ops with null entries (Zero candidates), by hand; mix_fwd in place on a later
// candidate; mix_bwd writes only its non-null outputs.
TEST(CpuMixOps, NullEntriesAreExactZerosAndMixFwdRunsInPlace) {
  Context ctx;
  Tensor w = Tensor::from_vector(ctx, Shape{3}, {0.5f, 0.25f, 2.0f});
  Tensor x1 = Tensor::from_vector(ctx, Shape{2}, {4.0f, -8.0f});
  Tensor x2 = Tensor::from_vector(ctx, Shape{2}, {1.0f, 3.0f});
  Tensor y = Tensor::empty(ctx, Shape{2});
  ops::mix_fwd(ctx, w, {nullptr, &x1, &x2}, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{3.0f, 4.0f}));  // 0.25 x1 + 2 x2
  ops::mix_fwd(ctx, w, {nullptr, nullptr, nullptr}, y);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.0f, 0.0f}));
  Tensor g = Tensor::from_vector(ctx, Shape{3}, {7.0f, 7.0f, 7.0f});
  Tensor dy = Tensor::from_vector(ctx, Shape{2}, {1.0f, -1.0f});
  ops::mix_scores(ctx, dy, {&x1, nullptr, &x2}, g);
  EXPECT_EQ(g.to_vector(), (std::vector<float>{12.0f, 0.0f, -2.0f}));
  // In place on the last candidate: y = x2 (a chunked sum must not overwrite it early).
  const int64_t n = 5000;
  const std::vector<float> va = random_vector(n, 3), vb = random_vector(n, 4);
  Tensor a = Tensor::from_vector(ctx, Shape{n}, va), b = Tensor::from_vector(ctx, Shape{n}, vb);
  Tensor w2 = Tensor::from_vector(ctx, Shape{2}, {0.5f, 2.0f});
  ops::mix_fwd(ctx, w2, {&a, &b}, b);
  const std::vector<float> got = b.to_vector();
  for (int64_t i = 0; i < n; ++i) {
    volatile float want = 0.5f * va[size_t(i)];
    want = want + 2.0f * vb[size_t(i)];
    ASSERT_EQ(got[size_t(i)], want) << "element " << i;
  }
  Tensor d0 = Tensor::full(ctx, Shape{2}, 9.0f), d1 = Tensor::full(ctx, Shape{2}, 9.0f),
         d2 = Tensor::full(ctx, Shape{2}, 9.0f);
  ops::mix_bwd(ctx, w, dy, {&d0, nullptr, &d2});
  EXPECT_EQ(d0.to_vector(), (std::vector<float>{0.5f, -0.5f}));
  EXPECT_EQ(d1.to_vector(), (std::vector<float>{9.0f, 9.0f}));
  EXPECT_EQ(d2.to_vector(), (std::vector<float>{2.0f, -2.0f}));
  // The fused form: mix_bwd's gradients and mix_scores's scores at once.
  Tensor e0 = Tensor::full(ctx, Shape{2}, 9.0f), e2 = Tensor::full(ctx, Shape{2}, 9.0f);
  ops::mix_bwd_scores(ctx, w, dy, {&x1, nullptr, &x2}, {&e0, nullptr, &e2}, g);
  EXPECT_EQ(e0.to_vector(), (std::vector<float>{0.5f, -0.5f}));
  EXPECT_EQ(e2.to_vector(), (std::vector<float>{2.0f, -2.0f}));
  EXPECT_EQ(g.to_vector(), (std::vector<float>{12.0f, 0.0f, -2.0f}));
  EXPECT_THROW(ops::mix_bwd_scores(ctx, w, dy, {&x1, &x2}, {&e0, nullptr, &e2}, g), Error);
  EXPECT_THROW(ops::mix_bwd(ctx, w, dy, {&d0, &d1}), Error);           // 2 outputs, 3 weights
  EXPECT_THROW(ops::add_n(ctx, {&x1, nullptr}, y), Error);             // add_n takes no nulls
  EXPECT_THROW(ops::mix_bwd(ctx, w, dy, {&d0, &d0, nullptr}), Error);  // outputs overlap
}

// The batched small ops: softmax_many row by row as softmax (and by hand), arch_grad_many as
// arch_grad applied in row order, two rows adding to one gradient; overlapping outputs refused.
TEST(CpuMixOps, BatchedSoftmaxAndArchitectureGradientsMatchTheirRows) {
  Context ctx;
  Tensor a = Tensor::from_vector(ctx, Shape{3}, {0.0f, std::log(3.0f), 0.0f});
  Tensor b = Tensor::from_vector(ctx, Shape{2}, {1.5f, -0.5f});
  Tensor pa = Tensor::empty(ctx, Shape{3}), pb = Tensor::empty(ctx, Shape{2});
  ops::softmax_many(ctx, {&a, &b}, {&pa, &pb});
  const std::vector<float> va = pa.to_vector();
  EXPECT_NEAR(va[0], 0.2f, 1e-7);  // 1 / (1 + 3 + 1)
  EXPECT_NEAR(va[1], 0.6f, 1e-7);
  Tensor qb = Tensor::empty(ctx, Shape{2});
  ops::softmax(ctx, b, qb);
  EXPECT_EQ(pb.to_vector(), qb.to_vector());
  // Rows 0 and 2 share gradient d (a's shape), row 1 has its own.
  Tensor g0 = Tensor::from_vector(ctx, Shape{3}, {1.0f, -2.0f, 0.5f}),
         g1 = Tensor::from_vector(ctx, Shape{2}, {0.25f, 4.0f}),
         g2 = Tensor::from_vector(ctx, Shape{3}, {-3.0f, 1.0f, 2.0f});
  Tensor d = Tensor::full(ctx, Shape{3}, 0.125f), e = Tensor::full(ctx, Shape{2}, -1.0f);
  Tensor d_view = d.slice(0, 3);  // another handle on the same view
  ops::arch_grad_many(ctx, {&a, &b, &a}, {&g0, &g1, &g2}, {&d, &e, &d_view});
  Tensor rd = Tensor::full(ctx, Shape{3}, 0.125f), re = Tensor::full(ctx, Shape{2}, -1.0f);
  ops::arch_grad(ctx, a, g0, nullptr, 0, rd);
  ops::arch_grad(ctx, b, g1, nullptr, 0, re);
  ops::arch_grad(ctx, a, g2, nullptr, 0, rd);
  EXPECT_EQ(d.to_vector(), rd.to_vector());
  EXPECT_EQ(e.to_vector(), re.to_vector());
  // By hand: p = (0.2, 0.6, 0.2); <p, g0> = -0.9, <p, g2> = 0.4.
  const std::vector<float> vd = d.to_vector();
  EXPECT_NEAR(vd[0], 0.125 + 0.2 * (1.0 + 0.9) + 0.2 * (-3.0 - 0.4), 1e-6);
  EXPECT_NEAR(vd[1], 0.125 + 0.6 * (-2.0 + 0.9) + 0.6 * (1.0 - 0.4), 1e-6);
  // Refused: probs overlapping logits, probs overlapping each other, gradients that overlap
  // without being the same view, a gradient on an input.
  Tensor wide = Tensor::empty(ctx, Shape{4});
  Tensor w0 = wide.slice(0, 3), w1 = wide.slice(1, 4);
  EXPECT_THROW(ops::softmax_many(ctx, {&a}, {&a}), Error);
  EXPECT_THROW(ops::softmax_many(ctx, {&a, &a}, {&w0, &w1}), Error);
  EXPECT_THROW(ops::arch_grad_many(ctx, {&a, &a}, {&g0, &g2}, {&w0, &w1}), Error);
  EXPECT_THROW(ops::arch_grad_many(ctx, {&a}, {&g0}, {&g0}), Error);
  EXPECT_THROW(ops::arch_grad_many(ctx, {&a}, {&g1}, {&d}), Error);  // g of b's size for a
}

// The depthwise groups (an edge's leading convolutions): bit for bit the convolutions one by one
// and add_n over the priors and their input gradients (the contract's order), with and without
// the fused ReLU, at stride 1 and 2; a naive loop for one output gradient; refused groups.
TEST(CpuDepthwiseGroup, MatchesTheOpsOneByOneBitForBit) {
  Context ctx;
  for (const int stride : {1, 2})
    for (const bool relu : {true, false}) {
      SCOPED_TRACE(detail::cat("stride ", stride, relu ? ", relu" : ""));
      const Shape xs{2, 3, 9, 8};
      Tensor x = test::random_tensor(ctx, xs, 1);
      const int rs[] = {3, 5, 3, 5}, pads[] = {1, 2, 2, 4}, dils[] = {1, 1, 2, 2};
      std::vector<Tensor> w, y, dy;
      std::vector<Conv2dParams> ps;
      for (int j = 0; j < 4; ++j) {
        Conv2dParams p = Conv2dParams::make(stride, pads[j], dils[j], 3);
        p.relu_input = relu;
        ps.push_back(p);
        w.push_back(test::random_tensor(ctx, Shape{3, 1, rs[j], rs[j]}, 10 + uint32_t(j)));
        const Shape ys = ops::conv2d_output_shape(xs, w.back().shape(), p);
        y.push_back(Tensor::full(ctx, ys, 7.0f));
        dy.push_back(test::random_tensor(ctx, ys, 20 + uint32_t(j)));
      }
      std::vector<const Tensor*> wp, dyp;
      std::vector<Tensor*> yp;
      for (int j = 0; j < 4; ++j)
        wp.push_back(&w[size_t(j)]), yp.push_back(&y[size_t(j)]), dyp.push_back(&dy[size_t(j)]);
      ops::depthwise_group_fwd(ctx, x, wp, ps, yp);
      for (int j = 0; j < 4; ++j) {
        Tensor one = Tensor::empty(ctx, y[size_t(j)].shape());
        ops::conv2d_fwd(ctx, x, w[size_t(j)], nullptr, one, ps[size_t(j)]);
        EXPECT_EQ(y[size_t(j)].to_vector(), one.to_vector()) << "forward " << j;
      }
      Tensor p0 = test::random_tensor(ctx, xs, 30), p1 = test::random_tensor(ctx, xs, 31);
      const Tensor* mask = relu ? &x : nullptr;
      for (int priors = 0; priors <= 2; ++priors) {
        std::vector<const Tensor*> pr;
        if (priors > 0) pr.push_back(&p0);
        if (priors > 1) pr.push_back(&p1);
        Tensor dx = Tensor::full(ctx, xs, 9.0f);
        ops::depthwise_group_bwd_data(ctx, dyp, wp, ps, mask, pr, dx);
        std::vector<Tensor> parts;
        for (int j = 0; j < 4; ++j) {
          parts.push_back(Tensor::empty(ctx, xs));
          ops::conv2d_bwd_data(ctx, dy[size_t(j)], w[size_t(j)], parts.back(), ps[size_t(j)], mask);
        }
        std::vector<const Tensor*> terms = pr;
        for (const Tensor& t : parts) terms.push_back(&t);
        Tensor want = Tensor::empty(ctx, xs);
        ops::add_n(ctx, terms, want);
        EXPECT_EQ(dx.to_vector(), want.to_vector()) << priors << " priors";
      }
      // One convolution without priors: its input gradient, against a naive scatter loop.
      Tensor dx1 = Tensor::empty(ctx, xs);
      ops::depthwise_group_bwd_data(ctx, {&dy[3]}, {&w[3]}, {ps[3]}, mask, {}, dx1);
      std::vector<double> naive(size_t(xs.numel()), 0.0);
      const std::vector<float> gv = dy[3].to_vector(), wv = w[3].to_vector(), xv = x.to_vector();
      const Shape& ys = dy[3].shape();
      for (int64_t n = 0; n < xs[0]; ++n)
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t p = 0; p < ys[2]; ++p)
            for (int64_t q = 0; q < ys[3]; ++q)
              for (int r = 0; r < 5; ++r)
                for (int t = 0; t < 5; ++t) {
                  const int64_t h = p * stride - 4 + r * 2, ww = q * stride - 4 + t * 2;
                  if (h < 0 || h >= xs[2] || ww < 0 || ww >= xs[3]) continue;
                  naive[size_t(((n * 3 + c) * xs[2] + h) * xs[3] + ww)] +=
                      double(wv[size_t((c * 5 + r) * 5 + t)]) *
                      gv[size_t(((n * 3 + c) * ys[2] + p) * ys[3] + q)];
                }
      const std::vector<float> got = dx1.to_vector();
      for (size_t i = 0; i < got.size(); ++i) {
        const double want = relu && !(xv[i] > 0.0f) ? 0.0 : naive[i];
        ASSERT_NEAR(got[i], want, 1e-5) << i;
      }
      // The filter gradients: added (+=) to what dws hold, bit for bit conv2d_bwd_filter one by
      // one; member 3 (5x5, dilation 2) against a naive loop over max(x, 0) with the ReLU.
      std::vector<Tensor> dws, want_dws;
      std::vector<Tensor*> dwp;
      for (int j = 0; j < 4; ++j) {
        dws.push_back(test::random_tensor(ctx, w[size_t(j)].shape(), 40 + uint32_t(j)));
        want_dws.push_back(Tensor::empty(ctx, w[size_t(j)].shape()));
        ops::copy(ctx, dws.back(), want_dws.back());
        ops::conv2d_bwd_filter(ctx, x, dy[size_t(j)], want_dws.back(), nullptr, ps[size_t(j)]);
      }
      for (Tensor& t : dws) dwp.push_back(&t);
      const std::vector<float> dw3_before = dws[3].to_vector();
      ops::depthwise_group_bwd_filter(ctx, x, dyp, ps, dwp);
      for (int j = 0; j < 4; ++j)
        EXPECT_EQ(dws[size_t(j)].to_vector(), want_dws[size_t(j)].to_vector()) << "filter " << j;
      const std::vector<float> dw3 = dws[3].to_vector();
      for (int64_t c = 0; c < 3; ++c)
        for (int r = 0; r < 5; ++r)
          for (int t = 0; t < 5; ++t) {
            double sum = dw3_before[size_t((c * 5 + r) * 5 + t)];
            for (int64_t n = 0; n < xs[0]; ++n)
              for (int64_t p = 0; p < ys[2]; ++p)
                for (int64_t q = 0; q < ys[3]; ++q) {
                  const int64_t h = p * stride - 4 + r * 2, ww = q * stride - 4 + t * 2;
                  if (h < 0 || h >= xs[2] || ww < 0 || ww >= xs[3]) continue;
                  const float xe = xv[size_t(((n * 3 + c) * xs[2] + h) * xs[3] + ww)];
                  sum += double(relu && !(xe > 0.0f) ? 0.0f : xe) *
                         gv[size_t(((n * 3 + c) * ys[2] + p) * ys[3] + q)];
                }
            ASSERT_NEAR(dw3[size_t((c * 5 + r) * 5 + t)], sum, 1e-4) << c << " " << r << " " << t;
          }
    }
  // Refused: no convolution, counts that differ, a non-depthwise weight, mixed ReLU rules, the
  // mask missing, a prior of another shape, a prior that is dx.
  Tensor x = test::random_tensor(ctx, Shape{1, 2, 5, 5}, 2);
  Tensor w = test::random_tensor(ctx, Shape{2, 1, 3, 3}, 3),
         wd = test::random_tensor(ctx, Shape{2, 2, 3, 3}, 4);
  Tensor y = Tensor::empty(ctx, Shape{1, 2, 5, 5}), y2 = Tensor::empty(ctx, Shape{1, 2, 5, 5});
  const Conv2dParams p = Conv2dParams::make(1, 1, 1, 2);
  Conv2dParams pr = p;
  pr.relu_input = true;
  EXPECT_THROW(ops::depthwise_group_fwd(ctx, x, {}, {}, {}), Error);
  EXPECT_THROW(ops::depthwise_group_fwd(ctx, x, {&w, &w}, {p}, {&y, &y2}), Error);
  EXPECT_THROW(ops::depthwise_group_fwd(ctx, x, {&wd}, {Conv2dParams::make(1, 1)}, {&y}), Error);
  EXPECT_THROW(ops::depthwise_group_fwd(ctx, x, {&w, &w}, {p, pr}, {&y, &y2}), Error);
  Tensor dx = Tensor::empty(ctx, x.shape()), small = Tensor::empty(ctx, Shape{1, 2, 4, 4});
  EXPECT_THROW(ops::depthwise_group_bwd_data(ctx, {&y}, {&w}, {pr}, nullptr, {}, dx), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_data(ctx, {&y}, {&w}, {p}, nullptr, {&small}, dx), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_data(ctx, {&y}, {&w}, {p}, nullptr, {&dx}, dx), Error);
  // The filter gradients: no convolution, counts that differ, a non-depthwise gradient, mixed
  // ReLU rules, an output gradient of another shape, one filter gradient given twice.
  Tensor dw = Tensor::zeros(ctx, w.shape()), dw2 = Tensor::zeros(ctx, w.shape());
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {}, {}, {}), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {&y, &y2}, {p}, {&dw, &dw2}), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {&y}, {Conv2dParams::make(1, 1)}, {&wd}),
               Error);
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {&y, &y2}, {p, pr}, {&dw, &dw2}), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {&small}, {p}, {&dw}), Error);
  EXPECT_THROW(ops::depthwise_group_bwd_filter(ctx, x, {&y, &y2}, {p, p}, {&dw, &dw}), Error);
}

// The normalised mixes (an edge's trailing affine-free BatchNorms inside its mix): against
// naive double loops written here (statistics, normalisation, weighted sum, running statistics,
// the BatchNorm backward of p_i dy, the scores), the backward also against finite differences of
// the forward through the statistics, and bit for bit against the unfused ops (each candidate's
// batchnorm_fwd_train, mix_fwd; mix_bwd_scores, each candidate's batchnorm_bwd).
TEST(CpuNormMix, MatchesNaiveLoopsAndTheUnfusedOpsBitForBit) {
  Context ctx;
  const int64_t n = 3, c = 2, h = 4, w = 5, hw = h * w, m = n * hw;
  const Shape s{n, c, h, w};
  const int k = 4;  // normed, null (a Zero), plain, normed
  const std::vector<bool> normed{true, false, false, true};
  const std::vector<float> wv{0.1f, 0.2f, 0.3f, 0.4f};
  const BatchNormParams bp{0.1f, 1e-5f};
  std::vector<std::vector<float>> xv;
  std::vector<Tensor> x;
  for (int i = 0; i < k; ++i) {
    xv.push_back(random_vector(size_t(s.numel()), 40 + uint32_t(i), 1.0f + float(i)));
    for (auto& v : xv.back()) v += float(i);  // a non-zero mean
    x.push_back(Tensor::from_vector(ctx, s, xv.back()));
  }
  const std::vector<const Tensor*> xs{&x[0], nullptr, &x[2], &x[3]};
  Tensor wt = Tensor::from_vector(ctx, Shape{k}, wv);
  auto running = [&](float v) { return Tensor::full(ctx, Shape{c}, v); };
  Tensor rm0 = running(0.5f), rv0 = running(2.0f), rm3 = running(0.5f), rv3 = running(2.0f);
  Tensor mean = Tensor::empty(ctx, Shape{k, c}), invstd = Tensor::empty(ctx, Shape{k, c});
  ops::batchnorm_stats(ctx, xs, normed, mean, invstd, {&rm0, nullptr, nullptr, &rm3},
                       {&rv0, nullptr, nullptr, &rv3}, bp);
  Tensor y = Tensor::empty(ctx, s);
  ops::mix_norm_fwd(ctx, wt, xs, normed, mean, invstd, y);

  // Naive: statistics and the normalised values t_i in double.
  std::vector<std::vector<double>> t(size_t(k), std::vector<double>(size_t(s.numel()), 0.0));
  std::vector<std::vector<double>> mu(size_t(k), std::vector<double>(size_t(c), 0.0)), var = mu;
  auto at = [&](int64_t ni, int64_t ci, int64_t j) { return size_t((ni * c + ci) * hw + j); };
  for (int i = 0; i < k; ++i)
    for (int64_t ci = 0; ci < c; ++ci) {
      if (!xs[size_t(i)]) continue;
      double sum = 0.0, sq = 0.0;
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t j = 0; j < hw; ++j) sum += xv[size_t(i)][at(ni, ci, j)];
      mu[size_t(i)][size_t(ci)] = sum / double(m);
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t j = 0; j < hw; ++j)
          sq += std::pow(xv[size_t(i)][at(ni, ci, j)] - mu[size_t(i)][size_t(ci)], 2);
      var[size_t(i)][size_t(ci)] = sq / double(m);
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t j = 0; j < hw; ++j) {
          const double v = xv[size_t(i)][at(ni, ci, j)];
          t[size_t(i)][at(ni, ci, j)] =
              normed[size_t(i)]
                  ? (v - mu[size_t(i)][size_t(ci)]) / std::sqrt(var[size_t(i)][size_t(ci)] + 1e-5)
                  : v;
        }
    }
  const std::vector<float> mg = mean.to_vector(), ig = invstd.to_vector(), yg = y.to_vector();
  for (int i = 0; i < k; ++i)
    for (int64_t ci = 0; ci < c; ++ci) {
      const size_t r = size_t(i * c + ci);
      EXPECT_NEAR(mg[r], normed[size_t(i)] ? mu[size_t(i)][size_t(ci)] : 0.0, 1e-5) << r;
      EXPECT_NEAR(
          ig[r], normed[size_t(i)] ? 1.0 / std::sqrt(var[size_t(i)][size_t(ci)] + 1e-5) : 1.0, 1e-5)
          << r;
    }
  for (int64_t e = 0; e < s.numel(); ++e) {
    double want = 0.0;
    for (int i = 0; i < k; ++i) want += double(wv[size_t(i)]) * t[size_t(i)][size_t(e)];
    ASSERT_NEAR(yg[size_t(e)], want, 1e-5) << "element " << e;
  }
  for (int64_t ci = 0; ci < c; ++ci) {
    EXPECT_NEAR(rm0.to_vector()[size_t(ci)], 0.9 * 0.5 + 0.1 * mu[0][size_t(ci)], 1e-6);
    EXPECT_NEAR(rv3.to_vector()[size_t(ci)],
                0.9 * 2.0 + 0.1 * var[3][size_t(ci)] * double(m) / double(m - 1), 1e-5);
  }

  // Backward: dz_i = p_i invstd (dy - mean(dy) - xhat mean(dy xhat)) per channel (normed),
  // p_i dy (plain); g_i = <dy, t_i>.
  const std::vector<float> dyv = random_vector(size_t(s.numel()), 50);
  Tensor dy = Tensor::from_vector(ctx, s, dyv);
  std::vector<Tensor> dz;
  for (int i = 0; i < k; ++i) dz.push_back(Tensor::full(ctx, s, 9.0f));
  Tensor g = Tensor::empty(ctx, Shape{k});
  ops::mix_norm_bwd(ctx, wt, dy, xs, normed, mean, invstd, {&dz[0], nullptr, &dz[2], &dz[3]}, &g);
  const std::vector<float> gg = g.to_vector();
  for (int i = 0; i < k; ++i) {
    double gi = 0.0;
    for (int64_t e = 0; e < s.numel(); ++e) gi += double(dyv[size_t(e)]) * t[size_t(i)][size_t(e)];
    EXPECT_NEAR(gg[size_t(i)], gi, 1e-4) << "score " << i;
    const std::vector<float> d = dz[size_t(i)].to_vector();
    for (int64_t ci = 0; ci < c; ++ci) {
      double sdy = 0.0, sdx = 0.0;
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t j = 0; j < hw; ++j) {
          sdy += dyv[at(ni, ci, j)];
          sdx += dyv[at(ni, ci, j)] * t[size_t(i)][at(ni, ci, j)];
        }
      const double is = 1.0 / std::sqrt(var[size_t(i)][size_t(ci)] + 1e-5);
      for (int64_t ni = 0; ni < n; ++ni)
        for (int64_t j = 0; j < hw; ++j) {
          const size_t e = at(ni, ci, j);
          const double p = wv[size_t(i)];
          const double want =
              !xs[size_t(i)] ? 9.0  // not given: untouched
              : normed[size_t(i)]
                  ? p * is * (dyv[e] - sdy / double(m) - t[size_t(i)][e] * sdx / double(m))
                  : p * dyv[e];
          ASSERT_NEAR(d[e], want, 1e-5) << "candidate " << i << " element " << e;
        }
    }
  }
  // Finite differences of L = <dy, mix_norm_fwd(z with its statistics)> in z_3 (through them).
  auto loss = [&](const std::vector<float>& z3) {
    Tensor x3 = Tensor::from_vector(ctx, s, z3);
    const std::vector<const Tensor*> l{&x[0], nullptr, &x[2], &x3};
    Tensor mn = Tensor::empty(ctx, Shape{k, c}), is = Tensor::empty(ctx, Shape{k, c});
    ops::batchnorm_stats(ctx, l, normed, mn, is, {}, {}, bp);
    Tensor yy = Tensor::empty(ctx, s);
    ops::mix_norm_fwd(ctx, wt, l, normed, mn, is, yy);
    const std::vector<float> v = yy.to_vector();
    double sum = 0.0;
    for (size_t e = 0; e < v.size(); ++e) sum += double(dyv[e]) * v[e];
    return sum;
  };
  const std::vector<float> d3 = dz[3].to_vector();
  for (size_t e : {size_t(0), size_t(17), size_t(61), size_t(s.numel() - 1)}) {
    std::vector<float> up = xv[3], down = xv[3];
    up[e] += 1e-2f;
    down[e] -= 1e-2f;
    const double fd = (loss(up) - loss(down)) / (double(up[e]) - double(down[e]));
    EXPECT_NEAR(d3[e], fd, 2e-3 + 2e-2 * std::abs(fd)) << "element " << e;
  }

  // The unfused ops give the same bits.
  Tensor um0 = running(0.5f), uv0 = running(2.0f), um3 = running(0.5f), uv3 = running(2.0f);
  std::vector<Tensor> yn, sm, si;
  for (int i = 0; i < k; ++i) {
    yn.push_back(Tensor::empty(ctx, s));
    sm.push_back(Tensor::empty(ctx, Shape{c}));
    si.push_back(Tensor::empty(ctx, Shape{c}));
  }
  ops::batchnorm_fwd_train(ctx, x[0], nullptr, nullptr, &um0, &uv0, yn[0], sm[0], si[0], bp);
  ops::batchnorm_fwd_train(ctx, x[3], nullptr, nullptr, &um3, &uv3, yn[3], sm[3], si[3], bp);
  Tensor yu = Tensor::empty(ctx, s);
  ops::mix_fwd(ctx, wt, {&yn[0], nullptr, &x[2], &yn[3]}, yu);
  EXPECT_EQ(yu.to_vector(), yg);
  EXPECT_EQ(um0.to_vector(), rm0.to_vector());
  EXPECT_EQ(uv3.to_vector(), rv3.to_vector());
  for (int i : {0, 3})
    for (int64_t ci = 0; ci < c; ++ci) {
      EXPECT_EQ(sm[size_t(i)].to_vector()[size_t(ci)], mg[size_t(i * c + ci)]);
      EXPECT_EQ(si[size_t(i)].to_vector()[size_t(ci)], ig[size_t(i * c + ci)]);
    }
  std::vector<Tensor> sc;
  for (int i = 0; i < k; ++i) sc.push_back(Tensor::empty(ctx, s));
  Tensor gu = Tensor::empty(ctx, Shape{k});
  ops::mix_bwd_scores(ctx, wt, dy, {&yn[0], nullptr, &x[2], &yn[3]},
                      {&sc[0], nullptr, &sc[2], &sc[3]}, gu);
  EXPECT_EQ(gu.to_vector(), gg);
  EXPECT_EQ(sc[2].to_vector(), dz[2].to_vector());
  for (int i : {0, 3}) {
    Tensor du = Tensor::empty(ctx, s);
    ops::batchnorm_bwd(ctx, sc[size_t(i)], x[size_t(i)], nullptr, sm[size_t(i)], si[size_t(i)], du,
                       nullptr, nullptr);
    EXPECT_EQ(du.to_vector(), dz[size_t(i)].to_vector()) << "candidate " << i;
  }

  // Refused: a normed null entry, flags of the wrong length, a gradient on dy's storage, half a
  // list of running statistics.
  Tensor yb = Tensor::empty(ctx, s);
  EXPECT_THROW(ops::mix_norm_fwd(ctx, wt, xs, {true, true, false, true}, mean, invstd, yb), Error);
  EXPECT_THROW(ops::mix_norm_fwd(ctx, wt, xs, {true, false, false}, mean, invstd, yb), Error);
  EXPECT_THROW(ops::mix_norm_bwd(ctx, wt, dy, xs, normed, mean, invstd,
                                 {&dz[0], nullptr, &dy, &dz[3]}, nullptr),
               Error);
  EXPECT_THROW(
      ops::batchnorm_stats(ctx, xs, normed, mean, invstd, {&rm0, nullptr, nullptr, &rm3}, {}, bp),
      Error);
  EXPECT_THROW(
      ops::batchnorm_stats(ctx, xs, normed, mean, invstd, {&rm0, nullptr, nullptr, nullptr},
                           {&rv0, nullptr, nullptr, nullptr}, bp),
      Error);  // candidate 3 is normed but has no running mean
}

// A fused ReLU (Conv2dParams::relu_input) gives exactly the bits of ReLU then convolution:
// forward and filter gradient read max(x, 0), the data gradient is relu_bwd of the unfused one;
// depthwise (the DARTS case) and dense (im2col). x must come with relu_input, and only with it.
TEST(CpuConv, FusedReluEqualsReluThenConvolutionBitForBit) {
  Context ctx;
  for (bool depthwise : {true, false}) {
    const int64_t c = 6, k = depthwise ? 6 : 4;
    Conv2dParams p = Conv2dParams::make(2, 2, 2, depthwise ? int(c) : 1);
    const Shape xs{3, c, 9, 8}, ws{k, depthwise ? 1 : c, 3, 3};
    const Shape ys = ops::conv2d_output_shape(xs, ws, p);
    Tensor x = test::random_tensor(ctx, xs, 1), w = test::random_tensor(ctx, ws, 2);
    Tensor b = test::random_tensor(ctx, Shape{k}, 3), dy = test::random_tensor(ctx, ys, 4);
    Tensor r = Tensor::empty(ctx, xs);
    ops::relu_fwd(ctx, x, r);
    Tensor y_ref = Tensor::empty(ctx, ys), y = Tensor::empty(ctx, ys);
    ops::conv2d_fwd(ctx, r, w, &b, y_ref, p);
    Tensor dr = Tensor::empty(ctx, xs), dx_ref = Tensor::empty(ctx, xs),
           dx = Tensor::empty(ctx, xs);
    ops::conv2d_bwd_data(ctx, dy, w, dr, p);
    ops::relu_bwd(ctx, dr, r, dx_ref);
    Tensor dw_ref = Tensor::zeros(ctx, ws), dw = Tensor::zeros(ctx, ws);
    ops::conv2d_bwd_filter(ctx, r, dy, dw_ref, nullptr, p);

    p.relu_input = true;
    ops::conv2d_fwd(ctx, x, w, &b, y, p);
    ops::conv2d_bwd_data(ctx, dy, w, dx, p, &x);
    ops::conv2d_bwd_filter(ctx, x, dy, dw, nullptr, p);
    EXPECT_EQ(y.to_vector(), y_ref.to_vector()) << "depthwise " << depthwise;
    EXPECT_EQ(dx.to_vector(), dx_ref.to_vector()) << "depthwise " << depthwise;
    EXPECT_EQ(dw.to_vector(), dw_ref.to_vector()) << "depthwise " << depthwise;
    int masked = 0;
    const std::vector<float> xv = x.to_vector(), dxv = dx.to_vector();
    for (size_t i = 0; i < xv.size(); ++i)
      if (xv[i] <= 0.0f) {
        EXPECT_EQ(dxv[i], 0.0f);
        ++masked;
      }
    EXPECT_GT(masked, 50);                                         // the mask did something
    EXPECT_THROW(ops::conv2d_bwd_data(ctx, dy, w, dx, p), Error);  // relu_input without x
    p.relu_input = false;
    EXPECT_THROW(ops::conv2d_bwd_data(ctx, dy, w, dx, p, &x), Error);  // x without relu_input
  }
}

TEST(CpuConcat, ConcatThenSplitRoundTrips) {
  Context ctx;
  Tensor a = test::random_tensor(ctx, Shape{2, 1, 2, 2}, 1),
         b = test::random_tensor(ctx, Shape{2, 3, 2, 2}, 2);
  Tensor y = Tensor::empty(ctx, Shape{2, 4, 2, 2});
  ops::concat_channels(ctx, {&a, &b}, y);
  const auto av = a.to_vector(), bv = b.to_vector(), yv = y.to_vector();
  for (int n = 0; n < 2; ++n) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(yv[n * 16 + j], av[n * 4 + j]);
    for (int j = 0; j < 12; ++j) EXPECT_EQ(yv[n * 16 + 4 + j], bv[n * 12 + j]);
  }
  Tensor a2 = Tensor::empty(ctx, a.shape()), b2 = Tensor::empty(ctx, b.shape());
  ops::split_channels(ctx, y, {&a2, &b2});
  EXPECT_EQ(a2.to_vector(), av);
  EXPECT_EQ(b2.to_vector(), bv);
}

TEST(CpuSgd, MomentumNesterovWeightDecayByHand) {
  Context ctx;
  Tensor p = Tensor::from_vector(ctx, Shape{2}, {1.0f, -2.0f});
  Tensor g = Tensor::from_vector(ctx, Shape{2}, {0.5f, 0.25f});
  Tensor buf = Tensor::zeros(ctx, Shape{2});
  SgdParams h{0.1f, 0.9f, 0.01f, false};
  ops::sgd_step(ctx, {{&p, &g, &buf, nullptr}}, h);
  // d = g + 0.01 p = (0.51, 0.23); buf = d; p -= 0.1 d
  EXPECT_TRUE(all_close(p.to_vector(), {1 - 0.051, -2 - 0.023}, 1e-6, 1e-7));
  ops::sgd_step(ctx, {{&p, &g, &buf, nullptr}}, h);
  // d2 = g + 0.01 p1; buf2 = 0.9 buf + d2; p2 = p1 - 0.1 buf2
  const double p1[2] = {0.949, -2.023}, b1[2] = {0.51, 0.23}, gg[2] = {0.5, 0.25};
  std::vector<double> want(2);
  for (int i = 0; i < 2; ++i) want[i] = p1[i] - 0.1 * (0.9 * b1[i] + gg[i] + 0.01 * p1[i]);
  EXPECT_TRUE(all_close(p.to_vector(), want, 1e-6, 1e-7));
  // Nesterov: p -= lr (d + m buf_new)
  Tensor q = Tensor::from_vector(ctx, Shape{1}, {1.0f}),
         gq = Tensor::from_vector(ctx, Shape{1}, {1.0f});
  Tensor bq = Tensor::from_vector(ctx, Shape{1}, {2.0f});
  ops::sgd_step(ctx, {{&q, &gq, &bq, nullptr}}, SgdParams{0.1f, 0.5f, 0.0f, true});
  // buf = 0.5*2 + 1 = 2; d = 1 + 0.5*2 = 2; q = 1 - 0.2
  EXPECT_NEAR(q.item(), 0.8f, 1e-6);
  EXPECT_NEAR(bq.item(), 2.0f, 1e-6);
}

// ---- the data-movement ops of the pipeline, against references written from their
// documented semantics (ops.h), not from the implementation.

TEST(CpuCrop, ForwardPicksTheWindowBackwardPlacesItInZeros) {
  Context ctx;
  const int64_t n = 2, c = 3, h = 7, w = 6, ch = 4, cw = 3;
  const int top = 2, left = 1;
  const std::vector<float> xv = random_vector(size_t(n * c * h * w), 1);
  Tensor x = Tensor::from_vector(ctx, Shape{n, c, h, w}, xv);
  Tensor y = Tensor::empty(ctx, Shape{n, c, ch, cw});
  ops::crop2d_fwd(ctx, x, top, left, y);
  const std::vector<float> yv = y.to_vector();
  Tensor dx = Tensor::full(ctx, Shape{n, c, h, w}, 7.0f);  // must be fully overwritten
  ops::crop2d_bwd(ctx, y, top, left, dx);
  const std::vector<float> dxv = dx.to_vector();
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t r = 0; r < h; ++r)
      for (int64_t q = 0; q < w; ++q) {
        const bool inside = r >= top && r < top + ch && q >= left && q < left + cw;
        const float xval = xv[size_t((i * h + r) * w + q)];
        if (inside) EXPECT_EQ(yv[size_t((i * ch + r - top) * cw + q - left)], xval);
        EXPECT_EQ(dxv[size_t((i * h + r) * w + q)], inside ? xval : 0.0f);
      }
}

TEST(CpuScaleSamples, EachSampleTimesItsScale) {
  Context ctx;
  const std::vector<float> xv = random_vector(4 * 6, 2);
  Tensor x = Tensor::from_vector(ctx, Shape{4, 2, 3}, xv);
  Tensor s = Tensor::from_vector(ctx, Shape{4}, {0.0f, 1.25f, -2.0f, 4.0f});
  Tensor y = Tensor::empty(ctx, Shape{4, 2, 3});
  ops::scale_samples(ctx, x, s, y);
  const std::vector<float> yv = y.to_vector();
  const float sv[4] = {0.0f, 1.25f, -2.0f, 4.0f};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(yv[size_t(i * 6 + j)], sv[i] * xv[size_t(i * 6 + j)]);
}

TEST(CpuBernoulliScale, KeepsWithItsProbabilityFromPhiloxWords) {
  Context ctx;
  const float keep = 0.7f;
  const int64_t n = 20000;
  Tensor out = Tensor::empty(ctx, Shape{n});
  ops::bernoulli_scale(ctx, out, keep, 99, 4);
  const std::vector<float> v = out.to_vector();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    // Word i of stream (99, 4) as a uniform in [0, 1): kept below keep_prob.
    const double u = double(philox_word(99, 4, 0, uint64_t(i))) / 4294967296.0;
    const float want = u < keep ? 1.0f / keep : 0.0f;
    if (std::abs(u - keep) > 1e-6) EXPECT_EQ(v[size_t(i)], want) << i;
    kept += v[size_t(i)] != 0.0f;
  }
  // Binomial(n, 0.7): 4 standard deviations is about 260 of 20000.
  EXPECT_NEAR(double(kept), keep * double(n), 4.0 * std::sqrt(n * keep * (1 - keep)));
}

// augment = zero-pad by `pad`, crop an h x w window offset by (oy, ox) in [-pad, pad], flip it
// horizontally, then zero a cutout x cutout square centred at (cy, cx) (clipped at the
// border); sample n draws oy, ox, flip, cy, cx from Philox words 8n .. 8n+4 of (seed, offset).
TEST(CpuAugment, PadCropFlipCutoutAsDocumented) {
  Context ctx;
  const int64_t n = 6, c = 2, h = 5, w = 7;
  for (AugmentParams p : {AugmentParams{2, true, 3}, AugmentParams{0, false, 0},
                          AugmentParams{3, true, 4}, AugmentParams{1, false, 2}}) {
    SCOPED_TRACE(detail::cat("pad ", p.pad, " flip ", p.flip, " cutout ", p.cutout));
    const std::vector<float> xv = random_vector(size_t(n * c * h * w), 3);
    Tensor x = Tensor::from_vector(ctx, Shape{n, c, h, w}, xv);
    Tensor y = Tensor::empty(ctx, Shape{n, c, h, w});
    ops::augment(ctx, x, y, p, 21, 6);
    const std::vector<float> yv = y.to_vector();
    const int64_t ph = h + 2 * p.pad, pw = w + 2 * p.pad;
    for (int64_t i = 0; i < n; ++i) {
      auto word = [&](int k) { return philox_word(21, 6, 0, uint64_t(8 * i + k)); };
      const int64_t oy = int64_t(word(0) % uint32_t(2 * p.pad + 1)) - p.pad;
      const int64_t ox = int64_t(word(1) % uint32_t(2 * p.pad + 1)) - p.pad;
      const bool flip = p.flip && (word(2) & 1u) != 0;
      const int64_t cy = int64_t(word(3) % uint32_t(h)), cx = int64_t(word(4) % uint32_t(w));
      for (int64_t ch = 0; ch < c; ++ch) {
        std::vector<float> padded(size_t(ph * pw), 0.0f);
        for (int64_t r = 0; r < h; ++r)
          for (int64_t q = 0; q < w; ++q)
            padded[size_t((r + p.pad) * pw + q + p.pad)] =
                xv[size_t(((i * c + ch) * h + r) * w + q)];
        std::vector<float> crop(size_t(h * w));
        for (int64_t r = 0; r < h; ++r)
          for (int64_t q = 0; q < w; ++q)
            crop[size_t(r * w + q)] = padded[size_t((r + p.pad + oy) * pw + q + p.pad + ox)];
        if (flip)
          for (int64_t r = 0; r < h; ++r)
            std::reverse(crop.begin() + r * w, crop.begin() + (r + 1) * w);
        if (p.cutout > 0) {
          const int64_t y0 = cy - p.cutout / 2, x0 = cx - p.cutout / 2;
          for (int64_t r = std::max<int64_t>(0, y0); r < std::min(h, y0 + p.cutout); ++r)
            for (int64_t q = std::max<int64_t>(0, x0); q < std::min(w, x0 + p.cutout); ++q)
              crop[size_t(r * w + q)] = 0.0f;
        }
        for (int64_t k = 0; k < h * w; ++k)
          ASSERT_EQ(yv[size_t((i * c + ch) * h * w + k)], crop[size_t(k)])
              << "sample " << i << " channel " << ch << " pixel " << k;
      }
    }
  }
}

TEST(CpuGather, PicksIndexedElementsAndRejectsBadIndices) {
  Context ctx;
  Tensor src = Tensor::from_vector(ctx, Shape{5}, {10, 11, 12, 13, 14});
  Tensor idx = Tensor::from_vector_i32(ctx, Shape{7}, {4, 0, 0, 2, 3, 1, 4});
  Tensor dst = Tensor::empty(ctx, Shape{7});
  ops::gather(ctx, src, idx, dst);
  EXPECT_EQ(dst.to_vector(), (std::vector<float>{14, 10, 10, 12, 13, 11, 14}));
  Tensor bad = Tensor::from_vector_i32(ctx, Shape{7}, {0, 1, 2, 5, 0, 0, 0});
  EXPECT_TRUE(test::throws_with([&] { ops::gather(ctx, src, bad, dst); }, {"gather", "5"}));
}

TEST(CpuSetWords, WritesTheFirstWordsAndLeavesTheRest) {
  Context ctx;
  Tensor t = Tensor::from_vector(ctx, Shape{5}, {1, 2, 3, 4, 5});
  const float a = -0.5f, b = 3.25f;
  uint32_t wa, wb;
  std::memcpy(&wa, &a, 4);
  std::memcpy(&wb, &b, 4);
  ops::set_words(ctx, t, {wa, wb});
  EXPECT_EQ(t.to_vector(), (std::vector<float>{-0.5f, 3.25f, 3, 4, 5}));
  Tensor i = Tensor::from_vector_i32(ctx, Shape{3}, {7, 8, 9});
  ops::set_words(ctx, i, {uint32_t(-3)});
  EXPECT_EQ(i.to_vector_i32(), (std::vector<int32_t>{-3, 8, 9}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        ops::set_words(ctx, i, {1, 2, 3, 4});
      },
      {"set_words", "do not fit"}));
}

TEST(CpuDivergenceOps, CountNonfiniteClipCoefficientAndSkippedSteps) {
  Context ctx;
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  Tensor a = Tensor::from_vector(ctx, Shape{1}, {1.0f}),
         b = Tensor::from_vector(ctx, Shape{2}, {2.0f, nan});
  Tensor state = Tensor::from_vector_i32(ctx, Shape{4}, {0, -1, 0, -1});
  ops::count_nonfinite(ctx, {&a, &b}, state);  // b's first element is finite
  EXPECT_EQ(state.to_vector_i32(), (std::vector<int32_t>{1, -1, 0, -1}));
  Tensor c = Tensor::from_vector(ctx, Shape{1}, {nan});
  ops::count_nonfinite(ctx, {&a, &c}, state);  // call 1, value 1
  ops::count_nonfinite(ctx, {&c, &a}, state);  // call 2, value 0: counted, not first
  EXPECT_EQ(state.to_vector_i32(), (std::vector<int32_t>{3, 1, 2, 1}));

  Tensor coef = Tensor::empty(ctx, Shape{1});
  for (float n : {nan, inf, -inf}) {
    Tensor norm = Tensor::from_vector(ctx, Shape{1}, {n});
    ops::clip_coefficient(ctx, norm, 5.0f, coef);
    EXPECT_EQ(coef.item(), 0.0f) << n;
  }
  Tensor big = Tensor::from_vector(ctx, Shape{1}, {1e30f});
  ops::clip_coefficient(ctx, big, inf, coef);  // no clipping, finite norm
  EXPECT_EQ(coef.item(), 1.0f);

  Tensor sums = Tensor::from_vector(ctx, Shape{4}, {1.0f, 2.0f, 3.0f, 0.0f});
  Tensor loss = Tensor::from_vector(ctx, Shape{1}, {0.5f}),
         hits = Tensor::from_vector(ctx, Shape{1}, {6.0f});
  ops::metrics_add(ctx, loss, hits, 8.0f, sums);
  ops::metrics_add(ctx, c, hits, 8.0f, sums);  // NaN loss: only counted as skipped
  EXPECT_EQ(sums.to_vector(), (std::vector<float>{1.0f + 4.0f, 8.0f, 11.0f, 1.0f}));

  // A zero coefficient skips the update: weight decay and momentum do not move anything.
  Tensor zero = Tensor::from_vector(ctx, Shape{1}, {0.0f});
  Tensor w = Tensor::from_vector(ctx, Shape{2}, {1.0f, -2.0f}),
         g = Tensor::from_vector(ctx, Shape{2}, {nan, inf});
  Tensor m = Tensor::from_vector(ctx, Shape{2}, {0.5f, 0.25f}),
         v = Tensor::from_vector(ctx, Shape{2}, {0.1f, 0.2f});
  ops::sgd_step(ctx, {{&w, &g, &m, nullptr}}, SgdParams{0.1f, 0.9f, 0.1f, false}, &zero);
  AdamParams ap;
  ap.weight_decay = 0.5f;
  ops::adam_step(ctx, {{&w, &g, &m, &v}}, ap, &zero);
  EXPECT_EQ(w.to_vector(), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(m.to_vector(), (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(v.to_vector(), (std::vector<float>{0.1f, 0.2f}));
}

// Channel shuffle by hand: 6 channels in 2 groups interleave as 0, 3, 1, 4, 2, 5; shuffling
// the result in 6 / 2 = 3 groups gives x back.
TEST(CpuChannelShuffle, InterleavesGroupsAndInvertsWithTheCoGroupCount) {
  Context ctx;
  std::vector<float> xv;
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 6; ++c)
      for (int p = 0; p < 4; ++p) xv.push_back(float(100 * n + 10 * c + p));
  Tensor x = Tensor::from_vector(ctx, Shape{2, 6, 2, 2}, xv);
  Tensor y = Tensor::empty(ctx, x.shape()), back = Tensor::empty(ctx, x.shape());
  ops::channel_shuffle(ctx, x, 2, y);
  const std::vector<float> yv = y.to_vector();
  const int order[6] = {0, 3, 1, 4, 2, 5};
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 6; ++c)
      for (int p = 0; p < 4; ++p)
        EXPECT_EQ(yv[size_t((n * 6 + c) * 4 + p)], float(100 * n + 10 * order[c] + p));
  ops::channel_shuffle(ctx, y, 3, back);
  EXPECT_EQ(back.to_vector(), xv);
  EXPECT_TRUE(test::throws_with([&] { ops::channel_shuffle(ctx, x, 4, y); },
                                {"channel_shuffle", "6 channels", "4 groups"}));
}

}  // namespace
}  // namespace cudarts
