// ContinuousMixedOp (DARTS): y = sum_i softmax(alpha)_i op_i(x) over all K candidates; the
// backward gives every op p_i dy (all K in one pass, ops::mix_bwd), and (when alpha wants a
// gradient) the scores g_i = <dy, op_i(x)> feed dalpha += softmax-backward(g). The K outputs
// are kept only for the scores. Candidates ending in an affine-free BatchNorm stop before it:
// their statistics, normalisation and its backward run inside the mix (ops::mix_norm_fwd,
// mix_norm_bwd), so no normalised output is written. Candidates whose output is an exact zero
// (Zero) are left out: the mix ops take them as null entries (score 0), and they get no backward.
#include <algorithm>

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

std::vector<bool> ContinuousMixedOp::lead_group(const Tensor& x) {
  const int k = num_candidates();
  std::vector<bool> led(size_t(k), false);
  if (!config_.fuse_lead || x.ndim() != 4) return led;
  // Groupable: a depthwise leading convolution without bias, with the first one's ReLU rule.
  std::vector<bool> ok(size_t(k), false);
  int relu = -1;
  for (int i = 0; i < k; ++i) {
    Layer& c = *candidates_[size_t(i)];
    if (c.output_is_zero()) continue;
    Conv2d* lc = c.leading_conv();
    if (!lc || lc->bias() || lc->params().groups != x.dim(1)) continue;
    if (relu < 0) relu = lc->params().relu_input ? 1 : 0;
    ok[size_t(i)] = (relu == 1) == lc->params().relu_input;
  }
  // Only those after every other contributing candidate: the input gradient's sum then keeps
  // its order (the others' gradients first, ops::depthwise_group_bwd_data).
  int last_other = -1;
  for (int i = 0; i < k; ++i)
    if (!candidates_[size_t(i)]->output_is_zero() && !ok[size_t(i)]) last_other = i;
  for (int i = last_other + 1; i < k; ++i) led[size_t(i)] = ok[size_t(i)];
  return led;
}

Tensor ContinuousMixedOp::search_forward(Context& ctx, const Tensor& x, Mode mode) {
  const int k = num_candidates();
  Tensor probs = take_probabilities(ctx);
  // The leading depthwise convolutions of the candidates that allow it, in one op.
  const std::vector<bool> led = lead_group(x);
  std::vector<Tensor> lead_out(static_cast<size_t>(k));
  std::vector<Conv2d*> lead_convs(size_t(k), nullptr);
  {
    std::vector<const Tensor*> ws;
    std::vector<Conv2dParams> ps;
    std::vector<Tensor*> ys;
    for (int i = 0; i < k; ++i)
      if (led[size_t(i)]) {
        Conv2d* lc = candidates_[size_t(i)]->leading_conv();
        lead_convs[size_t(i)] = lc;
        lead_out[size_t(i)] = Tensor::empty(ctx, lc->output_shape(x.shape()));
        ws.push_back(&lc->weight().value);
        ps.push_back(lc->params());
        ys.push_back(&lead_out[size_t(i)]);
      }
    if (!ws.empty()) ops::depthwise_group_fwd(ctx, x, ws, ps, ys);
  }
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
    }
    // A grouped candidate leaves its convolution's filter gradient to the group too.
    const PartialPass pass{norm != nullptr, led[size_t(i)] ? &lead_out[size_t(i)] : nullptr,
                           led[size_t(i)]};
    outs[size_t(i)] =
        pass.to_norm || pass.lead ? c.forward_partial(ctx, x, mode, pass) : c.forward(ctx, x, mode);
    lead_out[size_t(i)] = Tensor();  // the candidate holds it where its backward needs it
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
    const bool any_led = std::find(led.begin(), led.end(), true) != led.end();
    led_ = led;
    lead_x_ = any_led ? x.share() : Tensor();
    lead_convs_ = std::move(lead_convs);
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
  // The grouped candidates' gradients with respect to their leading convolutions' outputs.
  std::vector<Tensor> lead_grads;
  std::vector<const Tensor*> lead_ws;
  std::vector<Conv2dParams> lead_ps;
  std::vector<Conv2d*> lead_convs;
  for (int i = 0; i < k; ++i)
    if (ptrs[size_t(i)]) {
      Layer& c = *candidates_[size_t(i)];
      const Tensor& d = scaled[size_t(i)];
      const bool normed = any_normed && normed_[size_t(i)];
      if (!led_.empty() && led_[size_t(i)]) {
        lead_grads.push_back(c.backward_partial(ctx, d));
        lead_ws.push_back(&lead_convs_[size_t(i)]->weight().value);
        lead_ps.push_back(lead_convs_[size_t(i)]->params());
        lead_convs.push_back(lead_convs_[size_t(i)]);
      } else {
        dx.add(ctx, normed ? c.backward_from_norm(ctx, d) : c.backward(ctx, d));
      }
      scaled[size_t(i)] = Tensor();  // dropped as soon as its candidate is done
    }
  if (!lead_grads.empty()) {
    std::vector<const Tensor*> dys, priors;
    for (const Tensor& g : lead_grads) dys.push_back(&g);
    // The group's filter gradients in one op (none when its weights are frozen).
    Conv2d::lead_parameter_gradients(ctx, lead_x_, lead_convs, dys);
    // The other candidates' gradients (all before the group's), then the group's, in one op.
    for (const Tensor& p : dx.parts) priors.push_back(&p);
    Tensor out = Tensor::empty(ctx, last_input_shape());
    ops::depthwise_group_bwd_data(ctx, dys, lead_ws, lead_ps,
                                  lead_ps[0].relu_input ? &lead_x_ : nullptr, priors, out);
    return out;
  }
  if (!dx.defined()) return Tensor::zeros(ctx, last_input_shape());  // every candidate is Zero
  return dx.take();
}

void ContinuousMixedOp::release_saved_impl() {
  MixedOp::release_saved_impl();
  normed_.clear();
  mean_ = Tensor();
  invstd_ = Tensor();
  led_.clear();
  lead_x_ = Tensor();
  lead_convs_.clear();
}

}  // namespace cudarts
