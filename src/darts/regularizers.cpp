// Anti-collapse regularisers of the search (docs/DESIGN.md section 9): DARTS-'s auxiliary
// skip connection, beta-DARTS's beta-decay regularisation of the architecture logits, and
// their schedules; the collapse monitors logged per epoch.
#include <cmath>

#include "cudarts/darts.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts::darts {

// ---------------------------------------------------------------- AuxiliarySkip
AuxiliarySkip::AuxiliarySkip(Context& ctx, std::string name, std::unique_ptr<Layer> inner,
                             int64_t channels, int stride)
    : Layer(std::move(name)), inner_(std::move(inner)) {
  CUDARTS_CHECK(inner_ != nullptr, label(), ": null inner layer");
  CUDARTS_CHECK(stride == 1 || stride == 2, label(), ": stride ", stride, " must be 1 or 2");
  // Stride 2: the reduction's skip connection (FactorizedReduce without affine BatchNorm).
  if (stride == 2)
    reduce_ = std::make_unique<FactorizedReduce>(ctx, "aux", channels, channels, false);
}

std::vector<Layer*> AuxiliarySkip::children() const {
  std::vector<Layer*> out{inner_.get()};
  if (reduce_) out.push_back(reduce_.get());
  return out;
}

void AuxiliarySkip::set_weight(float w) {
  CUDARTS_CHECK(std::isfinite(w) && w >= 0.0f, label(), ": weight ", w, " must be finite and >= 0");
  weight_ = w;
}

Shape AuxiliarySkip::output_shape(const Shape& x) const {
  const Shape y = inner_->output_shape(x);
  const Shape s = reduce_ ? reduce_->output_shape(x) : x;
  CUDARTS_CHECK(y == s, label(), ": the inner layer gives ", y, " but the skip connection ", s);
  return y;
}

Tensor AuxiliarySkip::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  Tensor out = inner_->forward(ctx, x, mode);
  used_weight_ = weight_;
  if (used_weight_ == 0.0f) return out;  // decayed away: the edge is its MixedOp alone
  Tensor skip = reduce_ ? reduce_->forward(ctx, x, mode) : x.share();
  Tensor y = Tensor::empty(ctx, out.shape());
  ops::copy(ctx, out, y);
  ops::axpy(ctx, used_weight_, skip, y);
  return y;
}

Tensor AuxiliarySkip::backward_impl(Context& ctx, const Tensor& dy) {
  Tensor dinner = inner_->backward(ctx, dy);
  if (used_weight_ == 0.0f) return dinner;
  // A new tensor: the inner layer's dx may share storage with dy or with its own state.
  Tensor dx = Tensor::empty(ctx, dinner.shape());
  if (!reduce_) {
    ops::copy(ctx, dinner, dx);
    ops::axpy(ctx, used_weight_, dy, dx);
    return dx;
  }
  Tensor ds = Tensor::empty(ctx, dy.shape());
  ops::scale(ctx, dy, used_weight_, ds);
  Tensor dskip = reduce_->backward(ctx, ds);
  ops::add(ctx, dinner, dskip, dx);
  return dx;
}

// ---------------------------------------------------------------- schedules
float auxiliary_skip_weight(const RegularizerOptions& r, int epoch, int epochs) {
  if (r.auxiliary_skip == 0.0f) return 0.0f;
  const double t = epochs > 0 ? double(epoch) / double(epochs) : 1.0;
  const double f = r.auxiliary_skip_decay == "cosine" ? 0.5 * (1.0 + std::cos(M_PI * t)) : 1.0 - t;
  return float(r.auxiliary_skip * std::max(0.0, f));
}

float beta_decay_coefficient(const RegularizerOptions& r, int epoch, int epochs) {
  return epochs > 0 ? float(double(r.beta_decay) * double(epoch) / double(epochs)) : 0.0f;
}

void check_regularizers(const RegularizerOptions& r, const char* program) {
  CUDARTS_CONFIG_CHECK(std::isfinite(r.beta_decay) && r.beta_decay >= 0.0f, program,
                       ": beta_decay ", r.beta_decay, " must be finite and >= 0");
  CUDARTS_CONFIG_CHECK(std::isfinite(r.auxiliary_skip) && r.auxiliary_skip >= 0.0f, program,
                       ": auxiliary_skip ", r.auxiliary_skip, " must be finite and >= 0");
  CUDARTS_CONFIG_CHECK(r.auxiliary_skip_decay == "linear" || r.auxiliary_skip_decay == "cosine",
                       program, ": auxiliary_skip_decay '", r.auxiliary_skip_decay,
                       "', expected linear or cosine");
  CUDARTS_CONFIG_CHECK(r.max_skips >= -1, program, ": max_skips ", r.max_skips,
                       " must be >= 0 (or -1: no cap)");
}

// ---------------------------------------------------------------- beta-decay
void add_beta_decay_gradient(Context& ctx, const std::vector<Parameter*>& alphas,
                             float coefficient) {
  if (coefficient == 0.0f || alphas.empty()) return;
  // L = coefficient * mean_e logsumexp(alpha_e): dL/dalpha_e = coefficient / E * softmax.
  const float c = coefficient / float(alphas.size());
  for (Parameter* a : alphas) {
    if (!a->requires_grad) continue;
    Tensor p = Tensor::empty(ctx, a->value.shape());
    ops::softmax(ctx, a->value, p);
    ops::axpy(ctx, c, p, a->grad);
  }
}

double beta_decay_value(const std::vector<std::vector<float>>& alphas) {
  if (alphas.empty()) return 0.0;
  double sum = 0.0;
  for (const auto& a : alphas) {
    double m = -INFINITY;
    for (float v : a) m = std::max(m, double(v));
    double s = 0.0;
    for (float v : a) s += std::exp(double(v) - m);
    sum += m + std::log(s);
  }
  return sum / double(alphas.size());
}

// ---------------------------------------------------------------- monitors
double parameter_free_share(const std::vector<std::vector<float>>& probabilities) {
  return parameter_free_share(probabilities, primitives());
}

double parameter_free_share(const std::vector<std::vector<float>>& probabilities,
                            const std::vector<std::string>& prims) {
  if (probabilities.empty()) return 0.0;
  double s = 0.0;
  for (const auto& e : probabilities)
    for (size_t i = 0; i < e.size() && i < prims.size(); ++i)
      if (is_parameter_free(prims[i])) s += e[i];
  return s / double(probabilities.size());
}

bool is_parameter_free(const std::string& primitive) {
  return primitive == "none" || primitive == "max_pool_3x3" || primitive == "avg_pool_3x3" ||
         primitive == "skip_connect";
}

int count_skips(const std::vector<std::pair<std::string, int>>& genes) {
  int n = 0;
  for (const auto& g : genes) n += g.first == "skip_connect";
  return n;
}

}  // namespace cudarts::darts
