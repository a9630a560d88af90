// Optimizers: parameter groups with their state, updated by one op call per step.
#include "cudarts/optim.h"

#include "cudarts/comm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "capture.h"
#include "cudarts/error.h"

namespace cudarts {

namespace {
uint32_t bits_of(float v) {
  uint32_t w;
  std::memcpy(&w, &v, sizeof w);
  return w;
}
}  // namespace

Optimizer::Optimizer(Context& ctx, std::vector<Parameter*> params, float lr)
    : params_(std::move(params)), lr_(lr) {
  std::set<const Parameter*> seen;
  for (Parameter* p : params_) {
    CUDARTS_CHECK(p != nullptr, "optimizer: null parameter in the group");
    CUDARTS_CHECK(p->value.device() == ctx.device(), "optimizer: parameter '", p->name, "' is ",
                  p->value.describe(), " but the context is on ", ctx.device().str());
    CUDARTS_CHECK(seen.insert(p).second, "optimizer: parameter '", p->name,
                  "' appears twice in the group (it would be stepped twice per step)");
  }
  set_lr(lr);
  masks_.assign(params_.size(), nullptr);
  // Gradients nothing else refers to move into one buffer, one after the other in group order
  // (their views keep it alive), so they form one run for gradient_runs().
  int64_t total = 0;
  for (Parameter* p : params_)
    if (p->grad.sole_handle()) total += p->grad.numel();
  if (total > 0) {
    const Tensor flat = Tensor::empty(ctx, Shape{total});
    int64_t off = 0;
    for (Parameter* p : params_) {
      if (!p->grad.sole_handle()) continue;
      Tensor home = flat.slice(off, off + p->grad.numel()).reshape(p->grad.shape());
      ops::copy(ctx, p->grad, home);
      off += p->grad.numel();
      p->grad = std::move(home);
    }
  }
  grad_norm_ = Tensor::zeros(ctx, Shape{1});
  clip_coef_ = Tensor::full(ctx, Shape{1}, 1.0f);
  step_values_ = Tensor::zeros(ctx, Shape{3});
}

Optimizer::~Optimizer() = default;

void Optimizer::set_lr(float lr) {
  CUDARTS_CHECK(lr >= 0.0f && std::isfinite(lr), "optimizer: learning rate ", lr,
                " must be finite and >= 0");
  lr_ = lr;
}

void Optimizer::set_grad_clip(float max_norm) {
  CUDARTS_CHECK(max_norm >= 0.0f, "optimizer: gradient clip ", max_norm, " must be >= 0");
  clip_ = max_norm;
}

void Optimizer::set_update_mask(const Parameter* p, const Tensor* mask) {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i] != p) continue;
    CUDARTS_CHECK(!mask || (mask->shape() == p->value.shape() && mask->dtype() == DType::F32 &&
                            mask->device() == p->value.device()),
                  "optimizer: the update mask of '", p->name, "' is ",
                  mask ? mask->describe() : std::string(), ", expected f32", p->value.shape(),
                  " on ", p->value.device().str());
    masks_[i] = mask;
    return;
  }
  CUDARTS_FAIL("optimizer: set_update_mask for a parameter ('", p ? p->name : "null",
               "') that is not in the group");
}

void Optimizer::add_hook(StepHook* hook) {
  CUDARTS_CHECK(hook != nullptr, "optimizer: null hook");
  hooks_.push_back(hook);
}

void Optimizer::step(Context& ctx) {
  if (ctx.capturing()) {
    CUDARTS_CHECK(last_capture_ != ctx.capture_state()->id,
                  "optimizer: step() called twice in one StepGraph capture; its learning rate "
                  "and step count are written once before each replay, so capture one step per "
                  "optimizer");
    last_capture_ = ctx.capture_state()->id;
  }
  ctx.per_step([this, &ctx] {
    ++step_count_;
    for (Parameter* p : params_) p->mark_changed();  // host bookkeeping, per replay too
    const std::vector<uint32_t> words = hyper_words();
    ops::set_words(ctx, step_values_, words);
  });
  // Data parallel: the group's gradients averaged over the ranks in one flat buffer, before
  // the hooks, clipping and the update see them (every rank then takes the same step).
  if (ctx.communicator().distributed()) {
    std::vector<Tensor> runs = gradient_runs();
    if (runs.size() == 1) {
      ctx.communicator().all_reduce(ctx, runs[0], ReduceOp::Mean);
    } else {
      std::vector<Tensor*> ptrs;
      for (Tensor& r : runs) ptrs.push_back(&r);
      ctx.communicator().all_reduce_many(ctx, ptrs, ReduceOp::Mean, comm_buffer_);
    }
  }
  for (StepHook* h : hooks_) h->before_step(ctx);
  const Tensor* scale = nullptr;
  if (clip_ > 0.0f || skip_nonfinite_) {
    std::vector<const Tensor*> grads;
    for (Parameter* p : params_) grads.push_back(&p->grad);
    ops::global_norm(ctx, grads, grad_norm_);
    ops::clip_coefficient(
        ctx, grad_norm_, clip_ > 0.0f ? clip_ : std::numeric_limits<float>::infinity(), clip_coef_);
    scale = &clip_coef_;
  }
  update(ctx, scale);
  for (StepHook* h : hooks_) h->after_step(ctx);
}

void Optimizer::zero_grad(Context& ctx) {
  for (Tensor& run : gradient_runs()) ops::fill(ctx, run, 0.0f);
}

// The group's gradients as runs of memory, derived from where they live now: gradients that lie
// one after the other, in group order, form one run (a borrowed flat view; the gradients keep
// the memory alive). The moved gradients are one run, a SearchModel's alpha views another; a
// gradient replaced after construction simply ends up in a run of its own.
std::vector<Tensor> Optimizer::gradient_runs() const {
  std::vector<Tensor> runs;
  size_t i = 0;
  while (i < params_.size()) {
    const Tensor& first = params_[i]->grad;
    const char* end = static_cast<const char*>(first.raw()) + first.nbytes();
    size_t j = i + 1;
    for (; j < params_.size(); ++j) {
      const Tensor& g = params_[j]->grad;
      if (g.raw() != end || g.dtype() != first.dtype() || g.device() != first.device()) break;
      end += g.nbytes();
    }
    const int64_t bytes = end - static_cast<const char*>(first.raw());
    if (bytes > 0)
      runs.push_back(j == i + 1 ? first.share()
                                : Tensor::wrap(first.raw(),
                                               Shape{bytes / int64_t(dtype_size(first.dtype()))},
                                               first.dtype(), first.device()));
    i = j;
  }
  return runs;
}

SGD::SGD(Context& ctx, std::vector<Parameter*> params, SgdParams hyper)
    : Optimizer(ctx, std::move(params), hyper.lr), hyper_(hyper) {
  for (Parameter* p : params_)
    momentum_.push_back(hyper.momentum > 0.0f ? Tensor::zeros(ctx, p->value.shape()) : Tensor());
}

const Tensor* SGD::momentum_buffer(size_t i) const {
  CUDARTS_CHECK(i < momentum_.size(), "SGD::momentum_buffer: index ", i, " out of range [0, ",
                momentum_.size(), ")");
  return momentum_[i].defined() ? &momentum_[i] : nullptr;
}

std::vector<uint32_t> SGD::hyper_words() const {
  return {bits_of(lr_)};
}

void SGD::update(Context& ctx, const Tensor* grad_scale) {
  hyper_.lr = lr_;
  std::vector<OptimSlot> slots;
  slots.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    slots.push_back({&params_[i]->value, &params_[i]->grad,
                     momentum_[i].defined() ? &momentum_[i] : nullptr, nullptr, masks_[i]});
  ops::sgd_step(ctx, slots, hyper_, grad_scale, &step_values_);
}

std::vector<std::pair<std::string, Tensor*>> SGD::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < momentum_.size(); ++i)
    if (momentum_[i].defined()) out.emplace_back("momentum." + std::to_string(i), &momentum_[i]);
  return out;
}

Adam::Adam(Context& ctx, std::vector<Parameter*> params, AdamParams hyper)
    : Optimizer(ctx, std::move(params), hyper.lr), hyper_(hyper) {
  for (Parameter* p : params_) {
    m_.push_back(Tensor::zeros(ctx, p->value.shape()));
    v_.push_back(Tensor::zeros(ctx, p->value.shape()));
  }
}

std::vector<uint32_t> Adam::hyper_words() const {
  AdamParams p = hyper_;
  p.lr = lr_;
  p.step = step_count();
  const std::array<float, 3> v = ops::adam_hyper(p);
  return {bits_of(v[0]), bits_of(v[1]), bits_of(v[2])};
}

void Adam::update(Context& ctx, const Tensor* grad_scale) {
  hyper_.lr = lr_;
  hyper_.step = std::max<int64_t>(1, step_count());
  std::vector<OptimSlot> slots;
  slots.reserve(params_.size());
  for (size_t i = 0; i < params_.size(); ++i)
    slots.push_back({&params_[i]->value, &params_[i]->grad, &m_[i], &v_[i], masks_[i]});
  ops::adam_step(ctx, slots, hyper_, grad_scale, &step_values_);
}

std::vector<std::pair<std::string, Tensor*>> Adam::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < m_.size(); ++i) {
    out.emplace_back("exp_avg." + std::to_string(i), &m_[i]);
    out.emplace_back("exp_avg_sq." + std::to_string(i), &v_[i]);
  }
  return out;
}

CosineSchedule::CosineSchedule(float lr_max, float lr_min, int64_t total_steps,
                               int64_t warmup_steps)
    : lr_max_(lr_max), lr_min_(lr_min), total_(total_steps), warmup_(warmup_steps) {
  CUDARTS_CHECK(total_steps >= 1, "CosineSchedule: total_steps ", total_steps, " must be >= 1");
  CUDARTS_CHECK(warmup_steps >= 0 && warmup_steps < total_steps, "CosineSchedule: warmup_steps ",
                warmup_steps, " must be in [0, total_steps = ", total_steps, ")");
  CUDARTS_CHECK(lr_min >= 0.0f && lr_max >= lr_min, "CosineSchedule: need 0 <= lr_min (", lr_min,
                ") <= lr_max (", lr_max, ")");
}

float CosineSchedule::lr(int64_t step) const {
  if (step < warmup_) return lr_max_ * float(step + 1) / float(warmup_);
  const double t = double(std::min(step, total_) - warmup_) / double(total_ - warmup_);
  const double pi = 3.14159265358979323846;
  return static_cast<float>(lr_min_ + 0.5 * (lr_max_ - lr_min_) * (1.0 + std::cos(pi * t)));
}

}  // namespace cudarts
