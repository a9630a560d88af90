// The sampling methods' common pass (SampledMixedOp) and the two plain ones: BinaryMixedOp
// (S_on sampled by Gumbel top-k, every op scored) and BinaryMaskedMixedOp (only the evaluation
// set E = the first num_eval of the ranking scored). Memory: only the S_on activations are
// kept; ops scored only for alpha run in Mode::Probe in backward, one at a time, each output
// dropped right after its score.
#include "cudarts/error.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"

namespace cudarts {

int SampledMixedOp::eval_set_size() const {
  return config_.num_eval;
}

void SampledMixedOp::check_num_eval(int min_eval) const {
  const int k = num_candidates();
  CUDARTS_CHECK(config_.num_eval >= std::max(config_.num_on, min_eval) && config_.num_eval <= k,
                label(), ": num_eval (k_eval) = ", config_.num_eval,
                " must be in [num_on = ", config_.num_on, ", ", k, "]",
                min_eval > 1 ? detail::cat(" and >= ", min_eval) : std::string());
}

Tensor SampledMixedOp::search_forward(Context& ctx, const Tensor& x, Mode mode) {
  take_ranking(ctx);
  last_on_.assign(ranking_host_.begin(), ranking_host_.begin() + config_.num_on);
  last_eval_.assign(ranking_host_.begin(), ranking_host_.begin() + eval_set_size());
  const bool train = mode == Mode::Train;
  Tensor y = forward_sum(ctx, x, mode, last_on_, train && scores_wanted());
  if (train) {
    if (scores_wanted()) x_ = x.share();  // the probes of backward read it
    active_ = last_on_;
    saved_ = true;
  }
  return y;
}

// Scores first (probing the ops of E outside S_on), then the S_on backward: the probes run
// while the S_on activations are still held, and no probe output outlives its score.
Tensor SampledMixedOp::search_backward(Context& ctx, const Tensor& dy) {
  if (scores_wanted()) {
    Tensor g = Tensor::zeros(ctx, Shape{num_candidates()});
    compute_scores(ctx, dy, g);
    outputs_.clear();
    x_ = Tensor();
    g_ = std::move(g);
    if (grad_alpha()) alpha_gradient(ctx);
  }
  return backward_active(ctx, dy);
}

void SampledMixedOp::compute_scores(Context& ctx, const Tensor& dy, Tensor& g) {
  const int k_on = config_.num_on;
  for (int j = 0; j < k_on; ++j) {
    Tensor gi = g.slice(last_on_[size_t(j)], last_on_[size_t(j)] + 1);
    ops::mix_scores(ctx, dy, {&outputs_[size_t(j)]}, gi);
  }
  for (size_t e = size_t(k_on); e < last_eval_.size(); ++e) {
    const int i = last_eval_[e];
    Tensor o = candidates_[size_t(i)]->forward(ctx, x_, Mode::Probe);
    Tensor gi = g.slice(i, i + 1);
    ops::mix_scores(ctx, dy, {&o}, gi);
  }
}

void SampledMixedOp::alpha_gradient(Context& ctx) {
  add_arch_grad(ctx, g_);
}

namespace {
MixedOpConfig config_of(const char* method, int num_on, int num_eval) {
  MixedOpConfig c;
  c.method = method;
  c.num_on = num_on;
  c.num_eval = num_eval;
  return c;
}
}  // namespace

BinaryMixedOp::BinaryMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, int num_on)
    : BinaryMixedOp(ctx, std::move(name), std::move(ops), config_of("binary", num_on, 0)) {}

BinaryMixedOp::BinaryMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, const MixedOpConfig& config)
    : SampledMixedOp(ctx, std::move(name), std::move(ops), config, "BinaryMixedOp") {}

BinaryMaskedMixedOp::BinaryMaskedMixedOp(Context& ctx, std::string name,
                                         std::vector<std::unique_ptr<Layer>> ops, int num_eval,
                                         int num_on)
    : BinaryMaskedMixedOp(ctx, std::move(name), std::move(ops),
                          config_of("masked", num_on, num_eval)) {}

BinaryMaskedMixedOp::BinaryMaskedMixedOp(Context& ctx, std::string name,
                                         std::vector<std::unique_ptr<Layer>> ops,
                                         const MixedOpConfig& config)
    : SampledMixedOp(ctx, std::move(name), std::move(ops), config, "BinaryMaskedMixedOp") {
  check_num_eval(1);
}

}  // namespace cudarts
