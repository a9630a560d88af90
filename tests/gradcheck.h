// Finite-difference gradient checker for layers on the CPU backend.
// Loss L = sum(y * r) with a fixed random r, accumulated in double; the layer runs in float.
// Central differences use the actually representable perturbation and three step sizes; a
// coordinate where they disagree sits near a kink (ReLU at 0, max-pool ties) and is skipped.
// Tolerance scales with magnitude: |a - n| <= atol + rtol * max(|a|, |n|).
#pragma once
#include "test_util.h"

namespace cudarts::test {

struct GradCheckOptions {
  double eps = 1e-2;
  double rtol = 2e-2;
  double atol = 2e-3;
  int max_checks = 60;  // per tensor (random subset when larger)
  double max_kink_fraction = 0.2;
  Mode probe_mode = Mode::Probe;  // how perturbed points are evaluated (batch statistics)
  // Fraction of coordinates that must match. 1 for components; whole networks are dense with
  // kinks at every usable step size, so their checks accept a minority of outliers.
  double min_match_fraction = 1.0;
};

// Evaluates L for the current values (no state kept).
using LossFn = std::function<double()>;

inline ::testing::AssertionResult check_tensor_gradient(const std::string& what, float* values,
                                                        int64_t n,
                                                        const std::vector<float>& analytic,
                                                        const LossFn& loss,
                                                        const GradCheckOptions& o) {
  std::mt19937 gen(1234);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  std::shuffle(idx.begin(), idx.end(), gen);
  if (int64_t(idx.size()) > o.max_checks) idx.resize(size_t(o.max_checks));
  int kinks = 0, checked = 0, mismatched = 0;
  std::string first_mismatch;
  // Central differences at three step sizes. Away from kinks they agree with each other; a
  // kink within a step (on either side) makes them disagree, and the point is skipped. A
  // gradient bug shows as differences that agree with each other but not with the analytic
  // value.
  auto central = [&](int64_t i, double eps) {
    const float orig = values[i];
    const float up = orig + float(eps), down = orig - float(eps);
    values[i] = up;
    const double lp = loss();
    values[i] = down;
    const double lm = loss();
    values[i] = orig;
    return (lp - lm) / (double(up) - double(down));
  };
  for (int64_t i : idx) {
    const double a = analytic[size_t(i)];
    double fd[3];
    bool match = false;
    for (int k = 0; k < 3 && !match; ++k) {
      fd[k] = central(i, o.eps / std::pow(3.0, k));
      const double tol = o.atol + o.rtol * std::max(std::abs(a), std::abs(fd[k]));
      match = std::abs(a - fd[k]) <= tol;
      if (match) ++checked;
      if (!match && k == 2) {
        const double lo = std::min({fd[0], fd[1], fd[2]}), hi = std::max({fd[0], fd[1], fd[2]});
        // A kink exactly at the point gives the same (averaged) central difference at every
        // step; the one-sided differences still tell it apart.
        const float orig = values[i];
        values[i] = orig + float(o.eps / 9);
        const double lp = loss();
        values[i] = orig - float(o.eps / 9);
        const double lm = loss();
        values[i] = orig;
        const double l0 = loss();
        const double one_sided_gap = std::abs((lp - l0) - (l0 - lm)) / (o.eps / 9);
        if (hi - lo > tol || one_sided_gap > 2 * tol) {
          ++kinks;
        } else {
          ++mismatched;
          if (first_mismatch.empty())
            first_mismatch = detail::cat(what, "[", i, "]: analytic ", a, " vs finite differences ",
                                         fd[0], ", ", fd[1], ", ", fd[2], " (steps ", o.eps, ", ",
                                         o.eps / 3, ", ", o.eps / 9, ")");
        }
      }
    }
  }
  if (mismatched > (1.0 - o.min_match_fraction) * double(idx.size()))
    return ::testing::AssertionFailure() << mismatched << " of " << idx.size()
                                         << " coordinates mismatch; first: " << first_mismatch;
  if (kinks > o.max_kink_fraction * double(idx.size()) + 1)
    return ::testing::AssertionFailure() << what << ": " << kinks << " of " << idx.size()
                                         << " coordinates sit on kinks; choose other inputs";
  if (checked == 0 && n > 0) return ::testing::AssertionFailure() << what << ": nothing checked";
  return ::testing::AssertionSuccess();
}

// Checks dL/dx and dL/dparam of `layer` at input x (CPU context).
inline void check_layer(Context& ctx, Layer& layer, Tensor& x, const GradCheckOptions& o = {}) {
  ASSERT_TRUE(ctx.device().is_cpu());
  const Shape ys = layer.output_shape(x.shape());
  const std::vector<float> r = random_vector(size_t(ys.numel()), 77);
  Tensor rt = Tensor::from_vector(ctx, ys, r);
  auto loss = [&]() {
    Tensor y = layer.forward(ctx, x, o.probe_mode);
    const float* p = y.data();
    double s = 0.0;
    for (int64_t i = 0; i < y.numel(); ++i) s += double(p[i]) * r[size_t(i)];
    return s;
  };
  layer.zero_grad(ctx);
  Tensor y = layer.forward(ctx, x, Mode::Train);
  Tensor dx = layer.backward(ctx, rt);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_TRUE(
      check_tensor_gradient(layer.name() + " input", x.data(), x.numel(), dx.to_vector(), loss, o));
  for (auto& [name, p] : layer.named_parameters())
    EXPECT_TRUE(check_tensor_gradient(name, p->value.data(), p->value.numel(), p->grad.to_vector(),
                                      loss, o));
}

}  // namespace cudarts::test
