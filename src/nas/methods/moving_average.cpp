// BinaryMovingAverageMixedOp: as Masked; m_i tracks the batch-mean output of op i
// (m_i += lr (mu_i - m_i) for i in E, mu_i this batch's mean) and the scores use
// g_i = <sum_batch dy, estimate_i>, estimate = mu_i for i in E, m_i otherwise, for all K ops.
// The estimates are updated in every Train pass (also when alpha wants no gradient) and are
// checkpoint state ("ma").
#include "cudarts/error.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"

namespace cudarts {

BinaryMovingAverageMixedOp::BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                                                       std::vector<std::unique_ptr<Layer>> ops,
                                                       int num_eval, int num_on,
                                                       float learning_rate)
    : BinaryMovingAverageMixedOp(ctx, std::move(name), std::move(ops), [&] {
        MixedOpConfig c;
        c.method = "moving-average";
        c.num_on = num_on;
        c.num_eval = num_eval;
        c.ma_lr = learning_rate;
        return c;
      }()) {}

BinaryMovingAverageMixedOp::BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                                                       std::vector<std::unique_ptr<Layer>> ops,
                                                       const MixedOpConfig& config)
    : SampledMixedOp(ctx, std::move(name), std::move(ops), config, "BinaryMovingAverageMixedOp") {
  check_num_eval(1);
  CUDARTS_CHECK(config_.ma_lr > 0.0f && config_.ma_lr <= 1.0f, label(), ": learning_rate ",
                config_.ma_lr, " must be in (0, 1]");
}

void BinaryMovingAverageMixedOp::compute_scores(Context& ctx, const Tensor& dy, Tensor& g) {
  const int k = num_candidates();
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
  const int k_on = config_.num_on;
  for (int j = 0; j < k_on; ++j) batch_mean_into(outputs_[size_t(j)], last_on_[size_t(j)]);
  for (size_t e = size_t(k_on); e < last_eval_.size(); ++e)
    batch_mean_into(candidates_[size_t(last_eval_[e])]->forward(ctx, x_, Mode::Probe),
                    last_eval_[e]);
  ops::ma_update_scores(ctx, dy_sum, mu_, ma_, ranking_dev_, eval_set_size(), config_.ma_lr, g);
}

void BinaryMovingAverageMixedOp::set_moving_averages(Tensor m) {
  CUDARTS_CHECK(m.ndim() == 2 && m.dim(0) == num_candidates(), label(),
                ": moving averages of shape ", m.shape(), ", expected (", num_candidates(),
                ", per-sample size)");
  ma_ = std::move(m);
  mu_ = Tensor();
}

std::vector<std::pair<std::string, const Tensor*>> BinaryMovingAverageMixedOp::state() const {
  return {{"ma", &ma_}};
}

void BinaryMovingAverageMixedOp::set_state(const std::string& key, Tensor value) {
  if (key != "ma") MixedOp::set_state(key, std::move(value));
  set_moving_averages(std::move(value));
}

}  // namespace cudarts
