// MixedOp semantics (docs/DESIGN.md section 3) against direct computations written here from the
// design: Gumbel rankings from the Philox formula, candidate outputs from naive 1x1
// convolution loops, scores, architecture gradients and moving averages by hand.
#include <numeric>
#include <set>

#include "gradcheck.h"

namespace cudarts {
namespace {

constexpr int64_t kN = 4, kC = 3, kH = 3, kW = 3, kK = 5;

std::vector<std::unique_ptr<Layer>> pointwise_candidates(Context& ctx, int k) {
  std::vector<std::unique_ptr<Layer>> v;
  for (int i = 0; i < k; ++i)
    v.push_back(
        std::make_unique<Conv2d>(ctx, "c" + std::to_string(i), kC, kC, 1, Conv2dParams{}, false));
  return v;
}

// o = W x for a 1x1 convolution, W (C, C), x (N, C, H, W), naive loops in double.
std::vector<double> pointwise(const std::vector<float>& w, const std::vector<float>& x) {
  std::vector<double> o(x.size(), 0.0);
  const int64_t hw = kH * kW;
  for (int64_t n = 0; n < kN; ++n)
    for (int64_t k = 0; k < kC; ++k)
      for (int64_t c = 0; c < kC; ++c)
        for (int64_t j = 0; j < hw; ++j)
          o[(n * kC + k) * hw + j] += double(w[k * kC + c]) * x[(n * kC + c) * hw + j];
  return o;
}

double dotd(const std::vector<double>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The ranking docs/DESIGN.md prescribes: descending alpha_i + Gumbel(u_i), u from Philox word i.
std::vector<int> expected_ranking(const std::vector<float>& alpha, uint64_t seed, uint64_t offset,
                                  int64_t base = 0) {
  std::vector<double> key(alpha.size());
  for (size_t i = 0; i < alpha.size(); ++i)
    key[i] = alpha[i] - std::log(-std::log(double(
                            philox_uniform(philox_word(seed, offset, 0, uint64_t(base) + i)))));
  std::vector<int> idx(alpha.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return key[size_t(a)] > key[size_t(b)]; });
  return idx;
}

std::vector<double> softmax_d(const std::vector<float>& a, const std::vector<int>& members) {
  double mx = -1e30, s = 0;
  for (int i : members) mx = std::max(mx, double(a[size_t(i)]));
  std::vector<double> p(a.size(), 0.0);
  for (int i : members) s += p[size_t(i)] = std::exp(a[size_t(i)] - mx);
  for (int i : members) p[size_t(i)] /= s;
  return p;
}

struct Expectation {
  std::vector<int> on, eval;
  std::vector<double> y, g, dalpha, dx;
  std::vector<std::vector<double>> dw;
};

// Direct computation of one stochastic training step of a MixedOp over 1x1 convolutions.
Expectation expect_step(std::string type, int k_on, int k_eval, const std::vector<float>& alpha,
                        const std::vector<std::vector<float>>& w, const std::vector<float>& x,
                        const std::vector<float>& dy, uint64_t seed, uint64_t offset,
                        std::vector<std::vector<double>>* ma, float ma_lr) {
  Expectation e;
  const std::vector<int> rank = expected_ranking(alpha, seed, offset);
  if (type == std::string("binary")) k_eval = kK;
  e.on.assign(rank.begin(), rank.begin() + k_on);
  e.eval.assign(rank.begin(), rank.begin() + k_eval);
  std::vector<std::vector<double>> o;
  for (int i = 0; i < kK; ++i) o.push_back(pointwise(w[size_t(i)], x));
  e.y.assign(x.size(), 0.0);
  for (int i : e.on)
    for (size_t j = 0; j < x.size(); ++j) e.y[j] += o[size_t(i)][j];
  e.g.assign(kK, 0.0);
  if (type == std::string("moving-average")) {
    const size_t s = x.size() / kN;
    std::vector<double> dys(s, 0.0);
    for (int64_t n = 0; n < kN; ++n)
      for (size_t j = 0; j < s; ++j) dys[j] += dy[n * s + j];
    for (int i = 0; i < kK; ++i) {
      std::vector<double>& m = (*ma)[size_t(i)];
      std::vector<double> est = m;
      if (std::find(e.eval.begin(), e.eval.end(), i) != e.eval.end()) {
        for (size_t j = 0; j < s; ++j) {
          double mu = 0;
          for (int64_t n = 0; n < kN; ++n) mu += o[size_t(i)][n * s + j] / kN;
          est[j] = mu;
          m[j] += ma_lr * (mu - m[j]);
        }
      }
      for (size_t j = 0; j < s; ++j) e.g[size_t(i)] += dys[j] * est[j];
    }
  } else {
    for (int i : e.eval) e.g[size_t(i)] = dotd(o[size_t(i)], dy);
  }
  std::vector<int> members(kK);
  std::iota(members.begin(), members.end(), 0);
  if (type == std::string("proxyless")) members = e.eval;
  const std::vector<double> p = softmax_d(alpha, members);
  double pg = 0;
  for (int i : members) pg += p[size_t(i)] * e.g[size_t(i)];
  e.dalpha.assign(kK, 0.0);
  for (int i : members) e.dalpha[size_t(i)] = p[size_t(i)] * (e.g[size_t(i)] - pg);
  // dx = sum over S_on of W^T dy; dW_i = dy x^T for i in S_on, zero otherwise.
  e.dx.assign(x.size(), 0.0);
  e.dw.assign(kK, std::vector<double>(kC * kC, 0.0));
  const int64_t hw = kH * kW;
  for (int i : e.on)
    for (int64_t n = 0; n < kN; ++n)
      for (int64_t k = 0; k < kC; ++k)
        for (int64_t c = 0; c < kC; ++c)
          for (int64_t j = 0; j < hw; ++j) {
            e.dx[(n * kC + c) * hw + j] +=
                double(w[size_t(i)][k * kC + c]) * dy[(n * kC + k) * hw + j];
            e.dw[size_t(i)][k * kC + c] +=
                double(dy[(n * kC + k) * hw + j]) * x[(n * kC + c) * hw + j];
          }
  return e;
}

struct TypeCase {
  std::string type;
  int k_on, k_eval;
};

class MixedOpSemantics : public ::testing::TestWithParam<TypeCase> {};

TEST_P(MixedOpSemantics, StepMatchesDirectComputation) {
  const TypeCase tc = GetParam();
  Context ctx(Device::cpu(), ContextOptions{2024});
  MixedOpConfig cfg{tc.type, tc.k_on, tc.k_eval, 0.25f};
  auto op_owner = make_mixed_op(ctx, "edge", pointwise_candidates(ctx, kK), cfg);
  MixedOp& op = *op_owner;
  init_normal(ctx, op.alpha().value, 0.0f, 1.0f);  // spread the logits for a real test
  std::vector<std::vector<float>> w;
  for (int i = 0; i < kK; ++i) w.push_back(op.candidate(i).own_parameters()[0]->value.to_vector());
  std::vector<std::vector<double>> ma(kK, std::vector<double>(size_t(kC * kH * kW), 0.0));

  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    op.zero_grad(ctx);
    const auto xv = test::random_vector(size_t(kN * kC * kH * kW), 10 + step);
    const auto dyv = test::random_vector(xv.size(), 20 + step);
    Tensor x = Tensor::from_vector(ctx, Shape{kN, kC, kH, kW}, xv);
    Tensor dy = Tensor::from_vector(ctx, x.shape(), dyv);
    const std::vector<float> alpha = op.alpha().value.to_vector();
    const uint64_t offset = ctx.rng_offset();
    const Expectation e = expect_step(tc.type, tc.k_on, tc.k_eval, alpha, w, xv, dyv, ctx.seed(),
                                      offset, &ma, cfg.ma_lr);
    Tensor y = op.forward(ctx, x, Mode::Train);
    EXPECT_EQ(op.last_on(), e.on);
    EXPECT_EQ(op.last_eval(), e.eval);
    EXPECT_TRUE(test::all_close(y.to_vector(), e.y, 1e-5, 1e-5)) << "output";
    Tensor dx = op.backward(ctx, dy);
    EXPECT_TRUE(test::all_close(op.last_scores().to_vector(), e.g, 1e-5, 1e-5)) << "scores g";
    EXPECT_TRUE(test::all_close(op.alpha().grad.to_vector(), e.dalpha, 1e-5, 1e-6)) << "dalpha";
    EXPECT_TRUE(test::all_close(dx.to_vector(), e.dx, 1e-5, 1e-5)) << "dx";
    for (int i = 0; i < kK; ++i)
      EXPECT_TRUE(test::all_close(op.candidate(i).own_parameters()[0]->grad.to_vector(),
                                  e.dw[size_t(i)], 1e-5, 1e-5))
          << "weight gradient of candidate " << i;
    if (tc.type == std::string("moving-average")) {
      std::vector<double> flat;
      for (auto& row : ma) flat.insert(flat.end(), row.begin(), row.end());
      EXPECT_TRUE(test::all_close(
          static_cast<BinaryMovingAverageMixedOp&>(op).moving_averages().to_vector(), flat, 1e-5,
          1e-6))
          << "moving averages";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MixedOpSemantics,
                         ::testing::Values(TypeCase{std::string("binary"), 1, 0},
                                           TypeCase{std::string("binary"), 2, 0},
                                           TypeCase{std::string("masked"), 1, 3},
                                           TypeCase{std::string("masked"), 2, 5},
                                           TypeCase{std::string("proxyless"), 1, 2},
                                           TypeCase{std::string("proxyless"), 2, 4},
                                           TypeCase{std::string("moving-average"), 1, 3},
                                           TypeCase{std::string("moving-average"), 2, 2}),
                         [](const ::testing::TestParamInfo<TypeCase>& i) {
                           return std::string(mixed_op_type_name(i.param.type)) + "_on" +
                                  std::to_string(i.param.k_on) + "_eval" +
                                  std::to_string(i.param.k_eval);
                         });

TEST(MixedOpSemantics, MaskedWithFullEvalEqualsBinary) {
  auto run = [](std::string t, int k_eval) {
    Context ctx(Device::cpu(), ContextOptions{7});
    auto op_owner = make_mixed_op(ctx, "edge", pointwise_candidates(ctx, kK),
                                  MixedOpConfig{t, 1, k_eval, 0.01f});
    MixedOp& op = *op_owner;
    Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 1);
    op.forward(ctx, x, Mode::Train);
    op.backward(ctx, test::random_tensor(ctx, x.shape(), 2));
    return op.alpha().grad.to_vector();
  };
  EXPECT_EQ(run(std::string("masked"), kK), run(std::string("binary"), 0));
}

TEST(MixedOpContinuous, GradientsMatchFiniteDifferences) {
  Context ctx(Device::cpu(), ContextOptions{31});
  std::vector<std::unique_ptr<Layer>> cands;
  cands.push_back(std::make_unique<Conv2d>(ctx, "conv3", 3, 3, 3, Conv2dParams::make(1, 1), false));
  auto seq = std::make_unique<Sequential>("stack");
  seq->emplace<Conv2d>(ctx, "pw", 3, 3, 1, Conv2dParams{}, true);
  seq->emplace<BatchNorm2d>(ctx, "bn", 3);
  cands.push_back(std::move(seq));
  cands.push_back(std::make_unique<AvgPool2d>("avg", 3, 1, 1));
  cands.push_back(std::make_unique<Identity>("skip"));
  ContinuousMixedOp op(ctx, "edge", std::move(cands));
  init_normal(ctx, op.alpha().value, 0.0f, 0.5f);
  Tensor x = test::random_tensor(ctx, Shape{3, 3, 4, 4}, 5);
  test::GradCheckOptions o;
  o.eps = 3e-3;
  test::check_layer(ctx, op, x, o);  // input, every weight and alpha
}

// A Zero candidate keeps its share of the softmax but costs nothing: no forward, no fill, no
// score pass, no backward. y = p1 x, dx = p1 dy and dalpha = p (g - <p, g>) with g = (0, <dy, x>)
// by hand; every candidate scaled, and scored, by one mix_bwd_scores; gradients by finite
// differences with Zero first, as "none" is in the DARTS space.
TEST(MixedOpContinuous, ZeroCandidatesKeepTheirShareAndCostNothing) {
  Context ctx(Device::cpu(), ContextOptions{37});
  std::vector<std::unique_ptr<Layer>> cands;
  cands.push_back(std::make_unique<Zero>("none"));
  cands.push_back(std::make_unique<Identity>("skip"));
  ContinuousMixedOp op(ctx, "edge", std::move(cands));
  ops::copy(ctx, Tensor::from_vector(ctx, Shape{2}, {0.3f, -0.4f}), op.alpha().value);
  const std::vector<double> p = softmax_d({0.3f, -0.4f}, {0, 1});
  const Shape s{2, 3, 2, 2};
  const std::vector<float> xv = test::random_vector(size_t(s.numel()), 8),
                           dyv = test::random_vector(size_t(s.numel()), 9);
  Tensor x = Tensor::from_vector(ctx, s, xv), dy = Tensor::from_vector(ctx, s, dyv);
  OpProfiler prof(ctx);
  Tensor y = op.forward(ctx, x, Mode::Train);
  Tensor dx = op.backward(ctx, dy);
  std::map<std::string, int64_t> calls;
  for (const auto& row : prof.report_by_op()) calls[row.op] = row.calls;
  const std::vector<float> yg = y.to_vector(), dxg = dx.to_vector();
  double g1 = 0.0;
  for (size_t i = 0; i < xv.size(); ++i) {
    EXPECT_NEAR(yg[i], p[1] * xv[i], 1e-6);
    EXPECT_NEAR(dxg[i], p[1] * dyv[i], 1e-6);
    g1 += double(dyv[i]) * xv[i];
  }
  const double pg = p[1] * g1;
  const std::vector<float> da = op.alpha().grad.to_vector();
  EXPECT_NEAR(da[0], p[0] * (0.0 - pg), 1e-5);
  EXPECT_NEAR(da[1], p[1] * (g1 - pg), 1e-5);
  EXPECT_EQ(calls.count("fill"), 0u);  // Zero made no tensor of zeros
  EXPECT_EQ(calls.at("mix_fwd"), 1);
  EXPECT_EQ(calls.at("mix_bwd_scores"), 1);  // scaling and scores in one pass
  EXPECT_EQ(calls.count("mix_bwd") + calls.count("mix_scores"), 0u);

  // Only Zero candidates: y = 0, dx = 0, the alpha gradient 0.
  std::vector<std::unique_ptr<Layer>> zeros;
  zeros.push_back(std::make_unique<Zero>("none"));
  zeros.push_back(std::make_unique<Zero>("none2", 2));  // output sizes must agree: stride 1 and 2
  EXPECT_THROW(ContinuousMixedOp(ctx, "bad", std::move(zeros)).output_shape(s), Error);
  std::vector<std::unique_ptr<Layer>> one;
  one.push_back(std::make_unique<Zero>("none", 2));
  ContinuousMixedOp z(ctx, "zero_edge", std::move(one));
  Tensor yz = z.forward(ctx, x, Mode::Train);
  EXPECT_EQ(yz.shape(), (Shape{2, 3, 1, 1}));
  for (float v : yz.to_vector()) EXPECT_EQ(v, 0.0f);
  Tensor dz = z.backward(ctx, Tensor::full(ctx, yz.shape(), 1.0f));
  EXPECT_EQ(dz.shape(), s);
  for (float v : dz.to_vector()) EXPECT_EQ(v, 0.0f);
  for (float v : z.alpha().grad.to_vector()) EXPECT_EQ(v, 0.0f);

  std::vector<std::unique_ptr<Layer>> mixed;
  mixed.push_back(std::make_unique<Zero>("none"));
  mixed.push_back(std::make_unique<Conv2d>(ctx, "conv3", 3, 3, 3, Conv2dParams::make(1, 1), false));
  mixed.push_back(std::make_unique<AvgPool2d>("avg", 3, 1, 1));
  mixed.push_back(std::make_unique<Identity>("skip"));
  ContinuousMixedOp m(ctx, "edge", std::move(mixed));
  init_normal(ctx, m.alpha().value, 0.0f, 0.5f);
  test::GradCheckOptions o;
  o.eps = 3e-3;
  Tensor xm = test::random_tensor(ctx, Shape{3, 3, 4, 4}, 5);
  test::check_layer(ctx, m, xm, o);
}

// What two training steps of one edge give (output, input gradient, alpha and weight
// gradients, buffers, the op calls) and a forward in Eval afterwards: the bits its fused and
// unfused passes must share.
struct EdgeRun {
  std::vector<float> y, dx, dalpha, eval;
  std::vector<std::vector<float>> grads, buffers;
  std::map<std::string, int64_t> calls;
};
EdgeRun run_edge(Context& ctx, ContinuousMixedOp& op, const Tensor& x) {
  EdgeRun r;
  OpProfiler prof(ctx);
  for (int it = 0; it < 2; ++it) {  // twice: the running statistics move twice
    op.zero_grad(ctx);
    Tensor y = op.forward(ctx, x, Mode::Train);
    Tensor dy = test::random_tensor(ctx, y.shape(), 4 + uint32_t(it));
    Tensor dx = op.backward(ctx, dy);
    r.y = y.to_vector();
    r.dx = dx.to_vector();
  }
  for (const auto& row : prof.report_by_op()) r.calls[row.op] = row.calls;
  r.dalpha = op.alpha().grad.to_vector();
  for (auto& [name, p] : op.named_parameters()) r.grads.push_back(p->grad.to_vector());
  for (auto& [name, b] : op.named_buffers()) r.buffers.push_back(b->to_vector());
  r.eval = op.forward(ctx, x, Mode::Eval).to_vector();
  return r;
}
// How often a run called `op` (0 when never).
int64_t calls(const EdgeRun& r, const char* op) {
  auto it = r.calls.find(op);
  return it == r.calls.end() ? int64_t(0) : it->second;
}

// Candidates ending in an affine-free BatchNorm (a Sequential, a FactorizedReduce, a lone
// BatchNorm2d) are normalised inside the mix: the same output, input gradient, alpha and weight
// gradients and running statistics bit for bit as each running its own BatchNorm (fuse_norm
// off), in Train and Eval; one batchnorm_stats, mix_norm_fwd and mix_norm_bwd per edge instead
// of a BatchNorm per candidate; an affine or synchronised BatchNorm is no trailing norm; the
// fused op's gradients by finite differences.
TEST(MixedOpContinuous, TrailingNormsRunInsideTheMixWithTheSameBits) {
  auto candidates = [](Context& ctx) {
    std::vector<std::unique_ptr<Layer>> v;
    auto conv_bn = std::make_unique<Sequential>("conv_bn");
    conv_bn->emplace<Conv2d>(ctx, "conv", 4, 4, 3, Conv2dParams::make(1, 1), false);
    conv_bn->emplace<BatchNorm2d>(ctx, "bn", 4, false);
    v.push_back(std::move(conv_bn));
    v.push_back(std::make_unique<Zero>("none"));
    v.push_back(std::make_unique<BatchNorm2d>(ctx, "bn", 4, false));
    auto pool_bn = std::make_unique<Sequential>("pool_bn");
    pool_bn->emplace<AvgPool2d>("pool", 3, 1, 1);
    pool_bn->emplace<BatchNorm2d>(ctx, "bn", 4, false);
    v.push_back(std::move(pool_bn));
    v.push_back(std::make_unique<Identity>("skip"));
    auto affine = std::make_unique<Sequential>("conv_bn_affine");
    affine->emplace<Conv2d>(ctx, "conv", 4, 4, 1, Conv2dParams{}, false);
    affine->emplace<BatchNorm2d>(ctx, "bn", 4, true);
    v.push_back(std::move(affine));
    v.push_back(std::make_unique<darts::FactorizedReduce>(ctx, "reduce", 4, 4, false));
    return v;
  };
  const Shape s{3, 4, 6, 6};
  auto run = [&](bool fuse, int stride) {
    Context ctx(Device::cpu(), ContextOptions{41});
    MixedOpConfig cfg;
    cfg.fuse_norm = fuse;
    auto cands = candidates(ctx);
    if (stride == 2) {  // a reduction edge: stride-2 candidates only
      cands.clear();
      cands.push_back(std::make_unique<darts::FactorizedReduce>(ctx, "reduce", 4, 4, false));
      cands.push_back(std::make_unique<Zero>("none", 2));
      auto pool_bn = std::make_unique<Sequential>("pool_bn");
      pool_bn->emplace<MaxPool2d>("pool", 3, 2, 1);
      pool_bn->emplace<BatchNorm2d>(ctx, "bn", 4, false);
      cands.push_back(std::move(pool_bn));
    } else {
      cands.pop_back();  // FactorizedReduce halves the map: not on a stride-1 edge
    }
    ContinuousMixedOp op(ctx, "edge", std::move(cands), cfg);
    init_normal(ctx, op.alpha().value, 0.0f, 0.5f);
    Tensor x = test::random_tensor(ctx, s, 3);
    EdgeRun r = run_edge(ctx, op, x);
    if (fuse && stride == 1) {
      test::GradCheckOptions o;
      o.eps = 3e-3;
      test::check_layer(ctx, op, x, o);  // input, weights and alpha through the fused path
    }
    return r;
  };
  for (int stride : {1, 2}) {
    SCOPED_TRACE(stride);
    const EdgeRun fused = run(true, stride), own = run(false, stride);
    EXPECT_EQ(fused.y, own.y);
    EXPECT_EQ(fused.dx, own.dx);
    EXPECT_EQ(fused.dalpha, own.dalpha);
    EXPECT_EQ(fused.grads, own.grads);
    EXPECT_EQ(fused.buffers, own.buffers);
    EXPECT_EQ(fused.eval, own.eval);
    // Trailing norms: stride 1 conv_bn, bn, pool_bn (3; not the affine one); stride 2 reduce,
    // pool_bn (2).
    const int64_t normed = stride == 1 ? 3 : 2;
    EXPECT_EQ(calls(fused, "batchnorm_stats"), 2);
    EXPECT_EQ(calls(fused, "mix_norm_fwd"), 2);
    EXPECT_EQ(calls(fused, "mix_norm_bwd"), 2);
    EXPECT_EQ(calls(fused, "mix_fwd") + calls(fused, "mix_bwd_scores"), 0);
    EXPECT_EQ(calls(own, "batchnorm_fwd_train") - calls(fused, "batchnorm_fwd_train"), 2 * normed);
    EXPECT_EQ(calls(own, "batchnorm_bwd") - calls(fused, "batchnorm_bwd"), 2 * normed);
  }

  // Which layers have a trailing norm, and the halves' contract.
  Context ctx;
  BatchNorm2d plain(ctx, "bn", 4, false), affine(ctx, "bn_affine", 4, true),
      synced(ctx, "bn_sync", 4, false);
  synced.set_synchronized(true);
  EXPECT_EQ(plain.trailing_norm(), &plain);
  EXPECT_EQ(affine.trailing_norm(), nullptr);
  EXPECT_EQ(synced.trailing_norm(), nullptr);
  Identity id("skip");
  EXPECT_EQ(id.trailing_norm(), nullptr);
  Tensor x = test::random_tensor(ctx, s, 9);
  EXPECT_THROW(id.forward_to_norm(ctx, x, Mode::Train), Error);
  Sequential seq("seq");
  seq.emplace<Conv2d>(ctx, "conv", 4, 4, 1, Conv2dParams{}, false);
  BatchNorm2d& last = seq.emplace<BatchNorm2d>(ctx, "bn", 4, false);
  EXPECT_EQ(seq.trailing_norm(), &last);
  Tensor z = seq.forward_to_norm(ctx, x, Mode::Train);
  EXPECT_EQ(z.shape(), s);
  EXPECT_THROW(seq.backward(ctx, z), Error);  // a forward_to_norm takes backward_from_norm
  EXPECT_EQ(seq.backward_from_norm(ctx, z).shape(), s);
  seq.forward(ctx, x, Mode::Train);
  EXPECT_THROW(seq.backward_from_norm(ctx, z), Error);
}

// The DARTS edge's four convolution candidates start with a depthwise convolution: their
// leading convolutions run as one group (ops::depthwise_group_fwd), their filter gradients in
// one op (depthwise_group_bwd_filter) and their input gradient is summed with the pools' and
// the skip's in one op (depthwise_group_bwd_data); the same output,
// input gradient, alpha and weight gradients and running statistics bit for bit as one by one
// (fuse_lead off), at stride 1 and 2, with the trailing norms fused or not; a convolution
// candidate placed before a pool stays out of the group (the sum keeps its order); the grouped
// pass's gradients by finite differences; the partial passes' contract.
TEST(MixedOpContinuous, LeadingConvolutionsRunAsOneGroupWithTheSameBits) {
  const Shape s{2, 4, 8, 8};
  auto run = [&](bool lead, bool norm, int stride, bool conv_first) {
    Context ctx(Device::cpu(), ContextOptions{43});
    MixedOpConfig cfg;
    cfg.fuse_lead = lead;
    cfg.fuse_norm = norm;
    std::vector<std::unique_ptr<Layer>> cands;
    std::vector<std::string> order = darts::primitives();
    if (conv_first) std::swap(order[1], order[4]);  // sep_conv_3x3 before avg_pool_3x3
    for (const std::string& prim : order)
      cands.push_back(darts::make_primitive(ctx, prim, prim, 4, stride, false, true));
    ContinuousMixedOp op(ctx, "edge", std::move(cands), cfg);
    init_normal(ctx, op.alpha().value, 0.0f, 0.5f);
    Tensor x = test::random_tensor(ctx, s, 3);
    EdgeRun r = run_edge(ctx, op, x);
    if (lead && norm && stride == 1 && !conv_first) {
      test::GradCheckOptions o;
      o.eps = 3e-3;
      test::check_layer(ctx, op, x, o);  // input, weights and alpha through the grouped path
    }
    return r;
  };
  for (int stride : {1, 2})
    for (bool norm : {true, false})
      for (bool conv_first : {false, true}) {
        SCOPED_TRACE(detail::cat("stride ", stride, norm ? ", norms fused" : "",
                                 conv_first ? ", a convolution before a pool" : ""));
        const EdgeRun grouped = run(true, norm, stride, conv_first),
                      own = run(false, norm, stride, conv_first);
        EXPECT_EQ(grouped.y, own.y);
        EXPECT_EQ(grouped.dx, own.dx);
        EXPECT_EQ(grouped.dalpha, own.dalpha);
        EXPECT_EQ(grouped.grads, own.grads);
        EXPECT_EQ(grouped.buffers, own.buffers);
        EXPECT_EQ(grouped.eval, own.eval);
        // Two Train forwards and two backwards counted. The group: the four convolutions, or the
        // three after the pools when one of them comes first.
        const int64_t members = conv_first ? 3 : 4;
        EXPECT_EQ(calls(grouped, "depthwise_group_fwd"), 2);
        EXPECT_EQ(calls(grouped, "depthwise_group_bwd_data"), 2);
        EXPECT_EQ(calls(grouped, "depthwise_group_bwd_filter"), 2);
        EXPECT_EQ(calls(own, "depthwise_group_fwd") + calls(own, "depthwise_group_bwd_data") +
                      calls(own, "depthwise_group_bwd_filter"),
                  0);
        EXPECT_EQ(calls(own, "conv2d_fwd") - calls(grouped, "conv2d_fwd"), 2 * members);
        EXPECT_EQ(calls(own, "conv2d_bwd_data") - calls(grouped, "conv2d_bwd_data"), 2 * members);
        EXPECT_EQ(calls(own, "conv2d_bwd_filter") - calls(grouped, "conv2d_bwd_filter"),
                  2 * members);
        EXPECT_EQ(calls(grouped, "add_n"), 0);  // the sum is the group op's
      }

  // Which layers lead with a depthwise convolution, and the partial passes' contract.
  Context ctx;
  Conv2d dw(ctx, "dw", 4, 4, 3, Conv2dParams::make(1, 1, 1, 4), false),
      dense(ctx, "dense", 4, 4, 3, Conv2dParams::make(1, 1), false);
  EXPECT_EQ(dw.leading_conv(), &dw);
  EXPECT_EQ(dense.leading_conv(), nullptr);
  Identity id("skip");
  EXPECT_EQ(id.leading_conv(), nullptr);
  std::unique_ptr<Layer> sep = darts::make_primitive(ctx, "sep_conv_3x3", "sep", 4, 1, false, true);
  Conv2d* lc = sep->leading_conv();
  ASSERT_NE(lc, nullptr);
  Tensor x = test::random_tensor(ctx, s, 9);
  Tensor wrong = Tensor::empty(ctx, Shape{2, 4, 7, 7});
  PartialPass bad{false, &wrong};
  EXPECT_THROW(sep->forward_partial(ctx, x, Mode::Train, bad), Error);  // not the lead's shape
  EXPECT_THROW(id.forward_partial(ctx, x, Mode::Train, PartialPass{false, &x}), Error);
  Tensor lead = Tensor::empty(ctx, lc->output_shape(s));
  ops::conv2d_fwd(ctx, x, lc->weight().value, nullptr, lead, lc->params());
  Tensor full = sep->forward(ctx, x, Mode::Probe);  // batch statistics, as Train
  Tensor part = sep->forward_partial(ctx, x, Mode::Train, PartialPass{false, &lead});
  EXPECT_EQ(part.to_vector(), full.to_vector());
  EXPECT_THROW(sep->backward(ctx, part), Error);  // a partial forward takes backward_partial
  Tensor dlead = sep->backward_partial(ctx, part);
  EXPECT_EQ(dlead.shape(), lead.shape());  // the gradient of the leading convolution's output
  sep->forward(ctx, x, Mode::Train);
  EXPECT_THROW(sep->backward_partial(ctx, part), Error);  // a full forward takes backward
  sep->release_saved();

  // lead_grads: backward_partial leaves the leading convolution's filter gradient to
  // Conv2d::lead_parameter_gradients, which adds conv2d_bwd_filter's bits once.
  EXPECT_THROW(sep->forward_partial(ctx, x, Mode::Train, PartialPass{false, nullptr, true}), Error);
  Tensor dy = test::random_tensor(ctx, full.shape(), 10);
  auto weight_grads = [&](bool defer) {
    sep->zero_grad(ctx);
    sep->forward_partial(ctx, x, Mode::Train, PartialPass{false, &lead, defer});
    Tensor g = sep->backward_partial(ctx, dy);
    const std::vector<float> before = lc->weight().grad.to_vector();
    if (defer) {
      EXPECT_EQ(before, std::vector<float>(before.size(), 0.0f));  // left to the caller
      EXPECT_THROW(sep->forward(ctx, x, Mode::Train), Error);      // still owed
      EXPECT_THROW(Conv2d::lead_parameter_gradients(ctx, wrong, {lc}, {&g}), Error);      // not x
      EXPECT_THROW(Conv2d::lead_parameter_gradients(ctx, x, {lc, lc}, {&g, &g}), Error);  // twice
      EXPECT_THROW(Conv2d::lead_parameter_gradients(ctx, x, {lc}, {&wrong}), Error);  // dy's shape
      Conv2d::lead_parameter_gradients(ctx, x, {lc}, {&g});
      EXPECT_THROW(Conv2d::lead_parameter_gradients(ctx, x, {lc}, {&g}), Error);  // added once
    }
    Tensor want = Tensor::zeros(ctx, lc->weight().value.shape());
    ops::conv2d_bwd_filter(ctx, x, g, want, nullptr, lc->params());
    EXPECT_EQ(lc->weight().grad.to_vector(), want.to_vector());
    return lc->weight().grad.to_vector();
  };
  EXPECT_EQ(weight_grads(true), weight_grads(false));
  // Frozen at the forward: nothing owed is added.
  lc->weight().requires_grad = false;
  sep->zero_grad(ctx);
  sep->forward_partial(ctx, x, Mode::Train, PartialPass{false, &lead, true});
  Tensor g = sep->backward_partial(ctx, dy);
  Conv2d::lead_parameter_gradients(ctx, x, {lc}, {&g});
  const std::vector<float> frozen = lc->weight().grad.to_vector();
  EXPECT_EQ(frozen, std::vector<float>(frozen.size(), 0.0f));
}

TEST(MixedOpDeterministic, SumsTopKWithoutWeights) {
  Context ctx(Device::cpu(), ContextOptions{3});
  ContinuousMixedOp op(ctx, "edge", pointwise_candidates(ctx, kK), 2);
  Tensor a = Tensor::from_vector(ctx, Shape{kK}, {0.1f, 0.9f, -1.0f, 0.5f, 0.2f});
  ops::copy(ctx, a, op.alpha().value);
  EXPECT_EQ(op.derived(), (std::vector<int>{1, 3}));
  op.set_sampling(Sampling::Deterministic);
  const auto xv = test::random_vector(size_t(kN * kC * kH * kW), 4);
  Tensor x = Tensor::from_vector(ctx, Shape{kN, kC, kH, kW}, xv);
  Tensor y = op.forward(ctx, x, Mode::Train);
  std::vector<double> want(xv.size(), 0.0);
  for (int i : {1, 3}) {
    const auto o = pointwise(op.candidate(i).own_parameters()[0]->value.to_vector(), xv);
    for (size_t j = 0; j < o.size(); ++j) want[j] += o[j];
  }
  EXPECT_TRUE(test::all_close(y.to_vector(), want, 1e-5, 1e-5));
  op.backward(ctx, test::random_tensor(ctx, x.shape(), 5));
  EXPECT_EQ(op.alpha().grad.to_vector(), std::vector<float>(kK, 0.0f));  // no alpha gradient
  EXPECT_EQ(op.candidate(0).own_parameters()[0]->grad.to_vector(), std::vector<float>(9, 0.0f));
  EXPECT_NE(op.candidate(1).own_parameters()[0]->grad.to_vector(), std::vector<float>(9, 0.0f));

  // The selection is fixed on entering deterministic mode (no alpha read per call) and
  // re-derived when the mode is entered again.
  Tensor b = Tensor::from_vector(ctx, Shape{kK}, {0.9f, 0.1f, 0.8f, -1.0f, 0.2f});
  ops::copy(ctx, b, op.alpha().value);
  EXPECT_TRUE(test::all_close(op.forward(ctx, x, Mode::Eval).to_vector(), want, 1e-5, 1e-5));
  op.set_sampling(Sampling::Stochastic);
  op.set_sampling(Sampling::Deterministic);
  std::vector<double> want2(xv.size(), 0.0);
  for (int i : {0, 2}) {
    const auto o = pointwise(op.candidate(i).own_parameters()[0]->value.to_vector(), xv);
    for (size_t j = 0; j < o.size(); ++j) want2[j] += o[j];
  }
  EXPECT_TRUE(test::all_close(op.forward(ctx, x, Mode::Eval).to_vector(), want2, 1e-5, 1e-5));
}

TEST(MixedOpBinary, ScoredOpsKeepBatchNormStatisticsAndGetNoWeightGradient) {
  Context ctx(Device::cpu(), ContextOptions{77});
  std::vector<std::unique_ptr<Layer>> cands;
  for (int i = 0; i < 4; ++i) {
    auto s = std::make_unique<Sequential>("s" + std::to_string(i));
    s->emplace<Conv2d>(ctx, "conv", 3, 3, 3, Conv2dParams::make(1, 1), false);
    s->emplace<BatchNorm2d>(ctx, "bn", 3);
    cands.push_back(std::move(s));
  }
  BinaryMixedOp op(ctx, "edge", std::move(cands), 1);
  Tensor x = test::random_tensor(ctx, Shape{2, 3, 4, 4}, 1);
  op.forward(ctx, x, Mode::Train);
  op.backward(ctx, test::random_tensor(ctx, x.shape(), 2));
  const int on = op.last_on()[0];
  for (int i = 0; i < 4; ++i) {
    auto& seq = static_cast<Sequential&>(op.candidate(i));
    auto& bn = static_cast<BatchNorm2d&>(seq[1]);
    const bool sampled = i == on;
    EXPECT_EQ(bn.running_mean().to_vector() != std::vector<float>(3, 0.0f), sampled)
        << "candidate " << i;
    const auto wg = static_cast<Conv2d&>(seq[0]).weight().grad.to_vector();
    EXPECT_EQ(wg != std::vector<float>(wg.size(), 0.0f), sampled) << "candidate " << i;
  }
  // Every candidate was scored (Binary: E = all).
  const auto g = op.last_scores().to_vector();
  for (float v : g) EXPECT_NE(v, 0.0f);
}

TEST(MixedOpSampling, FrequenciesMatchSoftmaxAndDrawsNeverRepeat) {
  Context ctx;
  const std::vector<float> alpha{0.5f, -0.3f, 1.2f, 0.0f, -1.0f};
  const int draws = 10000, k = int(alpha.size());
  std::vector<float> logits;
  std::vector<int32_t> offsets{0};
  for (int d = 0; d < draws; ++d) {
    logits.insert(logits.end(), alpha.begin(), alpha.end());
    offsets.push_back(offsets.back() + k);
  }
  Tensor lt = Tensor::from_vector(ctx, Shape{int64_t(logits.size())}, logits);
  Tensor ot = Tensor::from_vector_i32(ctx, Shape{int64_t(offsets.size())}, offsets);
  Tensor rt = Tensor::empty(ctx, lt.shape(), DType::I32);
  ops::gumbel_rank(ctx, lt, ot, 99, 0, rt);  // 10^4 MixedOps in one call
  const auto r = rt.to_vector_i32();
  std::vector<int> first(size_t(k), 0);
  for (int d = 0; d < draws; ++d) {
    std::set<int> seen(r.begin() + d * k, r.begin() + (d + 1) * k);
    ASSERT_EQ(int(seen.size()), k) << "draw " << d << " repeats an index";
    ASSERT_TRUE(*seen.begin() == 0 && *seen.rbegin() == k - 1);
    ++first[size_t(r[size_t(d * k)])];
  }
  std::vector<int> members(static_cast<size_t>(k));
  std::iota(members.begin(), members.end(), 0);
  const std::vector<double> p = softmax_d(alpha, members);
  for (int i = 0; i < k; ++i) {
    const double sigma = std::sqrt(draws * p[size_t(i)] * (1 - p[size_t(i)]));
    EXPECT_NEAR(first[size_t(i)], draws * p[size_t(i)], 4 * sigma) << "op " << i;
  }
}

TEST(MixedOpSampling, EvalExtrasNeverOverlapOnSet) {
  Context ctx(Device::cpu(), ContextOptions{5});
  BinaryMaskedMixedOp op(ctx, "edge", pointwise_candidates(ctx, kK), 4, 2);
  Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 1);
  for (int t = 0; t < 200; ++t) {
    op.forward(ctx, x, Mode::Eval);
    const auto& on = op.last_on();
    const auto& ev = op.last_eval();
    ASSERT_EQ(on.size(), 2u);
    ASSERT_EQ(ev.size(), 4u);
    EXPECT_TRUE(std::equal(on.begin(), on.end(), ev.begin()));
    EXPECT_EQ(std::set<int>(ev.begin(), ev.end()).size(), 4u);
  }
}

TEST(MixedOpProxyless, RescaleKeepsOtherProbabilitiesAndEvalMass) {
  Context ctx(Device::cpu(), ContextOptions{11});
  auto net = std::make_unique<Sequential>("net");
  auto& op = net->emplace<BinaryProxylessNASStyleMixedOp>(ctx, "edge",
                                                          pointwise_candidates(ctx, kK), 2, 1);
  SearchModel model(ctx, std::move(net));
  init_normal(ctx, op.alpha().value, 0.0f, 1.0f);
  Adam arch(ctx, model.architecture_parameters(),
            AdamParams{0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, false, 1});
  model.attach_architecture_optimizer(arch);
  for (int step = 0; step < 3; ++step) {
    const std::vector<float> a0 = op.alpha().value.to_vector();
    const std::vector<float> p0 = op.probabilities();
    Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 40 + step);
    model.forward(ctx, x, Mode::Train);
    model.backward(ctx, test::random_tensor(ctx, x.shape(), 50 + step));
    const std::vector<int> e = op.last_eval();
    ASSERT_EQ(e.size(), 2u);
    // Only alpha_E has a gradient.
    const auto ga = op.alpha().grad.to_vector();
    for (int i = 0; i < kK; ++i)
      if (std::find(e.begin(), e.end(), i) == e.end()) EXPECT_EQ(ga[size_t(i)], 0.0f);
    arch.step(ctx);
    arch.zero_grad(ctx);
    const std::vector<float> a1 = op.alpha().value.to_vector();
    const std::vector<float> p1 = op.probabilities();
    double mass0 = 0, mass1 = 0;
    for (int i : e) {
      mass0 += std::exp(double(a0[size_t(i)]));
      mass1 += std::exp(double(a1[size_t(i)]));
    }
    EXPECT_NEAR(mass1 / mass0, 1.0, 1e-6) << "sum over E of exp(alpha) is preserved";
    if (step == 0)  // first Adam step: zero moments outside E, so nothing else moves
      for (int i = 0; i < kK; ++i)
        if (std::find(e.begin(), e.end(), i) == e.end())
          EXPECT_NEAR(p1[size_t(i)], p0[size_t(i)], 1e-6)
              << "probability of op " << i << " outside E";
    EXPECT_NE(a1[size_t(e[0])], a0[size_t(e[0])]) << "alpha_E did move";
  }
}

// The exact ProxylessNAS update over many Adam steps with weight decay and an alpha shared by
// two MixedOps: outside the union U of the steps' evaluation sets, alpha and both Adam moments
// stay bit for bit as they were, sum_U exp(alpha) is preserved, so the probability of every op
// outside U is unchanged. The reference update (ProxylessUpdate::Reference) breaks this from
// the second step on (Adam's moments and weight decay move entries outside E): the bug the
// exact update fixes.
TEST(MixedOpProxyless, ExactUpdateKeepsOtherProbabilitiesOverManyAdamSteps) {
  auto run = [](ProxylessUpdate update) {
    Context ctx(Device::cpu(), ContextOptions{13});
    auto net = std::make_unique<Sequential>("net");
    MixedOpConfig mc;
    mc.method = std::string("proxyless");
    mc.num_eval = 2;
    mc.alpha_group = "shared";
    net->add(make_mixed_op(ctx, "a", pointwise_candidates(ctx, kK), mc));
    net->add(make_mixed_op(ctx, "b", pointwise_candidates(ctx, kK), mc));
    mc.alpha_group = "";
    net->add(make_mixed_op(ctx, "c", pointwise_candidates(ctx, kK), mc));
    SearchModel model(ctx, std::move(net));
    for (Parameter* a : model.architecture_parameters()) init_normal(ctx, a->value, 0.0f, 1.0f);
    AdamParams ap;
    ap.lr = 0.05f;
    ap.beta1 = 0.5f;
    ap.weight_decay = 1e-3f;
    Adam arch(ctx, model.architecture_parameters(), ap);
    model.attach_architecture_optimizer(arch, update);
    auto& seq = static_cast<Sequential&>(model.network());
    std::vector<MixedOp*> ops{&static_cast<MixedOp&>(seq[0]), &static_cast<MixedOp&>(seq[1]),
                              &static_cast<MixedOp&>(seq[2])};
    const std::vector<std::vector<int>> group_ops = {{0, 1}, {2}};  // per architecture parameter
    int violations = 0;
    for (int step = 0; step < 30; ++step) {
      const std::vector<Parameter*> ps = model.architecture_parameters();
      std::vector<std::vector<float>> a0, m0, v0;
      for (size_t g = 0; g < ps.size(); ++g) {
        a0.push_back(ps[g]->value.to_vector());
        m0.push_back(arch.state()[2 * g].second->to_vector());
        v0.push_back(arch.state()[2 * g + 1].second->to_vector());
      }
      arch.zero_grad(ctx);
      Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, uint32_t(100 + step));
      Tensor y = model.forward(ctx, x, Mode::Train);
      model.backward(ctx, test::random_tensor(ctx, y.shape(), uint32_t(200 + step)));
      arch.step(ctx);
      for (size_t g = 0; g < ps.size(); ++g) {
        std::set<int> u;
        for (int o : group_ops[g])
          for (int i : ops[size_t(o)]->last_eval()) u.insert(i);
        const std::vector<float> a1 = ps[g]->value.to_vector();
        const std::vector<float> m1 = arch.state()[2 * g].second->to_vector();
        const std::vector<float> v1 = arch.state()[2 * g + 1].second->to_vector();
        double mass0 = 0, mass1 = 0, all0 = 0, all1 = 0;
        for (int i = 0; i < kK; ++i) {
          all0 += std::exp(double(a0[g][size_t(i)]));
          all1 += std::exp(double(a1[size_t(i)]));
          if (u.count(i)) {
            mass0 += std::exp(double(a0[g][size_t(i)]));
            mass1 += std::exp(double(a1[size_t(i)]));
          }
        }
        bool exact = std::abs(mass1 / mass0 - 1.0) < 1e-5;
        for (int i = 0; i < kK; ++i) {
          if (u.count(i)) continue;
          const size_t j = size_t(i);
          exact = exact && a1[j] == a0[g][j] && m1[j] == m0[g][j] && v1[j] == v0[g][j];
          const double p0 = std::exp(double(a0[g][j])) / all0, p1 = std::exp(double(a1[j])) / all1;
          exact = exact && std::abs(p1 - p0) <= 1e-5 * p0;
        }
        violations += exact ? 0 : 1;
        if (update == ProxylessUpdate::Exact)
          EXPECT_TRUE(exact) << "step " << step << ", alpha group " << g;
      }
    }
    return violations;
  };
  EXPECT_EQ(run(ProxylessUpdate::Exact), 0);
  const int reference = run(ProxylessUpdate::Reference);
  std::printf(
      "[ measured ] reference ProxylessNAS update: %d of 60 group-steps move alphas "
      "outside the evaluated set\n",
      reference);
  EXPECT_GT(reference, 30) << "the reference update should show the drift this test guards";
}

// GDAS against its definition, written here: k = argmax_i (alpha_i + G_i) with G_i =
// -log(-log u_i) from the Philox words of the draw; y = op_k(x); s = softmax((log_softmax(alpha)
// + G) / tau); dL/ds = <dy, op_k(x)> at k, 0 elsewhere; dalpha through the softmax and
// log-softmax; only op_k gets dy (its weight gradient and dx), over three steps and two
// temperatures.
TEST(MixedOpGdas, ForwardAndStraightThroughGradientMatchTheDefinition) {
  Context ctx(Device::cpu(), ContextOptions{77});
  MixedOpConfig cfg;
  cfg.method = "gdas";
  cfg.tau_max = 4.0f;
  cfg.tau_min = 0.5f;
  auto owner = make_mixed_op(ctx, "edge", pointwise_candidates(ctx, kK), cfg);
  auto& op = static_cast<GdasMixedOp&>(*owner);
  init_normal(ctx, op.alpha().value, 0.0f, 1.0f);
  std::vector<std::vector<float>> w;
  for (int i = 0; i < kK; ++i) w.push_back(op.candidate(i).own_parameters()[0]->value.to_vector());
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    op.set_search_progress(step == 0 ? 0.0 : 1.0);
    const double tau = step == 0 ? 4.0 : 0.5;
    EXPECT_FLOAT_EQ(op.temperature(), float(tau));
    op.zero_grad(ctx);
    const auto xv = test::random_vector(size_t(kN * kC * kH * kW), 30 + step);
    const auto dyv = test::random_vector(xv.size(), 40 + step);
    Tensor x = Tensor::from_vector(ctx, Shape{kN, kC, kH, kW}, xv);
    Tensor dy = Tensor::from_vector(ctx, x.shape(), dyv);
    const std::vector<float> a = op.alpha().value.to_vector();
    const uint64_t offset = ctx.rng_offset();  // the op draws its own noise next
    std::vector<double> gumbel(kK), key(kK);
    int k = 0;
    for (int i = 0; i < kK; ++i) {
      const double u = philox_uniform(philox_word(ctx.seed(), offset, 0, uint64_t(i)));
      gumbel[size_t(i)] = -std::log(-std::log(u));
      key[size_t(i)] = double(a[size_t(i)]) + gumbel[size_t(i)];
      if (key[size_t(i)] > key[size_t(k)]) k = i;
    }
    Tensor y = op.forward(ctx, x, Mode::Train);
    ASSERT_EQ(op.last_on(), std::vector<int>{k});
    const std::vector<double> ok = pointwise(w[size_t(k)], xv);
    EXPECT_TRUE(test::all_close(y.to_vector(), ok, 1e-5, 1e-5)) << "y = op_k(x)";
    // The soft sample and the gradient, by the definition.
    double amax = *std::max_element(a.begin(), a.end()), as = 0;
    for (float v : a) as += std::exp(double(v) - amax);
    const double lse = amax + std::log(as);
    std::vector<double> z(kK), soft(kK), p(kK);
    double zmax = -1e300, zs = 0;
    for (int i = 0; i < kK; ++i) {
      z[size_t(i)] = (double(a[size_t(i)]) - lse + gumbel[size_t(i)]) / tau;
      zmax = std::max(zmax, z[size_t(i)]);
      p[size_t(i)] = std::exp(double(a[size_t(i)]) - lse);
    }
    for (int i = 0; i < kK; ++i) zs += std::exp(z[size_t(i)] - zmax);
    for (int i = 0; i < kK; ++i) soft[size_t(i)] = std::exp(z[size_t(i)] - zmax) / zs;
    EXPECT_TRUE(test::all_close(op.last_soft_sample().to_vector(), soft, 1e-5, 1e-6));
    const double gk = dotd(ok, dyv);  // dL/ds_k; 0 for the ops that did not run
    std::vector<double> v(kK);
    double vsum = 0;
    for (int i = 0; i < kK; ++i) {
      const double dsi = i == k ? gk : 0.0;
      v[size_t(i)] = soft[size_t(i)] * (dsi - soft[size_t(k)] * gk) / tau;
      vsum += v[size_t(i)];
    }
    std::vector<double> dalpha(kK);
    for (int i = 0; i < kK; ++i) dalpha[size_t(i)] = v[size_t(i)] - p[size_t(i)] * vsum;
    Tensor dx = op.backward(ctx, dy);
    EXPECT_TRUE(test::all_close(op.alpha().grad.to_vector(), dalpha, 1e-4, 1e-6)) << "dalpha";
    // dx = W_k^T dy; only op k has a weight gradient.
    std::vector<float> wt(size_t(kC * kC));
    for (int64_t r = 0; r < kC; ++r)
      for (int64_t c = 0; c < kC; ++c) wt[size_t(c * kC + r)] = w[size_t(k)][size_t(r * kC + c)];
    EXPECT_TRUE(test::all_close(dx.to_vector(), pointwise(wt, dyv), 1e-5, 1e-5)) << "dx";
    for (int i = 0; i < kK; ++i) {
      const auto gw = op.candidate(i).own_parameters()[0]->grad.to_vector();
      const bool any = std::any_of(gw.begin(), gw.end(), [](float f) { return f != 0.0f; });
      EXPECT_EQ(any, i == k) << "candidate " << i;
    }
  }
}

// The sampled op's frequencies follow softmax(alpha) whatever the temperature (the Gumbel-max
// trick): a chi-square test over 20000 draws (4 degrees of freedom; 18.47 is the 0.1% point).
TEST(MixedOpGdas, SampledOpFrequenciesFollowSoftmaxAlpha) {
  Context ctx(Device::cpu(), ContextOptions{5});
  MixedOpConfig cfg;
  cfg.method = "gdas";
  auto owner = make_mixed_op(ctx, "edge", pointwise_candidates(ctx, kK), cfg);
  MixedOp& op = *owner;
  Tensor a = Tensor::from_vector(ctx, Shape{kK}, {1.0f, 0.0f, -1.0f, 0.5f, 2.0f});
  ops::copy(ctx, a, op.alpha().value);
  const std::vector<float> p = op.probabilities();
  Tensor x = test::random_tensor(ctx, Shape{1, kC, 1, 1}, 3);
  std::vector<int> counts(kK, 0);
  const int draws = 20000;
  for (int d = 0; d < draws; ++d) {
    op.forward(ctx, x, Mode::Eval);
    ++counts[size_t(op.last_on()[0])];
  }
  double chi2 = 0;
  for (int i = 0; i < kK; ++i) {
    const double e = draws * double(p[size_t(i)]);
    chi2 += (counts[size_t(i)] - e) * (counts[size_t(i)] - e) / e;
  }
  std::printf("[ measured ] GDAS sampling: chi-square %.2f over %d draws (4 dof)\n", chi2, draws);
  EXPECT_LT(chi2, 18.47);
}

TEST(MixedOpMemory, BinaryPeakIsAtMostAThirdOfContinuous) {
  auto peak = [](std::string t) {
    Context ctx(Device::cpu(), ContextOptions{3});
    std::vector<std::unique_ptr<Layer>> cands;
    for (int i = 0; i < 8; ++i)
      cands.push_back(std::make_unique<Conv2d>(ctx, "conv" + std::to_string(i), 4, 16, 3,
                                               Conv2dParams::make(1, 1), false));
    auto op_owner = make_mixed_op(ctx, "edge", std::move(cands), MixedOpConfig{t, 1, 0, 0.01f});
    MixedOp& op = *op_owner;
    Tensor x = test::random_tensor(ctx, Shape{64, 4, 16, 16}, 1);
    const size_t base = ctx.allocator().stats().current_bytes;
    ctx.allocator().reset_peak();
    {
      Tensor y = op.forward(ctx, x, Mode::Train);
      Tensor dy = test::random_tensor(ctx, y.shape(), 2);
      Tensor dx = op.backward(ctx, dy);
    }
    return double(ctx.allocator().stats().peak_bytes - base);
  };
  const double binary = peak(std::string("binary")), continuous = peak(std::string("continuous"));
  const double gdas = peak(std::string("gdas"));
  const double ratio = binary / continuous;
  std::printf(
      "[ measured ] K=8 conv3x3 4->16, x (64,4,16,16): peak bytes Binary %.0f, GDAS %.0f, "
      "Continuous %.0f, ratio Binary %.3f, GDAS %.3f\n",
      binary, gdas, continuous, ratio, gdas / continuous);
  EXPECT_LE(ratio, 1.0 / 3.0);
  // GDAS keeps about one candidate: its output, input and gradient, as Binary with k_on = 1.
  EXPECT_LE(gdas / continuous, 1.0 / 3.0);
  EXPECT_LE(gdas, binary * 1.05);
}

// A planted task: targets come from a fixed 5x5 convolution whose kernel is zero except on
// its outer ring, so only the 5x5 candidate can see the signal. Every type must end with
// that candidate's alpha largest.
class PlantedArchitecture : public ::testing::TestWithParam<TypeCase> {};

TEST_P(PlantedArchitecture, FindsTheFiveByFiveConvolution) {
  const TypeCase tc = GetParam();
  Context ctx(Device::cpu(), ContextOptions{123});
  const int64_t c = 2, n = 8, hw = 8;
  std::vector<std::unique_ptr<Layer>> cands;
  cands.push_back(std::make_unique<Conv2d>(ctx, "conv1x1", c, c, 1, Conv2dParams{}, false));
  cands.push_back(
      std::make_unique<Conv2d>(ctx, "conv3x3", c, c, 3, Conv2dParams::make(1, 1), false));
  cands.push_back(
      std::make_unique<Conv2d>(ctx, "conv5x5", c, c, 5, Conv2dParams::make(1, 2), false));
  cands.push_back(std::make_unique<AvgPool2d>("avg_pool", 3, 1, 1));
  cands.push_back(std::make_unique<Identity>("identity"));
  auto net = std::make_unique<Sequential>("net");
  auto& op = static_cast<MixedOp&>(net->add(make_mixed_op(
      ctx, "edge", std::move(cands), MixedOpConfig{tc.type, tc.k_on, tc.k_eval, 0.05f})));
  SearchModel model(ctx, std::move(net));
  // The planted kernel (c, c, 5, 5): random on the outer ring, zero inside.
  std::vector<float> kernel = test::random_vector(size_t(c * c * 25), 9);
  for (int64_t i = 0; i < c * c * 25; ++i) {
    const int64_t r = (i % 25) / 5, s = i % 5;
    if (r > 0 && r < 4 && s > 0 && s < 4) kernel[size_t(i)] = 0.0f;
  }
  Tensor wt = Tensor::from_vector(ctx, Shape{c, c, 5, 5}, kernel);
  SGD weights(ctx, model.operational_parameters(), SgdParams{0.05f, 0.9f, 0.0f, false});
  Adam arch(ctx, model.architecture_parameters(),
            AdamParams{0.05f, 0.5f, 0.999f, 1e-8f, 0.0f, false, 1});
  model.attach_architecture_optimizer(arch);
  for (int step = 0; step < 300; ++step) {
    model.set_search_progress(step / 299.0);  // GDAS: the temperature anneals over the run
    Tensor x = test::random_tensor(ctx, Shape{n, c, hw, hw}, uint32_t(1000 + step));
    Tensor t = Tensor::empty(ctx, Shape{n, c, hw, hw});
    ops::conv2d_fwd(ctx, x, wt, nullptr, t, Conv2dParams::make(1, 2));
    weights.zero_grad(ctx);
    arch.zero_grad(ctx);
    Tensor y = model.forward(ctx, x, Mode::Train);
    // Mean squared error, gradient 2 (y - t) / numel.
    Tensor dy = Tensor::empty(ctx, y.shape());
    ops::add(ctx, y, t, dy);
    ops::axpy(ctx, -2.0f, t, dy);
    ops::scale(ctx, dy, 2.0f / float(y.numel()), dy);
    model.backward(ctx, dy);
    weights.step(ctx);
    arch.step(ctx);
  }
  const std::vector<float> p = op.probabilities();
  std::printf("[ measured ] %s: %s", op.type(), model.architecture_summary().c_str());
  EXPECT_EQ(std::max_element(p.begin(), p.end()) - p.begin(), 2) << model.architecture_summary();
}

INSTANTIATE_TEST_SUITE_P(Types, PlantedArchitecture,
                         ::testing::Values(TypeCase{std::string("continuous"), 1, 0},
                                           TypeCase{std::string("binary"), 1, 0},
                                           TypeCase{std::string("masked"), 1, 3},
                                           TypeCase{std::string("proxyless"), 1, 2},
                                           TypeCase{std::string("moving-average"), 1, 3},
                                           TypeCase{std::string("gdas"), 1, 0}),
                         [](const ::testing::TestParamInfo<TypeCase>& i) {
                           return std::string(mixed_op_type_name(i.param.type));
                         });

using test::throws_with;

TEST(MixedOpBadInput, ConstructionAndFirstCallErrors) {
  Context ctx;
  EXPECT_TRUE(
      throws_with([&] { ContinuousMixedOp op(ctx, "e", {}); }, {"ContinuousMixedOp 'e'", "empty"}));
  EXPECT_TRUE(throws_with([&] { BinaryMixedOp op(ctx, "e", pointwise_candidates(ctx, 3), 4); },
                          {"BinaryMixedOp 'e'", "num_on (k_on) = 4", "3 candidates"}));
  EXPECT_TRUE(
      throws_with([&] { BinaryMaskedMixedOp op(ctx, "e", pointwise_candidates(ctx, 4), 1, 2); },
                  {"BinaryMaskedMixedOp 'e'", "num_eval (k_eval) = 1", "num_on = 2"}));
  EXPECT_TRUE(throws_with(
      [&] { BinaryProxylessNASStyleMixedOp op(ctx, "e", pointwise_candidates(ctx, 4), 1, 1); },
      {"BinaryProxylessNASStyleMixedOp 'e'", "k_eval) = 1", ">= 2"}));
  EXPECT_TRUE(throws_with(
      [&] { BinaryMovingAverageMixedOp op(ctx, "e", pointwise_candidates(ctx, 4), 2, 1, 0.0f); },
      {"BinaryMovingAverageMixedOp 'e'", "learning_rate 0", "(0, 1]"}));
  EXPECT_TRUE(throws_with(
      [&] { BinaryMovingAverageMixedOp op(ctx, "e", pointwise_candidates(ctx, 4), 2, 1, 1.5f); },
      {"learning_rate 1.5"}));
  std::vector<std::unique_ptr<Layer>> mixed;
  mixed.push_back(std::make_unique<Identity>("skip"));
  mixed.push_back(std::make_unique<MaxPool2d>("pool", 2, 2));
  ContinuousMixedOp op(ctx, "edge7", std::move(mixed));
  Tensor x = Tensor::zeros(ctx, Shape{1, 3, 4, 4});
  EXPECT_TRUE(throws_with([&] { op.forward(ctx, x, Mode::Train); },
                          {"ContinuousMixedOp 'edge7'", "candidate 1 ('pool')", "[1, 3, 2, 2]",
                           "'skip'", "[1, 3, 4, 4]"}));
  EXPECT_TRUE(throws_with([] { mixed_op_method("nope"); },
                          {"unknown MixedOp method 'nope'", "continuous"}));
}

// set_ranking takes only permutations of 0 .. K-1 (an index out of range used to crash the
// next forward; a repeated one silently gave y = 2 op_0(x) with num_on = 2).
TEST(MixedOpBadInput, SetRankingRejectsWhatIsNotAPermutation) {
  Context ctx;
  MixedOpConfig mc;
  mc.method = std::string("binary");
  mc.num_on = 2;
  auto op_owner = make_mixed_op(ctx, "m", pointwise_candidates(ctx, 3), mc);
  MixedOp& op = *op_owner;
  auto dev = [&](std::vector<int32_t> v) {
    return Tensor::from_vector_i32(ctx, Shape{int64_t(v.size())}, v);
  };
  EXPECT_TRUE(test::throws_with(
      [&] {
        op.set_ranking({0, 1, 5}, dev({0, 1, 2}));
      },
      {"MixedOp 'm'", "ranking entry 2 is 5", "outside [0, 3)"}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        op.set_ranking({0, -1, 2}, dev({0, 1, 2}));
      },
      {"ranking entry 1 is -1"}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        op.set_ranking({0, 0, 2}, dev({0, 0, 2}));
      },
      {"ranking entry 1 repeats candidate 0", "permutation"}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        op.set_ranking({0, 1}, dev({0, 1}));
      },
      {"a ranking of 2 entries for 3 candidates"}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        op.set_ranking({2, 0, 1}, Tensor::from_vector(ctx, Shape{3}, {2, 0, 1}));
      },
      {"the device ranking is f32[3]", "expected i32[3]"}));
  op.set_ranking({2, 0, 1}, dev({2, 0, 1}));  // a valid one is used by the next forward
  Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 3);
  op.forward(ctx, x, Mode::Eval);
  EXPECT_EQ(op.last_on(), (std::vector<int>{2, 0}));
}

// Deterministic calls follow alpha: after an optimizer step, an architecture load, or a
// direct write followed by set_sampling(Deterministic) (or mark_changed), the next forward
// runs the new top op. (It used to keep the ops derived when the mode was first entered.)
TEST(MixedOpDeterministic, RederivesAfterEveryChangeOfAlpha) {
  Context ctx(Device::cpu(), ContextOptions{4});
  auto net = std::make_unique<Sequential>("net");
  MixedOpConfig mc;
  mc.alpha_group = "shared";
  net->add(make_mixed_op(ctx, "a", pointwise_candidates(ctx, 3), mc));
  net->add(make_mixed_op(ctx, "b", pointwise_candidates(ctx, 3), mc));  // shares a's alpha
  SearchModel model(ctx, std::move(net));
  auto& seq = static_cast<Sequential&>(model.network());
  auto& a = static_cast<MixedOp&>(seq[0]);
  auto& b = static_cast<MixedOp&>(seq[1]);
  Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 5);
  auto weights_of = [](MixedOp& m, int i) {
    return static_cast<Conv2d&>(m.candidate(i)).weight().value.to_vector();
  };
  // The expected output for ops (i in a, j in b), from naive loops.
  auto expected = [&](int i, int j) {
    const std::vector<double> h = pointwise(weights_of(a, i), x.to_vector());
    return pointwise(weights_of(b, j), std::vector<float>(h.begin(), h.end()));
  };
  auto set_alpha = [&](std::vector<float> v) {
    Tensor t = Tensor::from_vector(ctx, Shape{3}, v);
    ops::copy(ctx, t, model.architecture_parameters()[0]->value);
  };
  set_alpha({1.0f, 0.0f, 0.0f});
  model.alphas_changed();
  auto run = [&] { return model.forward(ctx, x, Mode::Eval, Sampling::Deterministic).to_vector(); };
  EXPECT_TRUE(test::all_close(run(), expected(0, 0), 1e-5, 1e-5));

  // An optimizer step that makes op 2 the strongest: the next deterministic forward runs it,
  // in both MixedOps that share the alpha.
  SGD sgd(ctx, model.architecture_parameters(), SgdParams{1.0f});
  Tensor g = Tensor::from_vector(ctx, Shape{3}, {0.0f, 0.0f, -5.0f});
  ops::copy(ctx, g, model.architecture_parameters()[0]->grad);
  sgd.step(ctx);
  EXPECT_TRUE(test::all_close(run(), expected(2, 2), 1e-5, 1e-5)) << "after an optimizer step";
  EXPECT_EQ(a.derived(), (std::vector<int>{2}));

  // A direct write, then set_sampling(Deterministic) as documented.
  set_alpha({0.0f, 3.0f, 0.0f});
  a.set_sampling(Sampling::Deterministic);
  b.set_sampling(Sampling::Deterministic);
  EXPECT_TRUE(test::all_close(run(), expected(1, 1), 1e-5, 1e-5)) << "after set_sampling";

  // An architecture file loaded.
  const std::string path = ::testing::TempDir() + "/rederive_arch.json";
  set_alpha({0.0f, 0.0f, 4.0f});
  model.save_architecture(path);
  set_alpha({9.0f, 0.0f, 0.0f});
  model.alphas_changed();
  EXPECT_TRUE(test::all_close(run(), expected(0, 0), 1e-5, 1e-5));
  model.load_architecture(ctx, path);
  EXPECT_TRUE(test::all_close(run(), expected(2, 2), 1e-5, 1e-5)) << "after load_architecture";
}

TEST(SearchModelTest, SplitsParametersAndSummarises) {
  Context ctx(Device::cpu(), ContextOptions{4});
  auto net = std::make_unique<Sequential>("net");
  net->emplace<Conv2d>(ctx, "stem", kC, kC, 3, Conv2dParams::make(1, 1), false);
  net->emplace<BinaryMixedOp>(ctx, "e0", pointwise_candidates(ctx, kK), 1);
  net->emplace<BinaryMaskedMixedOp>(ctx, "e1", pointwise_candidates(ctx, 3), 2, 1);
  net->emplace<BatchNorm2d>(ctx, "bn", kC);
  SearchModel model(ctx, std::move(net));
  const auto arch = model.architecture_parameters();
  const auto op = model.operational_parameters();
  ASSERT_EQ(arch.size(), 2u);
  for (Parameter* p : arch) EXPECT_EQ(p->name, "alpha");
  EXPECT_EQ(op.size(), 1u + kK + 3u + 2u);
  for (Parameter* p : op) EXPECT_EQ(p->kind, ParamKind::Operational);
  EXPECT_EQ(model.alphas().numel(), kK + 3);
  // Each alpha is a view of the consolidated buffer.
  model.mixed_ops()[1].second->alpha().value.data()[0] = 0.75f;
  EXPECT_EQ(model.alphas().to_vector()[kK], 0.75f);

  const std::string summary = model.architecture_summary();
  EXPECT_NE(summary.find("net.e0 [BinaryMixedOp, k_on=1]"), std::string::npos) << summary;
  EXPECT_NE(summary.find("c4="), std::string::npos);
  EXPECT_NE(model.architecture_json().find("\"net.e1\""), std::string::npos);

  // One launch samples every MixedOp from the consolidated alphas.
  const std::vector<float> all = model.alphas().to_vector();
  const uint64_t offset = ctx.rng_offset();
  Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 3);
  model.forward(ctx, x, Mode::Eval);
  const std::vector<float> a0(all.begin(), all.begin() + kK), a1(all.begin() + kK, all.end());
  EXPECT_EQ(model.mixed_ops()[0].second->last_on()[0],
            expected_ranking(a0, ctx.seed(), offset, 0)[0]);
  const auto r1 = expected_ranking(a1, ctx.seed(), offset, kK);
  EXPECT_EQ(model.mixed_ops()[1].second->last_eval(), std::vector<int>(r1.begin(), r1.begin() + 2));
}

// Through SearchModel every alpha group's softmax is one softmax_many per forward and every
// MixedOp's architecture gradient one arch_grad_many per backward; the numbers are those of the
// MixedOps computing their own (the network run directly) bit for bit, shared alphas included
// (their gradients added in the order the MixedOps ran backward). A forward outside the model
// afterwards computes its own softmax again.
TEST(SearchModelTest, OneSoftmaxPerForwardAndOneArchitectureGradientPerBackward) {
  auto build = [](Context& ctx) {
    auto net = std::make_unique<Sequential>("net");
    net->emplace<Conv2d>(ctx, "stem", kC, kC, 3, Conv2dParams::make(1, 1), false);
    for (const char* group : {"shared", "", "shared", "shared"}) {
      MixedOpConfig mc;
      mc.alpha_group = group;
      net->emplace<ContinuousMixedOp>(ctx, std::string("e") + std::to_string(net->size()),
                                      pointwise_candidates(ctx, 3), mc);
    }
    auto model = std::make_unique<SearchModel>(ctx, std::move(net));
    for (Parameter* a : model->alpha_parameters()) init_normal(ctx, a->value, 0.0f, 0.7f);
    return model;
  };
  struct Run {
    std::vector<float> y, dx, grads;
    std::map<std::string, int64_t> calls;
  };
  auto run = [&](bool through_model) {
    Context ctx(Device::cpu(), ContextOptions{12});
    auto model = build(ctx);
    Tensor x = test::random_tensor(ctx, Shape{kN, kC, kH, kW}, 3);
    Run r;
    // Gradients that do not start at zero: the order in which the MixedOps sharing an alpha add
    // to it shows in the bits.
    for (Parameter* a : model->alpha_parameters()) ops::fill(ctx, a->grad, 0.1f);
    {
      OpProfiler prof(ctx);
      for (int pass = 0; pass < 2;
           ++pass) {  // the second adds to non-zero gradients: the order shows
        Tensor y = through_model ? model->forward(ctx, x, Mode::Train)
                                 : model->network().forward(ctx, x, Mode::Train);
        Tensor dy = test::random_tensor(ctx, y.shape(), 4 + uint32_t(pass));
        Tensor dx = through_model ? model->backward(ctx, dy) : model->network().backward(ctx, dy);
        r.y = y.to_vector();
        r.dx = dx.to_vector();
      }
      for (const auto& row : prof.report_by_op()) r.calls[row.op] = row.calls;
    }
    for (Parameter* a : model->alpha_parameters())
      for (float v : a->grad.to_vector()) r.grads.push_back(v);
    if (through_model) {  // then the network directly: its own softmax per MixedOp
      OpProfiler again(ctx);
      model->network().forward(ctx, x, Mode::Eval);
      int64_t softmax = 0;
      for (const auto& row : again.report_by_op()) softmax += row.op == "softmax" ? row.calls : 0;
      EXPECT_EQ(softmax, 4);
    }
    return r;
  };
  const Run batched = run(true), own = run(false);
  EXPECT_EQ(batched.y, own.y);
  EXPECT_EQ(batched.dx, own.dx);
  EXPECT_EQ(batched.grads, own.grads);
  ASSERT_EQ(batched.grads.size(), 6u);  // two groups of 3
  auto calls = [](const Run& r, const char* op) {
    auto it = r.calls.find(op);
    return it == r.calls.end() ? int64_t(0) : it->second;
  };
  EXPECT_EQ(calls(batched, "softmax_many"), 2);
  EXPECT_EQ(calls(batched, "arch_grad_many"), 2);
  EXPECT_EQ(calls(batched, "softmax") + calls(batched, "arch_grad"), 0);
  EXPECT_EQ(calls(own, "softmax"), 8);
  EXPECT_EQ(calls(own, "arch_grad"), 8);
}

TEST(SearchModelTest, SavesAndLoadsAlphas) {
  Context ctx(Device::cpu(), ContextOptions{4});
  auto make = [&] {
    auto net = std::make_unique<Sequential>("net");
    net->emplace<ContinuousMixedOp>(ctx, "e0", pointwise_candidates(ctx, kK));
    return std::make_unique<SearchModel>(ctx, std::move(net));
  };
  auto a = make();
  init_normal(ctx, a->mixed_ops()[0].second->alpha().value, 0.0f, 1.0f);
  const std::string path = ::testing::TempDir() + "/alphas.json";
  a->save_architecture(path);
  auto b = make();
  b->load_architecture(ctx, path);
  EXPECT_EQ(b->alphas().to_vector(), a->alphas().to_vector());
  auto other = std::make_unique<Sequential>("net");
  other->emplace<ContinuousMixedOp>(ctx, "e9", pointwise_candidates(ctx, 2));
  SearchModel c(ctx, std::move(other));
  EXPECT_TRUE(
      throws_with([&] { c.load_architecture(ctx, path); }, {"no alpha for MixedOp 'net.e9'"}));
  EXPECT_TRUE(throws_with([&] { c.load_architecture(ctx, path + ".missing"); }, {"cannot open"}));
}

TEST(Optimizers, AdamAndAdamWByHand) {
  Context ctx;
  for (bool decoupled : {false, true}) {
    Parameter p;
    p.name = "w";
    p.value = Tensor::from_vector(ctx, Shape{2}, {1.0f, -1.0f});
    p.grad = Tensor::from_vector(ctx, Shape{2}, {0.5f, 2.0f});
    AdamParams h{0.1f, 0.9f, 0.99f, 1e-8f, 0.01f, decoupled, 1};
    Adam opt(ctx, {&p}, h);
    std::vector<double> w{1.0, -1.0}, m{0, 0}, v{0, 0};
    const double g[2] = {0.5, 2.0};
    for (int t = 1; t <= 3; ++t) {
      opt.step(ctx);
      for (int i = 0; i < 2; ++i) {
        double d = g[i];
        if (decoupled)
          w[i] *= 1 - 0.1 * 0.01;
        else
          d += 0.01 * w[i];
        m[i] = 0.9 * m[i] + 0.1 * d;
        v[i] = 0.99 * v[i] + 0.01 * d * d;
        w[i] -= 0.1 * (m[i] / (1 - std::pow(0.9, t))) /
                (std::sqrt(v[i] / (1 - std::pow(0.99, t))) + 1e-8);
      }
      EXPECT_TRUE(test::all_close(p.value.to_vector(), w, 1e-5, 1e-6))
          << "step " << t << (decoupled ? " AdamW" : " Adam");
    }
    EXPECT_EQ(opt.step_count(), 3);
  }
}

TEST(Optimizers, GlobalNormClippingScalesEveryGradient) {
  Context ctx;
  Parameter a, b;
  a.value = Tensor::zeros(ctx, Shape{2});
  a.grad = Tensor::from_vector(ctx, Shape{2}, {3.0f, 0.0f});
  b.value = Tensor::zeros(ctx, Shape{1});
  b.grad = Tensor::from_vector(ctx, Shape{1}, {4.0f});
  SGD opt(ctx, {&a, &b}, SgdParams{1.0f, 0.0f, 0.0f, false});
  opt.set_grad_clip(1.0f);  // norm 5 -> scaled by 1/5
  opt.step(ctx);
  EXPECT_NEAR(opt.last_grad_norm().item(), 5.0f, 1e-6);
  EXPECT_TRUE(test::all_close(a.value.to_vector(), {-0.6, 0.0}, 1e-5, 1e-6));
  EXPECT_TRUE(test::all_close(b.value.to_vector(), {-0.8}, 1e-5, 1e-6));
  opt.set_grad_clip(10.0f);  // below the limit: unchanged gradients
  opt.step(ctx);
  EXPECT_TRUE(test::all_close(a.value.to_vector(), {-3.6, 0.0}, 1e-5, 1e-6));
}

// The group's gradients move into one buffer, values kept, so zero_grad is one fill; a
// gradient someone else holds stays (and is still zeroed); one replaced later is followed.
TEST(Optimizers, GradientsMoveIntoOneBufferAndZeroInOneFill) {
  Context ctx;
  Parameter a, b, c;
  a.value = Tensor::zeros(ctx, Shape{2});
  a.grad = Tensor::from_vector(ctx, Shape{2}, {1.0f, 2.0f});
  b.value = Tensor::zeros(ctx, Shape{3, 1});
  b.grad = Tensor::from_vector(ctx, Shape{3, 1}, {3.0f, 4.0f, 5.0f});
  c.value = Tensor::zeros(ctx, Shape{1});
  c.grad = Tensor::from_vector(ctx, Shape{1}, {6.0f});
  const Tensor held = c.grad.share();  // someone else's handle: c's gradient must not move
  SGD opt(ctx, {&a, &b, &c}, SgdParams{1.0f, 0.0f, 0.0f, false});
  EXPECT_EQ(a.grad.to_vector(), (std::vector<float>{1.0f, 2.0f}));
  EXPECT_EQ(b.grad.to_vector(), (std::vector<float>{3.0f, 4.0f, 5.0f}));
  EXPECT_EQ(b.grad.shape(), (Shape{3, 1}));
  EXPECT_EQ(static_cast<char*>(b.grad.raw()), static_cast<char*>(a.grad.raw()) + 2 * sizeof(float));
  EXPECT_EQ(c.grad.raw(), held.raw());
  {
    OpProfiler prof(ctx);
    opt.zero_grad(ctx);
    std::map<std::string, int64_t> calls;
    for (const auto& row : prof.report_by_op()) calls[row.op] = row.calls;
    EXPECT_EQ(calls.at("fill"), 2);  // the buffer of a and b, then c
  }
  for (const Tensor* t : std::vector<const Tensor*>{&a.grad, &b.grad, &held})
    for (float v : t->to_vector()) EXPECT_EQ(v, 0.0f);
  // A gradient replaced after construction is followed: stepped on and zeroed where it is.
  a.grad = Tensor::from_vector(ctx, Shape{2}, {0.5f, -0.5f});
  opt.step(ctx);
  EXPECT_EQ(a.value.to_vector(), (std::vector<float>{-0.5f, 0.5f}));
  opt.zero_grad(ctx);
  EXPECT_EQ(a.grad.to_vector(), (std::vector<float>{0.0f, 0.0f}));
  // A parameter twice in one group would be stepped twice: refused by name.
  a.name = "a";
  try {
    SGD twice(ctx, {&a, &b, &a}, SgdParams{1.0f, 0.0f, 0.0f, false});
    ADD_FAILURE() << "a repeated parameter was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'a' appears twice"), std::string::npos)
        << e.what();
  }
}

TEST(Optimizers, CosineScheduleWithWarmup) {
  CosineSchedule s(0.025f, 0.001f, 100);
  EXPECT_FLOAT_EQ(s.lr(0), 0.025f);
  EXPECT_NEAR(s.lr(50), 0.013f, 1e-6);
  EXPECT_FLOAT_EQ(s.lr(100), 0.001f);
  CosineSchedule w(1.0f, 0.0f, 110, 10);
  EXPECT_FLOAT_EQ(w.lr(0), 0.1f);
  EXPECT_FLOAT_EQ(w.lr(9), 1.0f);
  EXPECT_FLOAT_EQ(w.lr(10), 1.0f);
  EXPECT_NEAR(w.lr(60), 0.5f, 1e-6);
  EXPECT_THROW(CosineSchedule(1.0f, 0.0f, 10, 10), Error);
}

TEST(Optimizers, HooksRunAroundTheUpdate) {
  Context ctx;
  Parameter p;
  p.value = Tensor::from_vector(ctx, Shape{1}, {1.0f});
  p.grad = Tensor::from_vector(ctx, Shape{1}, {1.0f});
  struct Recorder : StepHook {
    Parameter* p;
    std::vector<float> seen;
    void before_step(Context&) override { seen.push_back(p->value.item()); }
    void after_step(Context&) override { seen.push_back(p->value.item()); }
  } rec;
  rec.p = &p;
  SGD opt(ctx, {&p}, SgdParams{0.5f});
  opt.add_hook(&rec);
  opt.step(ctx);
  EXPECT_EQ(rec.seen, (std::vector<float>{1.0f, 0.5f}));
}
}  // namespace
}  // namespace cudarts
