// ContinuousMixedOp (DARTS): y = sum_i softmax(alpha)_i op_i(x) over all K candidates; the
// backward gives every op p_i dy (all K in one pass, ops::mix_bwd), and (when alpha wants a
// gradient) the scores g_i = <dy, op_i(x)> feed dalpha += softmax-backward(g). The K outputs
// are kept only for the scores. Candidates ending in an affine-free BatchNorm stop before it:
// their statistics, normalisation and its backward run inside the mix (ops::mix_norm_fwd,
// mix_norm_bwd), so no normalised output is written. Candidates whose output is an exact zero
// (Zero) are left out: the mix ops take them as null entries (score 0), and they get no backward.
#include "cudarts/error.h"
#include "cudarts/layers.h"
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
  Tensor probs = take_probabilities(ctx);
  // Candidates ending in an affine-free BatchNorm (with the first one's eps and momentum) stop
  // before it; their statistics and normalisation happen in the mix.
  const bool fuse = config_.fuse_norm && mode != Mode::Eval;
  std::vector<bool> normed(size_t(k), false);
  std::vector<Tensor*> running_means, running_vars;
  const BatchNorm2d* first_norm = nullptr;
  std::vector<Tensor> outs(static_cast<size_t>(k));
  std::vector<const Tensor*> ptrs(size_t(k), nullptr);
  Shape shape;
  for (int i = 0; i < k; ++i) {
    Layer& c = *candidates_[size_t(i)];
    if (c.output_is_zero()) continue;
    BatchNorm2d* norm = fuse ? c.trailing_norm() : nullptr;
    if (norm && first_norm &&
        (norm->params().eps != first_norm->params().eps ||
         norm->params().momentum != first_norm->params().momentum))
      norm = nullptr;
    if (norm) {
      if (!first_norm) {
        first_norm = norm;
        if (mode == Mode::Train) {
          running_means.assign(size_t(k), nullptr);
          running_vars.assign(size_t(k), nullptr);
        }
      }
      normed[size_t(i)] = true;
      if (mode == Mode::Train) {
        running_means[size_t(i)] = &norm->running_mean();
        running_vars[size_t(i)] = &norm->running_var();
      }
      outs[size_t(i)] = c.forward_to_norm(ctx, x, mode);
    } else {
      outs[size_t(i)] = c.forward(ctx, x, mode);
    }
    ptrs[size_t(i)] = &outs[size_t(i)];
    shape = outs[size_t(i)].shape();
  }
  Tensor y = Tensor::empty(ctx, shape.ndim() > 0 ? shape : output_shape(x.shape()));
  Tensor mean, invstd;
  if (first_norm) {
    mean = Tensor::empty(ctx, Shape{k, shape[1]});
    invstd = Tensor::empty(ctx, Shape{k, shape[1]});
    ops::batchnorm_stats(ctx, ptrs, normed, mean, invstd, running_means, running_vars,
                         first_norm->params());
    ops::mix_norm_fwd(ctx, probs, ptrs, normed, mean, invstd, y);
  } else {
    ops::mix_fwd(ctx, probs, ptrs, y);
  }
  if (mode == Mode::Train) {
    // Kept: the pre-norm values (the normalisation's backward needs them) and, for the scores,
    // the other outputs.
    for (int i = 0; i < k; ++i)
      if (!normed[size_t(i)] && !scores_wanted()) outs[size_t(i)] = Tensor();
    outputs_ = std::move(outs);
    probs_ = std::move(probs);
    normed_ = std::move(normed);
    mean_ = std::move(mean);
    invstd_ = std::move(invstd);
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
  std::vector<const Tensor*> outs;
  for (auto& o : outputs_) outs.push_back(o.defined() ? &o : nullptr);
  const bool any_normed = mean_.defined();
  Tensor g;
  if (grad_alpha()) g = Tensor::empty(ctx, Shape{k});
  if (any_normed) {
    // Every candidate's gradient (the normed ones' with respect to z_i) and the scores in one op.
    ops::mix_norm_bwd(ctx, probs_, dy, outs, normed_, mean_, invstd_, ptrs,
                      grad_alpha() ? &g : nullptr);
  } else if (grad_alpha()) {  // scaled_i = p_i dy and the scores g_i = <dy, op_i(x)> in one pass
    ops::mix_bwd_scores(ctx, probs_, dy, outs, ptrs, g);
  } else {
    ops::mix_bwd(ctx, probs_, dy, ptrs);  // scaled_i = p_i dy
  }
  outputs_.clear();  // kept only for the scores and the normalisation's backward
  if (grad_alpha()) {
    add_arch_grad(ctx, g);
    g_ = std::move(g);
  }
  GradSum dx;
  for (int i = 0; i < k; ++i)
    if (ptrs[size_t(i)]) {
      Layer& c = *candidates_[size_t(i)];
      const Tensor& d = scaled[size_t(i)];
      dx.add(ctx,
             any_normed && normed_[size_t(i)] ? c.backward_from_norm(ctx, d) : c.backward(ctx, d));
      scaled[size_t(i)] = Tensor();  // dropped as soon as its candidate is done
    }
  if (!dx.defined()) return Tensor::zeros(ctx, last_input_shape());  // every candidate is Zero
  return dx.take();
}

void ContinuousMixedOp::release_saved_impl() {
  MixedOp::release_saved_impl();
  normed_.clear();
  mean_ = Tensor();
  invstd_ = Tensor();
}

}  // namespace cudarts
