// Second-order DARTS: the architecture gradient through one virtual weight step (darts.h).
#include <cmath>
#include <vector>

#include "cudarts/comm.h"
#include "cudarts/darts.h"
#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts::darts {

namespace {

std::vector<Tensor> clones(Context& ctx, const std::vector<Parameter*>& ps, bool grads) {
  std::vector<Tensor> out;
  out.reserve(ps.size());
  for (Parameter* p : ps) out.push_back((grads ? p->grad : p->value).clone(ctx));
  return out;
}

void assign(Context& ctx, const std::vector<Tensor>& src, const std::vector<Parameter*>& ps) {
  for (size_t i = 0; i < ps.size(); ++i) ops::copy(ctx, src[i], ps[i]->value);
}

// Restores the requires_grad flags of a parameter list when it goes out of scope.
class RequiresGradScope {
 public:
  explicit RequiresGradScope(std::vector<Parameter*> ps) : ps_(std::move(ps)) {
    for (Parameter* p : ps_) saved_.push_back(p->requires_grad);
  }
  ~RequiresGradScope() {
    for (size_t i = 0; i < ps_.size(); ++i) ps_[i]->requires_grad = saved_[i];
  }
  RequiresGradScope(const RequiresGradScope&) = delete;
  RequiresGradScope& operator=(const RequiresGradScope&) = delete;

 private:
  std::vector<Parameter*> ps_;
  std::vector<bool> saved_;
};

}  // namespace

void unrolled_architecture_gradient(Context& ctx, SearchModel& model, const SGD& weights, float xi,
                                    const Tensor& x_train, const Tensor& y_train,
                                    const Tensor& x_val, const Tensor& y_val,
                                    bool skip_unused_gradients) {
  CUDARTS_CHECK(std::isfinite(xi) && xi >= 0.0f, "unrolled_architecture_gradient: xi ", xi,
                " must be finite and >= 0");
  for (auto& [name, m] : model.mixed_ops())
    CUDARTS_CHECK(m->second_order(), "unrolled_architecture_gradient: ", name, " is a ", m->type(),
                  "; second-order DARTS needs MixedOps that run the same ops in every pass "
                  "(continuous)");
  const std::vector<Parameter*> w = model.operational_parameters();
  const std::vector<Parameter*> a = model.architecture_parameters();
  CUDARTS_CHECK(weights.params() == w,
                "unrolled_architecture_gradient: the weight optimizer "
                "must hold the model's operational parameters, in their order");

  // One forward/backward on (x, y) with every gradient zeroed first, computing the gradients
  // of group `g` (all of them without skip_unused_gradients).
  const RequiresGradScope restore(model.network().parameters());
  Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
  // Data parallel: the gradients a pass computed are averaged over the ranks, so the virtual
  // step, v, its norm and the finite differences are the whole batch's on every rank.
  Communicator& comm = ctx.communicator();
  Tensor scratch;
  auto average = [&](const std::vector<Parameter*>& ps) {
    std::vector<Tensor*> gs;
    for (Parameter* p : ps) gs.push_back(&p->grad);
    comm.all_reduce_many(ctx, gs, ReduceOp::Mean, scratch);
  };
  auto pass = [&](const Tensor& x, const Tensor& y, Gradients g) {
    model.set_gradients(skip_unused_gradients ? g : Gradients::All);
    for (Parameter* p : w) ops::fill(ctx, p->grad, 0.0f);
    for (Parameter* p : a) ops::fill(ctx, p->grad, 0.0f);
    Tensor logits = model.forward(ctx, x, Mode::Train);
    Tensor dlogits = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, y, loss, dlogits, hits);
    model.backward(ctx, dlogits);
    if (g != Gradients::Architecture) average(w);
    if (g != Gradients::Operational) average(a);
  };

  const std::vector<Tensor> w0 = clones(ctx, w, false);
  // w' = w - xi (m buf + g + wd w), the weight optimizer's step without applying it.
  pass(x_train, y_train, Gradients::Operational);
  const SgdParams& hp = weights.hyper();
  for (size_t i = 0; i < w.size(); ++i) {
    Tensor d = w[i]->grad.clone(ctx);
    if (hp.weight_decay != 0.0f) ops::axpy(ctx, hp.weight_decay, w[i]->value, d);
    if (const Tensor* buf = weights.momentum_buffer(i)) ops::axpy(ctx, hp.momentum, *buf, d);
    ops::axpy(ctx, -xi, d, w[i]->value);
  }
  // At w': the direct architecture gradient and v = grad_w' L_val.
  pass(x_val, y_val, Gradients::All);
  const std::vector<Tensor> direct = clones(ctx, a, true);
  const std::vector<Tensor> v = clones(ctx, w, true);
  std::vector<const Tensor*> vs;
  for (const Tensor& t : v) vs.push_back(&t);
  Tensor norm = Tensor::empty(ctx, Shape{1});
  ops::global_norm(ctx, vs, norm);
  const float v_norm = norm.item();
  if (!std::isfinite(v_norm))
    throw DivergenceError(
        detail::cat("unrolled_architecture_gradient: the validation gradient "
                    "norm at the unrolled weights is ",
                    v_norm));

  std::vector<Tensor> plus, minus;
  float eps = 0.0f;
  if (v_norm > 0.0f && xi > 0.0f) {
    eps = 0.01f / v_norm;
    for (float sign : {1.0f, -1.0f}) {
      assign(ctx, w0, w);
      for (size_t i = 0; i < w.size(); ++i) ops::axpy(ctx, sign * eps, v[i], w[i]->value);
      pass(x_train, y_train, Gradients::Architecture);
      (sign > 0.0f ? plus : minus) = clones(ctx, a, true);
    }
  }
  assign(ctx, w0, w);
  for (size_t i = 0; i < a.size(); ++i) {
    ops::copy(ctx, direct[i], a[i]->grad);
    if (eps > 0.0f) {
      const float c = xi / (2.0f * eps);
      ops::axpy(ctx, -c, plus[i], a[i]->grad);
      ops::axpy(ctx, c, minus[i], a[i]->grad);
    }
  }
}

}  // namespace cudarts::darts
