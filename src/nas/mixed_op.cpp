// MixedOp: the machinery every search method shares (candidates, alpha, the deterministic
// derived-architecture pass, rankings, the helpers the methods use) and the registry of
// methods. The methods themselves live in src/nas/methods/, one file each.
#include "cudarts/mixed_op.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "cudarts/error.h"
#include "cudarts/ops.h"
#include "grad_sum.h"

namespace cudarts {

MixedOp::MixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> candidates,
                 MixedOpConfig config, const char* type_name)
    : Layer(std::move(name)),
      config_(std::move(config)),
      candidates_(std::move(candidates)),
      type_name_(type_name) {
  const int k = int(candidates_.size());
  CUDARTS_CHECK(k >= 1, label(), ": the candidate list is empty");
  std::set<std::string> names;
  for (int i = 0; i < k; ++i) {
    CUDARTS_CHECK(candidates_[size_t(i)] != nullptr, label(), ": candidate ", i, " is null");
    CUDARTS_CHECK(names.insert(candidates_[size_t(i)]->name()).second, label(), ": candidate ", i,
                  " repeats the name '", candidates_[size_t(i)]->name(), "'");
  }
  CUDARTS_CHECK(config_.num_on >= 1 && config_.num_on <= k, label(),
                ": num_on (k_on) = ", config_.num_on, " must be in [1, ", k, "] for ", k,
                " candidates");
  alpha_ = &add_parameter(ctx, "alpha", Shape{k}, ParamKind::Architecture);
  init_normal(ctx, alpha_->value, 0.0f, 1e-3f);
}

MixedOp::~MixedOp() = default;

std::vector<Layer*> MixedOp::children() const {
  std::vector<Layer*> out;
  for (auto& c : candidates_) out.push_back(c.get());
  return out;
}

Shape MixedOp::output_shape(const Shape& x) const {
  const Shape first = candidates_[0]->output_shape(x);
  for (size_t i = 1; i < candidates_.size(); ++i) {
    const Shape s = candidates_[i]->output_shape(x);
    CUDARTS_CHECK(s == first, label(), ": candidate ", i, " ('", candidates_[i]->name(),
                  "') gives shape ", s, " but candidate 0 ('", candidates_[0]->name(), "') gives ",
                  first, " for input ", x);
  }
  return first;
}

std::vector<float> MixedOp::probabilities() const {
  const std::vector<float> a = alpha_->value.to_vector();
  const float mx = *std::max_element(a.begin(), a.end());
  double s = 0.0;
  for (float v : a) s += std::exp(double(v) - mx);
  std::vector<float> p(a.size());
  for (size_t i = 0; i < a.size(); ++i) p[i] = float(std::exp(double(a[i]) - mx) / s);
  return p;
}

std::vector<int> MixedOp::derived() const {
  const std::vector<float> a = alpha_->value.to_vector();
  std::vector<int> idx(a.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int i, int j) { return a[size_t(i)] > a[size_t(j)]; });
  idx.resize(size_t(config_.num_on));
  return idx;
}

void MixedOp::set_sampling(Sampling s) {
  if (s != sampling_ || s == Sampling::Deterministic) derived_cache_.clear();
  sampling_ = s;
}

void MixedOp::set_state(const std::string& key, Tensor) {
  CUDARTS_FAIL(label(), ": no state '", key, "' (a ", type(), " keeps none)");
}

void MixedOp::set_ranking(std::vector<int> host, Tensor device, GumbelDraw draw) {
  const int k = num_candidates();
  CUDARTS_CHECK(int(host.size()) == k, label(), ": a ranking of ", host.size(), " entries for ", k,
                " candidates");
  std::vector<bool> seen(size_t(k), false);
  for (size_t j = 0; j < host.size(); ++j) {
    CUDARTS_CHECK(host[j] >= 0 && host[j] < k, label(), ": ranking entry ", j, " is ", host[j],
                  ", outside [0, ", k, ")");
    CUDARTS_CHECK(!seen[size_t(host[j])], label(), ": ranking entry ", j, " repeats candidate ",
                  host[j], "; a ranking is a permutation of 0 .. ", k - 1);
    seen[size_t(host[j])] = true;
  }
  CUDARTS_CHECK(device.defined() && device.dtype() == DType::I32 && device.numel() == k &&
                    device.device() == alpha_->value.device(),
                label(), ": the device ranking is ", device.describe(), ", expected i32[", k,
                "] on ", alpha_->value.device().str());
  ranking_host_ = std::move(host);
  ranking_dev_ = std::move(device);
  draw_ = draw;
  ranking_ready_ = true;
}

void ArchGradBatch::add(const Tensor& alpha, const Tensor& g, Tensor& dalpha) {
  alphas_.push_back(alpha.share());
  gs_.push_back(g.share());
  dalphas_.push_back(&dalpha);
}

void ArchGradBatch::flush(Context& ctx) {
  if (!empty()) {
    std::vector<const Tensor*> a, g;
    for (size_t i = 0; i < alphas_.size(); ++i) {
      a.push_back(&alphas_[i]);
      g.push_back(&gs_[i]);
    }
    ops::arch_grad_many(ctx, a, g, dalphas_);
  }
  clear();
}

void ArchGradBatch::clear() {
  alphas_.clear();
  gs_.clear();
  dalphas_.clear();
}

void MixedOp::set_pass_probabilities(Tensor probs) {
  CUDARTS_CHECK(!probs.defined() || probs.shape() == alpha_->value.shape(), label(),
                ": pass probabilities of shape ", probs.shape(), " for an alpha of shape ",
                alpha_->value.shape());
  pass_probs_ = std::move(probs);
}

Tensor MixedOp::take_probabilities(Context& ctx) {
  if (pass_probs_.defined()) return std::move(pass_probs_);
  Tensor probs = Tensor::empty(ctx, alpha_->value.shape());
  ops::softmax(ctx, alpha_->value, probs);
  return probs;
}

void MixedOp::add_arch_grad(Context& ctx, const Tensor& g) {
  if (arch_grad_batch_)
    arch_grad_batch_->add(alpha_->value, g, alpha_->grad);
  else
    ops::arch_grad(ctx, alpha_->value, g, nullptr, 0, alpha_->grad);
}

void MixedOp::take_ranking(Context& ctx) {
  if (!ranking_ready_) {
    const int k = num_candidates();
    Tensor offsets = Tensor::from_vector_i32(ctx, Shape{2}, {0, k});
    Tensor ranking = Tensor::empty(ctx, Shape{k}, DType::I32);
    const uint64_t offset = ctx.reserve_rng(uint64_t(k));
    ops::gumbel_rank(ctx, alpha_->value, offsets, ctx.seed(), offset, ranking);
    const std::vector<int32_t> host = ranking.to_vector_i32();
    set_ranking(std::vector<int>(host.begin(), host.end()), std::move(ranking),
                GumbelDraw{ctx.seed(), offset, 0});
  }
  ranking_ready_ = false;
}

Tensor MixedOp::forward_sum(Context& ctx, const Tensor& x, Mode mode,
                            const std::vector<int>& ops_on, bool keep) {
  outputs_.clear();
  Tensor y;
  for (size_t j = 0; j < ops_on.size(); ++j) {
    Tensor o = candidates_[size_t(ops_on[j])]->forward(ctx, x, mode);
    if (j == 0) {
      y = o.share();
    } else if (j == 1) {
      Tensor s = Tensor::empty(ctx, o.shape());
      ops::add(ctx, y, o, s);
      y = std::move(s);
    } else {
      ops::axpy(ctx, 1.0f, o, y);
    }
    if (keep) outputs_.push_back(std::move(o));
  }
  return y;
}

Tensor MixedOp::backward_active(Context& ctx, const Tensor& dy) {
  GradSum dx;
  for (int i : active_) dx.add(ctx, candidates_[size_t(i)]->backward(ctx, dy));
  return dx.take();
}

Tensor MixedOp::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  const bool train = mode == Mode::Train;
  if (train) {
    release_saved_impl();
    g_ = Tensor();
    grad_alpha_ = alpha_->requires_grad;
    scores_wanted_ = grad_alpha_ || scores_without_alpha_gradient();
  }
  deterministic_pass_ = sampling_ == Sampling::Deterministic;
  if (!deterministic_pass_) {
    Tensor y = search_forward(ctx, x, mode);
    pass_probs_ = Tensor();  // used once
    return y;
  }
  pass_probs_ = Tensor();
  if (derived_cache_.empty() || derived_version_ != *alpha_->version) {
    derived_cache_ = derived();  // one host read per change of alpha
    derived_version_ = *alpha_->version;
  }
  const std::vector<int> on = derived_cache_;
  Tensor y = forward_sum(ctx, x, mode, on, false);
  if (train) {
    active_ = on;
    saved_ = true;
  }
  return y;
}

Tensor MixedOp::backward_impl(Context& ctx, const Tensor& dy) {
  CUDARTS_CHECK(saved_, label(), ": backward without a Train forward");
  if (deterministic_pass_) return backward_active(ctx, dy);
  return search_backward(ctx, dy);
}

void MixedOp::release_saved_impl() {
  x_ = Tensor();
  probs_ = Tensor();
  outputs_.clear();
  active_.clear();
  saved_ = false;
}

// ---------------------------------------------------------------- the registry
namespace {
template <class M>
MixedOpMethod method(const char* name, const char* type_name) {
  return {name, type_name,
          [](Context& ctx, std::string n, std::vector<std::unique_ptr<Layer>> c,
             const MixedOpConfig& cfg) -> std::unique_ptr<MixedOp> {
            return std::make_unique<M>(ctx, std::move(n), std::move(c), cfg);
          }};
}
}  // namespace

const std::vector<MixedOpMethod>& mixed_op_methods() {
  static const std::vector<MixedOpMethod> methods = {
      method<ContinuousMixedOp>("continuous", "ContinuousMixedOp"),
      method<BinaryMixedOp>("binary", "BinaryMixedOp"),
      method<BinaryMaskedMixedOp>("masked", "BinaryMaskedMixedOp"),
      method<BinaryProxylessNASStyleMixedOp>("proxyless", "BinaryProxylessNASStyleMixedOp"),
      method<BinaryMovingAverageMixedOp>("moving-average", "BinaryMovingAverageMixedOp"),
      method<GdasMixedOp>("gdas", "GdasMixedOp"),
  };
  return methods;
}

const MixedOpMethod& mixed_op_method(const std::string& name) {
  std::string names;
  for (const MixedOpMethod& m : mixed_op_methods()) {
    if (m.name == name) return m;
    names += (names.empty() ? "" : ", ") + m.name;
  }
  throw ConfigError(detail::cat("unknown MixedOp method '", name, "'; expected one of ", names));
}

const char* mixed_op_type_name(const std::string& method) {
  return mixed_op_method(method).type_name.c_str();
}

std::unique_ptr<MixedOp> make_mixed_op(Context& ctx, std::string name,
                                       std::vector<std::unique_ptr<Layer>> candidates,
                                       MixedOpConfig config) {
  return mixed_op_method(config.method).make(ctx, std::move(name), std::move(candidates), config);
}

}  // namespace cudarts
