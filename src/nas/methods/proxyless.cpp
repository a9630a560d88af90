// BinaryProxylessNASStyleMixedOp: as Masked, with the architecture gradient only for alpha_E
// through the softmax restricted to E. The exact update (SearchModel's ProxylessUpdate::Exact)
// reads the pending set E from pending_eval_set(); the seed's reference update uses this op as
// the architecture optimizer's StepHook: before the step it keeps log sum_E exp(alpha), after
// it it shifts alpha_E back to that value.
#include "cudarts/error.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"

namespace cudarts {

BinaryProxylessNASStyleMixedOp::BinaryProxylessNASStyleMixedOp(
    Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops, int num_eval,
    int num_on)
    : BinaryProxylessNASStyleMixedOp(ctx, std::move(name), std::move(ops), [&] {
        MixedOpConfig c;
        c.method = "proxyless";
        c.num_on = num_on;
        c.num_eval = num_eval;
        return c;
      }()) {}

BinaryProxylessNASStyleMixedOp::BinaryProxylessNASStyleMixedOp(
    Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
    const MixedOpConfig& config)
    : SampledMixedOp(ctx, std::move(name), std::move(ops), config,
                     "BinaryProxylessNASStyleMixedOp") {
  check_num_eval(1);
  CUDARTS_CHECK(config_.num_eval >= 2, label(), ": num_eval (k_eval) = ", config_.num_eval,
                " must be >= 2 for the ProxylessNAS-style update");
}

void BinaryProxylessNASStyleMixedOp::alpha_gradient(Context& ctx) {
  ops::arch_grad(ctx, alpha_->value, g_, &ranking_dev_, config_.num_eval, alpha_->grad);
  eval_ranking_ = ranking_dev_.share();
  pending_ = true;
}

void BinaryProxylessNASStyleMixedOp::before_step(Context& ctx) {
  if (!pending_) return;
  if (!lse_old_.defined()) lse_old_ = Tensor::empty(ctx, Shape{1});
  ops::masked_logsumexp(ctx, alpha_->value, eval_ranking_, config_.num_eval, lse_old_);
}

void BinaryProxylessNASStyleMixedOp::after_step(Context& ctx) {
  if (!pending_) return;
  ops::proxyless_rescale(ctx, alpha_->value, eval_ranking_, config_.num_eval, lse_old_);
  pending_ = false;
}

}  // namespace cudarts
