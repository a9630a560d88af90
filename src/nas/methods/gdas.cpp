// GdasMixedOp (GDAS, Dong and Yang, CVPR 2019): one op per step, the argmax k of the Gumbel-
// softmax sample s = softmax((log_softmax(alpha) + G) / tau). The Gumbel-max trick makes k
// the first entry of gumbel_rank's ranking of the same noise, so SearchModel's one-launch
// sampling serves GDAS too; the soft sample is computed from that draw (gumbel_softmax). Only
// op_k runs and keeps activations (y = op_k(x)); the straight-through gradient treats the hard
// one-hot h as h - stopgrad(s) + s: dL/ds_k = <dy, op_k(x)>, 0 for the ops that did not run,
// and gumbel_softmax_bwd carries it to alpha. tau anneals linearly from tau_max to tau_min.
#include <cmath>

#include "cudarts/error.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"

namespace cudarts {

GdasMixedOp::GdasMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                         const MixedOpConfig& config)
    : MixedOp(ctx, std::move(name), std::move(ops), config, "GdasMixedOp"), tau_(config.tau_max) {
  CUDARTS_CHECK(std::isfinite(config_.tau_max) && std::isfinite(config_.tau_min) &&
                    config_.tau_min > 0.0f && config_.tau_min <= config_.tau_max,
                label(), ": the temperatures tau_max ", config_.tau_max, " and tau_min ",
                config_.tau_min, " must be finite with 0 < tau_min <= tau_max");
}

void GdasMixedOp::set_search_progress(double fraction) {
  tau_ = float(double(config_.tau_max) - (double(config_.tau_max) - config_.tau_min) * fraction);
}

Tensor GdasMixedOp::search_forward(Context& ctx, const Tensor& x, Mode mode) {
  take_ranking(ctx);
  last_on_ = {ranking_host_[0]};
  last_eval_ = last_on_;
  const bool train = mode == Mode::Train;
  Tensor y = forward_sum(ctx, x, mode, last_on_, train && scores_wanted());
  if (train) {
    soft_ = Tensor();
    if (grad_alpha()) {
      soft_ = Tensor::empty(ctx, Shape{num_candidates()});
      ops::gumbel_softmax(ctx, alpha_->value, draw_.seed, draw_.offset, draw_.first, tau_, soft_);
    }
    active_ = last_on_;
    saved_ = true;
  }
  return y;
}

Tensor GdasMixedOp::search_backward(Context& ctx, const Tensor& dy) {
  if (grad_alpha()) {
    Tensor g = Tensor::zeros(ctx, Shape{num_candidates()});
    const int k = last_on_[0];
    Tensor gk = g.slice(k, k + 1);
    ops::mix_scores(ctx, dy, {&outputs_[0]}, gk);
    outputs_.clear();
    ops::gumbel_softmax_bwd(ctx, alpha_->value, soft_, g, tau_, alpha_->grad);
    g_ = std::move(g);
  }
  return backward_active(ctx, dy);
}

}  // namespace cudarts
