// The MixedOp collection (docs/DESIGN.md section 3): K candidate layers (any layer or sub-graph)
// and architecture logits alpha (K), initialised 1e-3 * N(0, 1) from the context's seed.
//
// Deterministic call (derived architecture): y = sum of the top-num_on candidates by alpha.
// Stochastic call (search), p = softmax(alpha), one method per class:
//   Continuous    y = sum_i p_i op_i(x); every op gets p_i dy; g_i = <dy, op_i(x)>.
//   Binary        S_on = num_on Gumbel-top-k draws; y = sum_{S_on} op_i(x). In backward
//                 every other op is evaluated (Mode::Probe: batch statistics, no running
//                 statistics update, nothing kept, no weight gradient) just to score it.
//   BinaryMasked  only E = S_on + (num_eval - num_on) further draws are scored; g = 0 outside.
//   ProxylessNAS  as Masked; dalpha only for E through the softmax restricted to E; the
//                 architecture step touches only E and keeps sum_E exp(alpha) (SearchModel).
//   MovingAverage as Masked; m_i tracks the batch-mean output of op i (lr); the scores use
//                 g_i = <sum_batch dy, estimate_i> with estimate = this batch's mean for E
//                 and m_i otherwise.
// All: dalpha += softmax-backward(g) (restricted to E for ProxylessNAS).
//
// A method is a subclass of MixedOp (one source file each, src/nas/methods/) that implements
// the stochastic forward and backward and says what it needs (samples(), capturable(), ...);
// mixed_op_methods() is the registry of CLI names, make_mixed_op() builds one by name.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/layer.h"
#include "cudarts/optim.h"

namespace cudarts {

enum class Sampling { Stochastic, Deterministic };

struct MixedOpConfig {
  // The method's CLI name: "continuous", "binary", "masked", "proxyless", "moving-average"
  // (mixed_op_methods() lists them all).
  std::string method = "continuous";
  int num_on = 1;       // k_on: ops kept in the derived architecture, 1 <= k_on <= K
  int num_eval = 0;     // k_eval (masked, proxyless, moving-average): k_on <= k_eval <= K
  float ma_lr = 0.01f;  // moving-average: in (0, 1]
  // MixedOps with the same non-empty group share one alpha inside a SearchModel (DARTS shares
  // each edge's alpha among all normal cells, and among all reduction cells).
  std::string alpha_group;
  // gdas: the Gumbel-softmax temperature, annealed linearly from tau_max (search start) to
  // tau_min (last epoch) by set_search_progress.
  float tau_max = 10.0f, tau_min = 0.1f;
  // continuous: candidates that end in an affine-free BatchNorm2d (Layer::trailing_norm) are
  // normalised inside the mix in Train and Probe passes (ops::mix_norm_fwd / mix_norm_bwd): the
  // same numbers (bit for bit on the CPU), no normalised output written. false: every candidate
  // runs its own BatchNorm (the comparison darts_bench --fuse-norm false makes).
  bool fuse_norm = true;
  // continuous: the candidates that start with a depthwise Conv2d (Layer::leading_conv) and come
  // after every other non-Zero candidate have those convolutions computed in one op (the edge's
  // input read once, ops::depthwise_group_fwd), their filter gradients in another
  // (ops::depthwise_group_bwd_filter) and their input gradient summed with the other
  // candidates' in a third (ops::depthwise_group_bwd_data): the same numbers, bit for bit.
  // false: each candidate runs its own (darts_bench --fuse-lead false).
  bool fuse_lead = true;
};

// Where a ranking's Gumbel noise came from: gumbel_rank's seed and offset and the index of the
// op's first logit in what it ranked.
struct GumbelDraw {
  uint64_t seed = 0, offset = 0;
  int64_t first = 0;
};

// Architecture gradients of several MixedOps' backward passes, applied in one
// ops::arch_grad_many in the order they were added (SearchModel::backward collects the
// MixedOps' gradients in one, instead of one arch_grad launch per MixedOp).
class ArchGradBatch {
 public:
  // dalpha += softmax-backward(g) at the next flush; alpha and g are held until then.
  void add(const Tensor& alpha, const Tensor& g, Tensor& dalpha);
  void flush(Context& ctx);  // applies the added rows in order and empties the batch
  void clear();              // drops the rows without applying them
  bool empty() const { return dalphas_.empty(); }

 private:
  std::vector<Tensor> alphas_, gs_;
  std::vector<Tensor*> dalphas_;
};

class MixedOp : public Layer {
 public:
  ~MixedOp() override;
  // The method's class name, e.g. "ContinuousMixedOp" (the seed's names).
  const char* type() const override { return type_name_; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;

  const MixedOpConfig& config() const { return config_; }
  int num_candidates() const { return int(candidates_.size()); }
  Layer& candidate(int i) { return *candidates_.at(size_t(i)); }
  Parameter& alpha() { return *alpha_; }

  // Deterministic: the derived ops (top-num_on of alpha, read once from the device) run; they
  // are derived again on the next forward after every change of alpha made through cudarts
  // (alpha().version: optimizer steps, loads) and after every set_sampling(Deterministic).
  void set_sampling(Sampling s);
  Sampling sampling() const { return sampling_; }
  // softmax(alpha) and the derived top-num_on indices (reads alpha to the host).
  std::vector<float> probabilities() const;
  std::vector<int> derived() const;

  // What the method needs from the code around it (no code outside the methods asks which
  // method a MixedOp is):
  // samples(): each stochastic forward uses a ranking of the candidates drawn on the host
  // (SearchModel::sample draws every MixedOp's in one launch, or the op draws its own).
  virtual bool samples() const { return false; }
  // capturable(): a stochastic step can be captured in a StepGraph (host decisions fixed).
  virtual bool capturable() const { return !samples(); }
  // second_order(): the same ops run in every pass, as unrolled_architecture_gradient needs.
  virtual bool second_order() const { return false; }
  // restricted_update(): the architecture step may change only the entries of alpha this op
  // evaluated (the ProxylessNAS update); pending_eval_set() is the ranking whose first
  // eval_set_size() entries are that set, from the last backward not yet consumed by a step.
  virtual bool restricted_update() const { return false; }
  virtual const Tensor* pending_eval_set() const { return nullptr; }
  virtual int eval_set_size() const { return num_candidates(); }
  virtual void clear_pending_eval_set() {}
  // How far the search is, 0 at its first epoch and 1 at its last (schedules such as GDAS's
  // temperature); the default ignores it.
  virtual void set_search_progress(double /*fraction*/) {}
  // A hook for the architecture optimizer in the seed's (reference) update, or nullptr.
  virtual StepHook* reference_update_hook() { return nullptr; }
  // State beyond alpha that a checkpoint holds ({key, tensor}; undefined tensors are not
  // saved yet) and its restore (a tensor of the saved shape).
  virtual std::vector<std::pair<std::string, const Tensor*>> state() const { return {}; }
  virtual void set_state(const std::string& key, Tensor value);

  // A ranking drawn for this op outside (SearchModel draws every MixedOp in one launch):
  // `host` is the ranking on the host, a permutation of 0 .. K-1 (checked), `device` the same K
  // indices (i32) on the device. Used by the next stochastic forward, then cleared.
  // `draw` says where the ranking's Gumbel noise came from, for methods that reuse the noise
  // (GDAS's soft sample).
  void set_ranking(std::vector<int> host, Tensor device, GumbelDraw draw = {});
  // The sets of the last stochastic forward of a sampling method (for inspection and tests).
  const std::vector<int>& last_on() const { return last_on_; }
  const std::vector<int>& last_eval() const { return last_eval_; }
  // The scores g (K) of the last backward (on the device); undefined when that pass computed
  // none (alpha.requires_grad was false at its forward, and the method needs none then).
  const Tensor& last_scores() const { return g_; }

  // What SearchModel does for all its MixedOps at once. uses_probabilities(): the method's
  // stochastic forward reads softmax(alpha); set_pass_probabilities gives it the value for the
  // next forward (computed with every other MixedOp's in one ops::softmax_many; used once, an
  // undefined tensor clears it). set_arch_grad_batch: while set, the op's backward adds its
  // architecture gradient to `batch` instead of launching arch_grad (nullptr: launch).
  virtual bool uses_probabilities() const { return false; }
  void set_pass_probabilities(Tensor probs);
  void set_arch_grad_batch(ArchGradBatch* batch) { arch_grad_batch_ = batch; }

 protected:
  MixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> candidates,
          MixedOpConfig config, const char* type_name);

  // The method: the stochastic (search) forward, which sets active_ (the ops that get dy in
  // backward) and saved_ in Mode::Train, and its backward, which returns dx.
  virtual Tensor search_forward(Context& ctx, const Tensor& x, Mode mode) = 0;
  virtual Tensor search_backward(Context& ctx, const Tensor& dy) = 0;
  // true: the method computes its scores even when alpha wants no gradient (moving averages).
  virtual bool scores_without_alpha_gradient() const { return false; }
  void release_saved_impl() override;

  // Helpers for the methods.
  // softmax(alpha) for this forward: the pass's probabilities when set, else computed now.
  Tensor take_probabilities(Context& ctx);
  // dalpha += softmax-backward(g) (arch_grad without a ranking): into the batch when one is set,
  // else at once.
  void add_arch_grad(Context& ctx, const Tensor& g);
  // y = sum of the ops' outputs (forward in `mode`); keeps them in outputs_ when `keep`.
  Tensor forward_sum(Context& ctx, const Tensor& x, Mode mode, const std::vector<int>& ops,
                     bool keep);
  // dx = sum of the backward of the ops in active_, each given dy.
  Tensor backward_active(Context& ctx, const Tensor& dy);
  // The ranking for this stochastic forward: the one set from outside, or one drawn now.
  void take_ranking(Context& ctx);
  bool grad_alpha() const { return grad_alpha_; }        // alpha.requires_grad at the forward
  bool scores_wanted() const { return scores_wanted_; }  // this pass computes the scores

  MixedOpConfig config_;
  std::vector<std::unique_ptr<Layer>> candidates_;
  Parameter* alpha_ = nullptr;
  std::vector<int> ranking_host_;  // the current ranking (sampling methods)
  Tensor ranking_dev_;
  GumbelDraw draw_;  // where ranking_'s noise came from
  std::vector<int> last_on_, last_eval_;
  // Saved by a Train forward for backward.
  Tensor x_, probs_, g_;
  std::vector<Tensor> outputs_;
  std::vector<int> active_;
  bool saved_ = false;

 private:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) final;
  Tensor backward_impl(Context& ctx, const Tensor& dy) final;

  const char* type_name_;
  Sampling sampling_ = Sampling::Stochastic;
  std::vector<int> derived_cache_;  // the ops of deterministic calls (empty: derive again)
  uint64_t derived_version_ = 0;    // alpha's version when derived_cache_ was derived
  bool ranking_ready_ = false;
  Tensor pass_probs_;                         // set_pass_probabilities, for the next forward
  ArchGradBatch* arch_grad_batch_ = nullptr;  // set_arch_grad_batch
  bool deterministic_pass_ = false;
  bool grad_alpha_ = true;
  bool scores_wanted_ = true;
};

// DARTS: the softmax-weighted sum of all K candidates.
class ContinuousMixedOp final : public MixedOp {
 public:
  ContinuousMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                    int num_on = 1);
  ContinuousMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                    const MixedOpConfig& config);
  bool second_order() const override { return true; }

 protected:
  Tensor search_forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor search_backward(Context& ctx, const Tensor& dy) override;
  void release_saved_impl() override;
  bool uses_probabilities() const override { return true; }

 private:
  // Saved by a Train forward that normalised candidates inside the mix: which ones (their
  // entries of outputs_ are then their pre-norm values z_i) and their statistics (K, C).
  std::vector<bool> normed_;
  Tensor mean_, invstd_;
  // Saved by a Train forward that ran leading convolutions as a group: which candidates (their
  // backward_partial gives the gradient of the convolution's output), the edge's input (the
  // ReLU's mask) and the convolutions.
  std::vector<bool> led_;
  Tensor lead_x_;
  std::vector<Conv2d*> lead_convs_;
  // The candidates whose leading convolutions run as a group in this pass (fuse_lead).
  std::vector<bool> lead_group(const Tensor& x);
};

// The sampling methods' common pass: S_on from the ranking runs, the ops of the evaluation set
// E (the first eval_set_size() of the ranking) are scored in backward, probing those outside
// S_on; compute_scores and alpha_gradient are what the methods change.
class SampledMixedOp : public MixedOp {
 public:
  bool samples() const override { return true; }
  int eval_set_size() const override;

 protected:
  using MixedOp::MixedOp;
  Tensor search_forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor search_backward(Context& ctx, const Tensor& dy) override;
  // g (K, zeros) <- the scores of E (Binary, Masked: <dy, op_i(x)>, probing outside S_on).
  virtual void compute_scores(Context& ctx, const Tensor& dy, Tensor& g);
  // dalpha += softmax-backward(g) over all K.
  virtual void alpha_gradient(Context& ctx);
  // Checks num_eval for the methods that score a subset: num_on <= num_eval <= K (min_eval).
  void check_num_eval(int min_eval) const;
};

// BinaryConnect + the ProxylessNAS memory trick: S_on sampled, every op scored.
class BinaryMixedOp final : public SampledMixedOp {
 public:
  BinaryMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                int num_on = 1);
  BinaryMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                const MixedOpConfig& config);
  int eval_set_size() const override { return num_candidates(); }
};

// As Binary, scoring only num_eval ops.
class BinaryMaskedMixedOp final : public SampledMixedOp {
 public:
  BinaryMaskedMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                      int num_eval, int num_on = 1);
  BinaryMaskedMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                      const MixedOpConfig& config);
};

// ProxylessNAS: gradients for alpha_E only; the architecture step keeps sum_E exp(alpha)
// (SearchModel::attach_architecture_optimizer). The op is also the StepHook of the seed's
// reference update (rescales its own E after each step).
class BinaryProxylessNASStyleMixedOp final : public SampledMixedOp, public StepHook {
 public:
  BinaryProxylessNASStyleMixedOp(Context& ctx, std::string name,
                                 std::vector<std::unique_ptr<Layer>> ops, int num_eval,
                                 int num_on = 1);
  BinaryProxylessNASStyleMixedOp(Context& ctx, std::string name,
                                 std::vector<std::unique_ptr<Layer>> ops,
                                 const MixedOpConfig& config);
  bool restricted_update() const override { return true; }
  const Tensor* pending_eval_set() const override { return pending_ ? &eval_ranking_ : nullptr; }
  void clear_pending_eval_set() override { pending_ = false; }
  StepHook* reference_update_hook() override { return this; }
  void before_step(Context& ctx) override;
  void after_step(Context& ctx) override;

 protected:
  void alpha_gradient(Context& ctx) override;

 private:
  Tensor eval_ranking_;  // E of the last backward (the ranking; its first num_eval entries)
  Tensor lse_old_;       // reference update: log-sum-exp of alpha_E before the step
  bool pending_ = false;
};

// Moving-average scores: m_i tracks the batch-mean output of op i.
class BinaryMovingAverageMixedOp final : public SampledMixedOp {
 public:
  BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, int num_eval, int num_on,
                             float learning_rate);
  BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, const MixedOpConfig& config);
  // The running estimates m (K, per-sample size); undefined before the first training step.
  const Tensor& moving_averages() const { return ma_; }
  void set_moving_averages(Tensor m);
  std::vector<std::pair<std::string, const Tensor*>> state() const override;
  void set_state(const std::string& key, Tensor value) override;

 protected:
  bool scores_without_alpha_gradient() const override { return true; }
  void compute_scores(Context& ctx, const Tensor& dy, Tensor& g) override;

 private:
  Tensor ma_, mu_;  // estimates (K, S) and this batch's means
};

// GDAS (Dong and Yang, CVPR 2019): per step one op, the argmax of a Gumbel-softmax sample
// s = softmax((log_softmax(alpha) + G) / tau), runs (hard one-hot forward: y = op_k(x), only
// its activations kept); the straight-through gradient reaches alpha through the soft sample:
// dL/ds_k = <dy, op_k(x)>, dL/ds_i = 0 otherwise, then through the softmax (gumbel_softmax_bwd).
// tau anneals linearly from config.tau_max to tau_min over the search (set_search_progress).
class GdasMixedOp final : public MixedOp {
 public:
  GdasMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
              const MixedOpConfig& config);
  bool samples() const override { return true; }
  int eval_set_size() const override { return 1; }
  void set_search_progress(double fraction) override;
  float temperature() const { return tau_; }
  // The soft sample of the last Train forward (K), undefined when alpha wanted no gradient.
  const Tensor& last_soft_sample() const { return soft_; }

 protected:
  Tensor search_forward(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor search_backward(Context& ctx, const Tensor& dy) override;

 private:
  float tau_;
  Tensor soft_;
};

// The registry of methods: CLI name, class name, and how to build one from a config.
struct MixedOpMethod {
  std::string name;       // "continuous", ...
  std::string type_name;  // "ContinuousMixedOp", ...
  std::function<std::unique_ptr<MixedOp>(Context&, std::string, std::vector<std::unique_ptr<Layer>>,
                                         const MixedOpConfig&)>
      make;
};
const std::vector<MixedOpMethod>& mixed_op_methods();
// The registered method called `name`; a ConfigError listing the methods otherwise.
const MixedOpMethod& mixed_op_method(const std::string& name);
// The class name of a method ("continuous" -> "ContinuousMixedOp").
const char* mixed_op_type_name(const std::string& method);

// Makes a MixedOp of config.method.
std::unique_ptr<MixedOp> make_mixed_op(Context& ctx, std::string name,
                                       std::vector<std::unique_ptr<Layer>> candidates,
                                       MixedOpConfig config);

}  // namespace cudarts
