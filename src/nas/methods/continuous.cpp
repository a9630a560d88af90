// ContinuousMixedOp (DARTS): y = sum_i softmax(alpha)_i op_i(x) over all K candidates; the
// backward gives every op p_i dy, and (when alpha wants a gradient) the scores
// g_i = <dy, op_i(x)> feed dalpha += softmax-backward(g). The K outputs are kept only for the
// scores.
#include "cudarts/error.h"
#include "cudarts/mixed_op.h"
#include "cudarts/ops.h"
#include "grad_sum.h"

namespace cudarts {

namespace {
MixedOpConfig with_num_on(int num_on) {
  MixedOpConfig c;
  c.method = "continuous";
  c.num_on = num_on;
  return c;
}
}  // namespace

ContinuousMixedOp::ContinuousMixedOp(Context& ctx, std::string name,
                                     std::vector<std::unique_ptr<Layer>> ops, int num_on)
    : ContinuousMixedOp(ctx, std::move(name), std::move(ops), with_num_on(num_on)) {}

ContinuousMixedOp::ContinuousMixedOp(Context& ctx, std::string name,
                                     std::vector<std::unique_ptr<Layer>> ops,
                                     const MixedOpConfig& config)
    : MixedOp(ctx, std::move(name), std::move(ops), config, "ContinuousMixedOp") {}

Tensor ContinuousMixedOp::search_forward(Context& ctx, const Tensor& x, Mode mode) {
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
    if (scores_wanted()) outputs_ = std::move(outs);  // kept only for the scores
    probs_ = std::move(probs);
    active_.resize(size_t(k));
    for (int i = 0; i < k; ++i) active_[size_t(i)] = i;
    saved_ = true;
  }
  return y;
}

Tensor ContinuousMixedOp::search_backward(Context& ctx, const Tensor& dy) {
  const int k = num_candidates();
  if (grad_alpha()) {
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

}  // namespace cudarts
