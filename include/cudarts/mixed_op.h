// The MixedOp collection (DESIGN.md section 3): K candidate layers (any layer or sub-graph)
// and architecture logits alpha (K), initialised 1e-3 * N(0, 1) from the context's seed.
//
// Deterministic call (derived architecture): y = sum of the top-num_on candidates by alpha.
// Stochastic call (search), p = softmax(alpha):
//   Continuous    y = sum_i p_i op_i(x); every op gets p_i dy; g_i = <dy, op_i(x)>.
//   Binary        S_on = num_on Gumbel-top-k draws; y = sum_{S_on} op_i(x). In backward
//                 every other op is evaluated (Mode::Probe: batch statistics, no running
//                 statistics update, nothing kept, no weight gradient) just to score it.
//   BinaryMasked  only E = S_on + (num_eval - num_on) further draws are scored; g = 0 outside.
//   ProxylessNAS  as Masked; dalpha only for E through the softmax restricted to E, and an
//                 architecture-optimizer hook rescales alpha_E after each step so that
//                 sum_E exp(alpha) is unchanged.
//   MovingAverage as Masked; m_i tracks the batch-mean output of op i (lr); the scores use
//                 g_i = <sum_batch dy, estimate_i> with estimate = this batch's mean for E
//                 and m_i otherwise.
// All types: dalpha += softmax-backward(g) (restricted to E for ProxylessNAS).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "cudarts/layer.h"
#include "cudarts/optim.h"

namespace cudarts {

enum class MixedOpType { Continuous, Binary, BinaryMasked, ProxylessNAS, MovingAverage };
const char* mixed_op_type_name(MixedOpType t);
// "continuous", "binary", "masked", "proxyless", "moving-average" (CLI spelling).
MixedOpType parse_mixed_op_type(const std::string& s);

enum class Sampling { Stochastic, Deterministic };

struct MixedOpConfig {
  MixedOpType type = MixedOpType::Continuous;
  int num_on = 1;       // k_on: ops kept in the derived architecture, 1 <= k_on <= K
  int num_eval = 0;     // k_eval (Masked, ProxylessNAS, MovingAverage): k_on <= k_eval <= K
  float ma_lr = 0.01f;  // MovingAverage: in (0, 1]
  // MixedOps with the same non-empty group share one alpha inside a SearchModel (DARTS shares
  // each edge's alpha among all normal cells, and among all reduction cells).
  std::string alpha_group;
};

class MixedOp : public Layer, public StepHook {
 public:
  MixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> candidates,
          MixedOpConfig config);
  ~MixedOp() override;
  const char* type() const override;
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

  // A ranking drawn for this op outside (SearchModel draws every MixedOp in one launch):
  // `host` is the ranking on the host, a permutation of 0 .. K-1 (checked), `device` the same K
  // indices (i32) on the device. Used by the next stochastic forward, then cleared.
  void set_ranking(std::vector<int> host, Tensor device);
  // The sets of the last stochastic forward (for inspection and tests).
  const std::vector<int>& last_on() const { return last_on_; }
  const std::vector<int>& last_eval() const { return last_eval_; }
  // The scores g (K) of the last backward (on the device); undefined when that pass computed
  // none (alpha.requires_grad was false at its forward; MovingAverage always scores).
  const Tensor& last_scores() const { return g_; }
  // MovingAverage: the running estimates m (K, per-sample shape); undefined before the first
  // training step.
  const Tensor& moving_averages() const { return ma_; }
  // Restores the estimates (K, per-sample size), e.g. from a checkpoint.
  void set_moving_averages(Tensor m);

  // ProxylessNAS: the ranking (on the device) whose first num_eval entries are the set E of
  // the last backward that computed an alpha gradient and that no architecture step has
  // consumed yet; nullptr when there is none. clear_pending_eval_set() consumes it.
  const Tensor* pending_eval_set() const { return hook_pending_ ? &hook_ranking_ : nullptr; }
  void clear_pending_eval_set() { hook_pending_ = false; }

  // StepHook (ProxylessNAS, the reference update: SearchModel attaches it with
  // ProxylessUpdate::Reference): rescales this op's E after the architecture step.
  void before_step(Context& ctx) override;
  void after_step(Context& ctx) override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  void release_saved_impl() override;

 private:
  int num_eval_effective() const;
  void draw_ranking(Context& ctx);
  Tensor forward_continuous(Context& ctx, const Tensor& x, Mode mode);
  Tensor forward_sum(Context& ctx, const Tensor& x, Mode mode, const std::vector<int>& ops);
  Tensor backward_continuous(Context& ctx, const Tensor& dy);
  Tensor backward_binary(Context& ctx, const Tensor& dy);
  // Binary types: the scores g of every op in E (probing those outside S_on), the moving
  // averages, and dalpha when alpha wants a gradient.
  void score_binary(Context& ctx, const Tensor& dy);

  MixedOpConfig config_;
  std::vector<std::unique_ptr<Layer>> candidates_;
  Parameter* alpha_ = nullptr;
  Sampling sampling_ = Sampling::Stochastic;
  std::vector<int> derived_cache_;  // the ops of deterministic calls (empty: derive again)
  uint64_t derived_version_ = 0;    // alpha's version when derived_cache_ was derived

  // Ranking for the next / current stochastic step.
  std::vector<int> ranking_host_;
  Tensor ranking_dev_;
  bool ranking_ready_ = false;
  std::vector<int> last_on_, last_eval_;

  // Saved by a Train forward for backward.
  Tensor x_, probs_, g_;
  std::vector<Tensor> outputs_;  // Continuous: all K; Binary types: the S_on outputs
  std::vector<int> active_;      // ops whose activations are kept (get dy in backward)
  bool deterministic_pass_ = false;
  bool saved_ = false;
  bool grad_alpha_ = true;     // alpha.requires_grad at the last Train forward
  bool scores_wanted_ = true;  // that pass computes the scores g (keeps their inputs)

  Tensor ma_, mu_;       // MovingAverage state (K, S) and this batch's means
  Tensor lse_old_;       // ProxylessNAS: log-sum-exp of alpha_E before the step
  Tensor hook_ranking_;  // ProxylessNAS: E of the last backward
  bool hook_pending_ = false;
};

// The five types under the seed's names and argument order.
class ContinuousMixedOp final : public MixedOp {
 public:
  ContinuousMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                    int num_on = 1);
};
class BinaryMixedOp final : public MixedOp {
 public:
  BinaryMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                int num_on = 1);
};
class BinaryMaskedMixedOp final : public MixedOp {
 public:
  BinaryMaskedMixedOp(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> ops,
                      int num_eval, int num_on = 1);
};
class BinaryProxylessNASStyleMixedOp final : public MixedOp {
 public:
  BinaryProxylessNASStyleMixedOp(Context& ctx, std::string name,
                                 std::vector<std::unique_ptr<Layer>> ops, int num_eval,
                                 int num_on = 1);
};
class BinaryMovingAverageMixedOp final : public MixedOp {
 public:
  BinaryMovingAverageMixedOp(Context& ctx, std::string name,
                             std::vector<std::unique_ptr<Layer>> ops, int num_eval, int num_on,
                             float learning_rate);
};

// Makes a MixedOp of any type from a config.
std::unique_ptr<MixedOp> make_mixed_op(Context& ctx, std::string name,
                                       std::vector<std::unique_ptr<Layer>> candidates,
                                       MixedOpConfig config);

}  // namespace cudarts
