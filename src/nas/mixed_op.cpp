// MixedOp: the five search semantics of DESIGN.md section 3 on top of the op table.
// Memory: a Train forward keeps only what backward needs (all K outputs for Continuous,
// the S_on outputs for the Binary types); ops scored only for alpha run in Mode::Probe.
#include "cudarts/mixed_op.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "cudarts/error.h"
#include "cudarts/ops.h"
#include "grad_sum.h"

namespace cudarts {

const char* mixed_op_type_name(MixedOpType t) {
  switch (t) {
    case MixedOpType::Continuous:
      return "ContinuousMixedOp";
    case MixedOpType::Binary:
      return "BinaryMixedOp";
    case MixedOpType::BinaryMasked:
      return "BinaryMaskedMixedOp";
    case MixedOpType::ProxylessNAS:
      return "BinaryProxylessNASStyleMixedOp";
    case MixedOpType::MovingAverage:
      return "BinaryMovingAverageMixedOp";
  }
  return "MixedOp";
}

MixedOpType parse_mixed_op_type(const std::string& s) {
  if (s == "continuous") return MixedOpType::Continuous;
  if (s == "binary") return MixedOpType::Binary;
  if (s == "masked") return MixedOpType::BinaryMasked;
  if (s == "proxyless") return MixedOpType::ProxylessNAS;
  if (s == "moving-average") return MixedOpType::MovingAverage;
  CUDARTS_FAIL("unknown MixedOp type '", s,
               "'; expected continuous, binary, masked, proxyless or moving-average");
}

namespace {
bool is_partial(MixedOpType t) {
  return t == MixedOpType::BinaryMasked || t == MixedOpType::ProxylessNAS ||
         t == MixedOpType::MovingAverage;
}

}  // namespace

MixedOp::MixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> candidates,
                 MixedOpConfig config)
    : Layer(std::move(name)), config_(config), candidates_(std::move(candidates)) {
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
  if (is_partial(config_.type)) {
    CUDARTS_CHECK(config_.num_eval >= config_.num_on && config_.num_eval <= k, label(),
                  ": num_eval (k_eval) = ", config_.num_eval,
                  " must be in [num_on = ", config_.num_on, ", ", k, "]");
  }
  if (config_.type == MixedOpType::ProxylessNAS)
    CUDARTS_CHECK(config_.num_eval >= 2, label(), ": num_eval (k_eval) = ", config_.num_eval,
                  " must be >= 2 for the ProxylessNAS-style update");
  if (config_.type == MixedOpType::MovingAverage)
    CUDARTS_CHECK(config_.ma_lr > 0.0f && config_.ma_lr <= 1.0f, label(), ": learning_rate ",
                  config_.ma_lr, " must be in (0, 1]");
  alpha_ = &add_parameter(ctx, "alpha", Shape{k}, ParamKind::Architecture);
  init_normal(ctx, alpha_->value, 0.0f, 1e-3f);
}

MixedOp::~MixedOp() = default;

const char* MixedOp::type() const {
  return mixed_op_type_name(config_.type);
}

int MixedOp::num_eval_effective() const {
  if (config_.type == MixedOpType::Binary) return num_candidates();
  if (is_partial(config_.type)) return config_.num_eval;
  return num_candidates();
}

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

void MixedOp::set_ranking(std::vector<int> host, Tensor device) {
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
  ranking_ready_ = true;
}

void MixedOp::draw_ranking(Context& ctx) {
  const int k = num_candidates();
  Tensor offsets = Tensor::from_vector_i32(ctx, Shape{2}, {0, k});
  Tensor ranking = Tensor::empty(ctx, Shape{k}, DType::I32);
  ops::gumbel_rank(ctx, alpha_->value, offsets, ctx.seed(), ctx.reserve_rng(uint64_t(k)), ranking);
  const std::vector<int32_t> host = ranking.to_vector_i32();
  set_ranking(std::vector<int>(host.begin(), host.end()), std::move(ranking));
}

Tensor MixedOp::forward_sum(Context& ctx, const Tensor& x, Mode mode,
                            const std::vector<int>& ops_on) {
  const bool keep = mode == Mode::Train && !deterministic_pass_ && scores_wanted_;
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

Tensor MixedOp::forward_continuous(Context& ctx, const Tensor& x, Mode mode) {
  const int k = num_candidates();
  Tensor probs = Tensor::empty(ctx, Shape{k});
  ops::softmax(ctx, alpha_->value, probs);
  std::vector<Tensor> outs;
  std::vector<const Tensor*> ptrs;
  for (int i = 0; i < k; ++i) outs.push_back(candidates_[size_t(i)]->forward(ctx, x, mode));
  for (auto& o : outs) ptrs.push_back(&o);
  Tensor y = Tensor::empty(ctx, outs[0].shape());
  ops::mix_fwd(ctx, probs, ptrs, y);
  if (mode == Mode::Train) {
    if (scores_wanted_) outputs_ = std::move(outs);  // kept only for the scores
    probs_ = std::move(probs);
  }
  return y;
}

Tensor MixedOp::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  const bool train = mode == Mode::Train;
  if (train) {
    release_saved_impl();
    g_ = Tensor();
    grad_alpha_ = alpha_->requires_grad;
    // MovingAverage updates its estimates from the scores' batch means in every Train pass.
    scores_wanted_ = grad_alpha_ || config_.type == MixedOpType::MovingAverage;
  }
  deterministic_pass_ = sampling_ == Sampling::Deterministic;
  if (deterministic_pass_) {
    if (derived_cache_.empty() || derived_version_ != *alpha_->version) {
      derived_cache_ = derived();  // one host read per change of alpha
      derived_version_ = *alpha_->version;
    }
    const std::vector<int> on = derived_cache_;
    Tensor y = forward_sum(ctx, x, mode, on);
    if (train) {
      active_ = on;
      saved_ = true;
    }
    return y;
  }
  if (config_.type == MixedOpType::Continuous) {
    Tensor y = forward_continuous(ctx, x, mode);
    if (train) {
      active_.resize(size_t(num_candidates()));
      std::iota(active_.begin(), active_.end(), 0);
      saved_ = true;
    }
    return y;
  }
  if (!ranking_ready_) draw_ranking(ctx);
  ranking_ready_ = false;
  last_on_.assign(ranking_host_.begin(), ranking_host_.begin() + config_.num_on);
  last_eval_.assign(ranking_host_.begin(), ranking_host_.begin() + num_eval_effective());
  Tensor y = forward_sum(ctx, x, mode, last_on_);
  if (train) {
    if (scores_wanted_) x_ = x.share();  // the probes of backward read it
    active_ = last_on_;
    saved_ = true;
  }
  return y;
}

Tensor MixedOp::backward_impl(Context& ctx, const Tensor& dy) {
  CUDARTS_CHECK(saved_, label(), ": backward without a Train forward");
  GradSum dx;
  if (deterministic_pass_) {
    for (int i : active_) dx.add(ctx, candidates_[size_t(i)]->backward(ctx, dy));
    return std::move(dx.sum);
  }
  return config_.type == MixedOpType::Continuous ? backward_continuous(ctx, dy)
                                                 : backward_binary(ctx, dy);
}

Tensor MixedOp::backward_continuous(Context& ctx, const Tensor& dy) {
  const int k = num_candidates();
  if (grad_alpha_) {
    Tensor g = Tensor::empty(ctx, Shape{k});
    std::vector<const Tensor*> ptrs;
    for (auto& o : outputs_) ptrs.push_back(&o);
    ops::mix_scores(ctx, dy, ptrs, g);
    outputs_.clear();  // the outputs were kept only for the scores
    ops::arch_grad(ctx, alpha_->value, g, nullptr, 0, alpha_->grad);
    g_ = std::move(g);
  }
  GradSum dx;
  for (int i = 0; i < k; ++i) {
    // A fresh buffer per candidate: a candidate may return a view of its gradient.
    Tensor scaled = Tensor::empty(ctx, dy.shape());
    const Tensor pi = probs_.slice(i, i + 1);
    ops::mix_fwd(ctx, pi, {&dy}, scaled);  // scaled = p_i dy
    dx.add(ctx, candidates_[size_t(i)]->backward(ctx, scaled));
  }
  return std::move(dx.sum);
}

// Scores first (probing the ops of E outside S_on one at a time, each output dropped right
// after its score), then the S_on backward. The probes therefore run while the S_on
// activations are still held; no probe output outlives its score.
Tensor MixedOp::backward_binary(Context& ctx, const Tensor& dy) {
  if (scores_wanted_) score_binary(ctx, dy);
  GradSum dx;
  for (int i : active_) dx.add(ctx, candidates_[size_t(i)]->backward(ctx, dy));
  return std::move(dx.sum);
}

void MixedOp::score_binary(Context& ctx, const Tensor& dy) {
  const int k = num_candidates();
  const int k_on = config_.num_on;
  const int k_eval = num_eval_effective();
  Tensor g = Tensor::zeros(ctx, Shape{k});
  const std::vector<int> extra(last_eval_.begin() + k_on, last_eval_.end());

  if (config_.type == MixedOpType::MovingAverage) {
    const int64_t n = dy.dim(0), per_sample = dy.numel() / std::max<int64_t>(n, 1);
    if (!ma_.defined()) ma_ = Tensor::zeros(ctx, Shape{k, per_sample});
    CUDARTS_CHECK(ma_.dim(1) == per_sample, label(), ": the per-sample output size changed from ",
                  ma_.dim(1), " to ", per_sample, "; moving averages need a fixed shape");
    if (!mu_.defined()) mu_ = Tensor::zeros(ctx, Shape{k, per_sample});
    Tensor dy_sum = Tensor::empty(ctx, Shape{per_sample});
    ops::batch_sum(ctx, dy, 1.0f, dy_sum);
    auto batch_mean_into = [&](const Tensor& o, int i) {
      Tensor row = mu_.slice(i, i + 1).reshape(Shape{per_sample});
      ops::batch_sum(ctx, o, 1.0f / float(n), row);
    };
    for (int j = 0; j < k_on; ++j) batch_mean_into(outputs_[size_t(j)], last_on_[size_t(j)]);
    for (int i : extra) batch_mean_into(candidates_[size_t(i)]->forward(ctx, x_, Mode::Probe), i);
    ops::ma_update_scores(ctx, dy_sum, mu_, ma_, ranking_dev_, k_eval, config_.ma_lr, g);
  } else {
    for (int j = 0; j < k_on; ++j) {
      Tensor gi = g.slice(last_on_[size_t(j)], last_on_[size_t(j)] + 1);
      ops::mix_scores(ctx, dy, {&outputs_[size_t(j)]}, gi);
    }
    for (int i : extra) {
      Tensor o = candidates_[size_t(i)]->forward(ctx, x_, Mode::Probe);
      Tensor gi = g.slice(i, i + 1);
      ops::mix_scores(ctx, dy, {&o}, gi);
    }
  }
  outputs_.clear();
  x_ = Tensor();
  g_ = std::move(g);
  if (!grad_alpha_) return;

  const bool restricted = config_.type == MixedOpType::ProxylessNAS;
  ops::arch_grad(ctx, alpha_->value, g_, restricted ? &ranking_dev_ : nullptr,
                 restricted ? k_eval : 0, alpha_->grad);
  if (restricted) {
    hook_ranking_ = ranking_dev_.share();
    hook_pending_ = true;
  }
}

void MixedOp::release_saved_impl() {
  x_ = Tensor();
  probs_ = Tensor();
  outputs_.clear();
  active_.clear();
  saved_ = false;
}

void MixedOp::set_moving_averages(Tensor m) {
  CUDARTS_CHECK(m.ndim() == 2 && m.dim(0) == num_candidates(), label(),
                ": moving averages of shape ", m.shape(), ", expected (", num_candidates(),
                ", per-sample size)");
  ma_ = std::move(m);
  mu_ = Tensor();
}

void MixedOp::before_step(Context& ctx) {
  if (!hook_pending_) return;
  if (!lse_old_.defined()) lse_old_ = Tensor::empty(ctx, Shape{1});
  ops::masked_logsumexp(ctx, alpha_->value, hook_ranking_, config_.num_eval, lse_old_);
}

void MixedOp::after_step(Context& ctx) {
  if (!hook_pending_) return;
  ops::proxyless_rescale(ctx, alpha_->value, hook_ranking_, config_.num_eval, lse_old_);
  hook_pending_ = false;
}

}  // namespace cudarts

namespace cudarts {

namespace {
MixedOpConfig make_config(MixedOpType t, int num_on, int num_eval, float lr = 0.01f) {
  MixedOpConfig c;
  c.type = t;
  c.num_on = num_on;
  c.num_eval = num_eval;
  c.ma_lr = lr;
  return c;
}
}  // namespace

ContinuousMixedOp::ContinuousMixedOp(Context& ctx, std::string name,
                                     std::vector<std::unique_ptr<Layer>> ops, int num_on)
    : MixedOp(ctx, std::move(name), std::move(ops),
              make_config(MixedOpType::Continuous, num_on, 0)) {}

BinaryMixedOp::BinaryMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, int num_on)
    : MixedOp(ctx, std::move(name), std::move(ops), make_config(MixedOpType::Binary, num_on, 0)) {}

BinaryMaskedMixedOp::BinaryMaskedMixedOp(Context& ctx, std::string name,
                                         std::vector<std::unique_ptr<Layer>> ops, int num_eval,
                                         int num_on)
    : MixedOp(ctx, std::move(name), std::move(ops),
              make_config(MixedOpType::BinaryMasked, num_on, num_eval)) {}

BinaryProxylessNASStyleMixedOp::BinaryProxylessNASStyleMixedOp(
    Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops, int num_eval,
    int num_on)
    : MixedOp(ctx, std::move(name), std::move(ops),
              make_config(MixedOpType::ProxylessNAS, num_on, num_eval)) {}

BinaryMovingAverageMixedOp::BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                                                       std::vector<std::unique_ptr<Layer>> ops,
                                                       int num_eval, int num_on,
                                                       float learning_rate)
    : MixedOp(ctx, std::move(name), std::move(ops),
              make_config(MixedOpType::MovingAverage, num_on, num_eval, learning_rate)) {}

std::unique_ptr<MixedOp> make_mixed_op(Context& ctx, std::string name,
                                       std::vector<std::unique_ptr<Layer>> candidates,
                                       MixedOpConfig config) {
  return std::make_unique<MixedOp>(ctx, std::move(name), std::move(candidates), config);
}

}  // namespace cudarts
