// The dominant eigenvalue of the Hessian of the validation loss with respect to the
// architecture parameters (R-DARTS, Zela et al., ICLR 2020: it grows before a search
// collapses): power iteration on finite-difference Hessian-vector products.
// docs/DESIGN.md section 9.
#include <cmath>
#include <random>

#include "buffer_snapshot.h"
#include "cudarts/darts.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts::darts {

namespace {
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

double dominant_eigenvalue(const GradientFn& gradient, const std::vector<double>& at,
                           const HessianOptions& o) {
  CUDARTS_CHECK(o.iterations >= 1 && std::isfinite(o.epsilon) && o.epsilon > 0.0 &&
                    std::isfinite(o.tolerance) && o.tolerance >= 0.0,
                "dominant_eigenvalue: iterations ", o.iterations, " must be >= 1, epsilon ",
                o.epsilon, " > 0 and tolerance ", o.tolerance, " >= 0");
  CUDARTS_CHECK(!at.empty(), "dominant_eigenvalue: no parameters");
  const size_t n = at.size();
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = normal(rng);
  double norm = std::sqrt(dot(v, v));
  for (double& x : v) x /= norm;
  // Hv = (g(at + eps v) - g(at - eps v)) / (2 eps), exact for quadratics.
  auto hvp = [&](const std::vector<double>& dir) {
    std::vector<double> plus(at), minus(at);
    for (size_t i = 0; i < n; ++i) {
      plus[i] += o.epsilon * dir[i];
      minus[i] -= o.epsilon * dir[i];
    }
    const std::vector<double> gp = gradient(plus), gm = gradient(minus);
    CUDARTS_CHECK(gp.size() == n && gm.size() == n, "dominant_eigenvalue: the gradient has ",
                  gp.size(), " entries for ", n, " parameters");
    std::vector<double> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = (gp[i] - gm[i]) / (2.0 * o.epsilon);
    return h;
  };
  double lambda = 0.0;
  for (int t = 0; t < o.iterations; ++t) {
    const std::vector<double> h = hvp(v);
    const double next = dot(v, h);  // Rayleigh quotient of the unit vector v
    norm = std::sqrt(dot(h, h));
    if (!std::isfinite(next) || !std::isfinite(norm))
      throw DivergenceError(
          detail::cat("dominant_eigenvalue: a Hessian-vector product is not "
                      "finite (iteration ",
                      t + 1, ")"));
    const bool converged = t > 0 && std::abs(next - lambda) <= o.tolerance * std::abs(next);
    lambda = next;
    if (norm == 0.0 || converged) break;
    for (size_t i = 0; i < n; ++i) v[i] = h[i] / norm;
  }
  return lambda;
}

double alpha_hessian_eigenvalue(Context& ctx, SearchModel& model,
                                const std::vector<std::pair<Tensor, Tensor>>& batches,
                                const HessianOptions& o) {
  CUDARTS_CHECK(!batches.empty(), "alpha_hessian_eigenvalue: no validation batches");
  for (auto& [name, m] : model.mixed_ops())
    CUDARTS_CONFIG_CHECK(m->second_order(), "alpha_hessian_eigenvalue: needs MixedOps that run ",
                         "the same ops in every pass (continuous), not ", m->type(), " ('", name,
                         "'): the loss of a sampled op is not a function of alpha");
  const std::vector<Parameter*> alphas = model.alpha_parameters();
  // What the passes below change, restored afterwards: the alphas (exactly, from a copy), the
  // BatchNorm running statistics (Train mode updates them), the gradient setting.
  std::vector<Tensor> saved_alphas;
  for (Parameter* a : alphas) {
    saved_alphas.push_back(Tensor::empty(ctx, a->value.shape()));
    ops::copy(ctx, a->value, saved_alphas.back());
  }
  BufferSnapshot buffers(ctx, model.network());
  const Gradients before = model.gradients();
  std::vector<double> at;
  for (Parameter* a : alphas)
    for (float x : a->value.to_vector()) at.push_back(x);

  auto gradient = [&](const std::vector<double>& point) {
    size_t k = 0;
    for (Parameter* a : alphas) {
      std::vector<float> v(size_t(a->value.numel()));
      for (float& x : v) x = float(point[k++]);
      Tensor t = Tensor::from_vector(ctx, a->value.shape(), v);
      ops::copy(ctx, t, a->value);
      ops::fill(ctx, a->grad, 0.0f);
    }
    model.alphas_changed();
    model.set_gradients(Gradients::Architecture);
    for (const auto& [x, y] : batches) {
      Tensor logits = model.forward(ctx, x, Mode::Train);
      Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
      Tensor dlogits = Tensor::empty(ctx, logits.shape());
      ops::softmax_xent(ctx, logits, y, loss, dlogits, hits);
      ops::scale(ctx, dlogits, 1.0f / float(batches.size()), dlogits);  // the mean over batches
      model.backward(ctx, dlogits);
    }
    std::vector<double> g;
    for (Parameter* a : alphas)
      for (float x : a->grad.to_vector()) g.push_back(x);
    return g;
  };

  double lambda = 0.0;
  auto restore = [&] {
    for (size_t i = 0; i < alphas.size(); ++i) {
      ops::copy(ctx, saved_alphas[i], alphas[i]->value);
      ops::fill(ctx, alphas[i]->grad, 0.0f);
    }
    for (auto& [name, p] : model.other_architecture_parameters()) ops::fill(ctx, p->grad, 0.0f);
    model.alphas_changed();
    buffers.restore(ctx);
    model.set_gradients(before);
  };
  try {
    lambda = dominant_eigenvalue(gradient, at, o);
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return lambda;
}

}  // namespace cudarts::darts
