// ContinuousMixedOp (DARTS): y = sum_i softmax(alpha)_i op_i(x) over all K candidates; the
// backward gives every op p_i dy (all K in one pass, ops::mix_bwd), and (when alpha wants a
// gradient) the scores g_i = <dy, op_i(x)> feed dalpha += softmax-backward(g). The K outputs
// are kept only for the scores. Candidates whose output is an exact zero (Zero) are left out:
// the mix ops take them as null entries (score 0), and they get no backward.
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
  std::vector<Tensor> outs(static_cast<size_t>(k));
  std::vector<const Tensor*> ptrs(size_t(k), nullptr);
  Shape shape;
  for (int i = 0; i < k; ++i) {
    Layer& c = *candidates_[size_t(i)];
    if (c.output_is_zero()) continue;
    outs[size_t(i)] = c.forward(ctx, x, mode);
    ptrs[size_t(i)] = &outs[size_t(i)];
    shape = outs[size_t(i)].shape();
  }
  Tensor y = Tensor::empty(ctx, shape.ndim() > 0 ? shape : output_shape(x.shape()));
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
  // A fresh buffer per candidate: a candidate may return a view of its gradient.
  std::vector<Tensor> scaled(static_cast<size_t>(k));
  std::vector<Tensor*> ptrs(size_t(k), nullptr);
  for (int i = 0; i < k; ++i)
    if (!candidates_[size_t(i)]->output_is_zero()) {
      scaled[size_t(i)] = Tensor::empty(ctx, dy.shape());
      ptrs[size_t(i)] = &scaled[size_t(i)];
    }
  if (grad_alpha()) {  // scaled_i = p_i dy and the scores g_i = <dy, op_i(x)> in one pass
    Tensor g = Tensor::empty(ctx, Shape{k});
    std::vector<const Tensor*> outs;
    for (auto& o : outputs_) outs.push_back(o.defined() ? &o : nullptr);
    ops::mix_bwd_scores(ctx, probs_, dy, outs, ptrs, g);
    outputs_.clear();  // the outputs were kept only for the scores
    ops::arch_grad(ctx, alpha_->value, g, nullptr, 0, alpha_->grad);
    g_ = std::move(g);
  } else {
    ops::mix_bwd(ctx, probs_, dy, ptrs);  // scaled_i = p_i dy
  }
  GradSum dx;
  for (int i = 0; i < k; ++i)
    if (ptrs[size_t(i)]) {
      dx.add(ctx, candidates_[size_t(i)]->backward(ctx, scaled[size_t(i)]));
      scaled[size_t(i)] = Tensor();  // dropped as soon as its candidate is done
    }
  if (!dx.defined()) return Tensor::zeros(ctx, last_input_shape());  // every candidate is Zero
  return dx.take();
}

}  // namespace cudarts
