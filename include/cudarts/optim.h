// Optimizers over a group of parameters (e.g. the architecture group and the operational
// group of a SearchModel, each with its own optimizer). One fused op call updates the whole
// group per step. Optional global-norm gradient clipping runs on the device (no host read).
// Step hooks run just before and after the update (the ProxylessNAS rescale is one).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "cudarts/layer.h"
#include "cudarts/ops.h"

namespace cudarts {

class StepHook {
 public:
  virtual ~StepHook() = default;
  virtual void before_step(Context&) {}
  virtual void after_step(Context&) {}
};

class Optimizer {
 public:
  // The group's gradients move into one flat buffer (in group order): zero_grad is then one
  // fill and a data-parallel step one collective with no packing. Only gradients that nothing
  // else refers to move (sole_handle()); views such as a SearchModel's shared alpha gradients
  // stay where they are. zero_grad and the reduction work on runs of adjacent gradients, found
  // where the gradients live at the time, so a Parameter::grad replaced later is followed.
  Optimizer(Context& ctx, std::vector<Parameter*> params, float lr);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // step_count() + 1 and the step's learning rate / bias corrections written to the device
  // (host work, through Context::per_step: inside a StepGraph it runs before every replay),
  // then (several ranks: ctx.communicator()) the gradients averaged over the ranks, then
  // before-hooks, clipping coefficient, fused update, after-hooks. Capturable; at most
  // one step per optimizer in one captured graph.
  void step(Context& ctx);
  void zero_grad(Context& ctx);

  float lr() const { return lr_; }
  void set_lr(float lr);
  // Clip the global gradient norm of the group to max_norm (0 disables).
  void set_grad_clip(float max_norm);
  // true: a step whose gradient norm is not finite changes nothing (parameters and state stay;
  // the step count still advances) instead of writing NaN or infinity into them. The norm is
  // then computed every step (two small launches when clipping is off). With clipping on, such
  // steps are skipped either way (clip_coefficient gives 0).
  void set_skip_nonfinite(bool skip) { skip_nonfinite_ = skip; }
  // The group's gradient norm from the last step with clipping on, (1) on the device.
  const Tensor& last_grad_norm() const { return grad_norm_; }
  // Hooks are not owned and must outlive the optimizer's use.
  void add_hook(StepHook* hook);
  // Elements of p where *mask == 0 are left as they are by every step (the parameter and its
  // optimizer state); the mask (p's shape, on the device) is read at each step, so a hook may
  // rewrite it in before_step. nullptr removes it. Not owned.
  void set_update_mask(const Parameter* p, const Tensor* mask);
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t n) { step_count_ = n; }
  const std::vector<Parameter*>& params() const { return params_; }
  // Per-parameter state tensors with stable names (for checkpoints).
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;

 protected:
  virtual void update(Context& ctx, const Tensor* grad_scale) = 0;
  // The per-step values the update reads from step_values_ (as 32-bit words).
  virtual std::vector<uint32_t> hyper_words() const = 0;
  std::vector<Parameter*> params_;
  std::vector<const Tensor*> masks_;  // per parameter, nullptr: no mask
  float lr_;
  Tensor step_values_;  // on the device: lr (SGD); lr, 1 - beta1^t, 1 - beta2^t (Adam)

 private:
  float clip_ = 0.0f;
  bool skip_nonfinite_ = false;
  std::vector<StepHook*> hooks_;
  int64_t step_count_ = 0;
  Tensor grad_norm_, clip_coef_;
  Tensor comm_buffer_;  // packing buffer of data-parallel steps with several gradient runs
  std::vector<Tensor> gradient_runs() const;
  uint64_t last_capture_ = 0;  // the capture that holds this optimizer's step (its id)
};

class SGD final : public Optimizer {
 public:
  SGD(Context& ctx, std::vector<Parameter*> params, SgdParams hyper);
  const SgdParams& hyper() const { return hyper_; }
  // The momentum buffer of parameter i (in params() order); nullptr without momentum.
  const Tensor* momentum_buffer(size_t i) const;
  std::vector<std::pair<std::string, Tensor*>> state() override;

 protected:
  void update(Context& ctx, const Tensor* grad_scale) override;
  std::vector<uint32_t> hyper_words() const override;

 private:
  SgdParams hyper_;
  std::vector<Tensor> momentum_;
};

// Adam, or AdamW when hyper.decoupled is true. hyper.step is managed by the optimizer.
class Adam final : public Optimizer {
 public:
  Adam(Context& ctx, std::vector<Parameter*> params, AdamParams hyper);
  const AdamParams& hyper() const { return hyper_; }
  std::vector<std::pair<std::string, Tensor*>> state() override;

 protected:
  void update(Context& ctx, const Tensor* grad_scale) override;
  std::vector<uint32_t> hyper_words() const override;

 private:
  AdamParams hyper_;
  std::vector<Tensor> m_, v_;
};

inline AdamParams adamw_params(float lr, float weight_decay) {
  AdamParams p;
  p.lr = lr;
  p.weight_decay = weight_decay;
  p.decoupled = true;
  return p;
}

// Cosine annealing from lr_max to lr_min over total_steps, after an optional linear warm-up
// (lr rises from lr_max / warmup_steps to lr_max over warmup_steps).
class CosineSchedule {
 public:
  CosineSchedule(float lr_max, float lr_min, int64_t total_steps, int64_t warmup_steps = 0);
  float lr(int64_t step) const;

 private:
  float lr_max_, lr_min_;
  int64_t total_, warmup_;
};

}  // namespace cudarts
