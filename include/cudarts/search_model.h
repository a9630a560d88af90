// SearchModel (the seed's ArchitectureSearchModel): a network holding MixedOps, with the
// architecture parameters (every alpha) separated from the operational ones (everything
// else), one-launch sampling of every MixedOp, and an architecture summary as text or JSON.
// All alphas are stored in one device buffer (each MixedOp's alpha is a view of it), so
// sampling and the architecture optimizer touch one contiguous tensor. MixedOps with the same
// MixedOpConfig::alpha_group share one slice (and one architecture parameter); each still
// draws its own samples.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/mixed_op.h"
#include "cudarts/optim.h"

namespace cudarts {

// Which parameter groups a pass computes gradients for (SearchModel::set_gradients).
enum class Gradients { All, Operational, Architecture, None };

// How the architecture optimizer updates the alphas of ProxylessNAS MixedOps.
// Exact (default): the step touches only the evaluated entries (the union U of the sets E of
// the MixedOps sharing an alpha), their optimizer state included, and rescales alpha_U so that
// sum_U exp(alpha) is unchanged: the probabilities of every op outside U stay exactly as they
// were, with Adam's momentum and weight decay too.
// Reference: the step updates every entry (momentum and weight decay move entries outside E
// from the second step on) and each MixedOp rescales its own E afterwards, as in the seed.
enum class ProxylessUpdate { Exact, Reference };

class SearchModel {
 public:
  SearchModel(Context& ctx, std::unique_ptr<Layer> network);
  SearchModel(const SearchModel&) = delete;
  SearchModel& operator=(const SearchModel&) = delete;

  Layer& network() { return *net_; }
  // Stochastic: every MixedOp samples (one launch and one host read for all of them).
  // Deterministic: every MixedOp runs its derived top-num_on ops.
  Tensor forward(Context& ctx, const Tensor& x, Mode mode,
                 Sampling sampling = Sampling::Stochastic);
  Tensor backward(Context& ctx, const Tensor& dy);
  // Sets Parameter::requires_grad of every parameter of the network by group, for the Train
  // forwards that follow (each forward records it for its backward). Frozen groups cost
  // nothing: a first-order architecture step (Gradients::Architecture) computes no weight
  // gradients (no backward-filter convolutions; layers keep no inputs for them), a bilevel
  // weight step (Gradients::Operational) no scores or alpha gradients (continuous MixedOps
  // keep no candidate outputs, binary ones probe nothing). Every gradient still computed is
  // bit for bit what a pass with Gradients::All computes.
  void set_gradients(Gradients g);
  Gradients gradients() const { return gradients_; }  // the last set_gradients (All at first)
  // How far the search is (0 at the first epoch, 1 at the last), for the methods' schedules
  // (GDAS's temperature); the search run sets it at every epoch.
  void set_search_progress(double fraction);
  // Draws the rankings of every sampling MixedOp for the next stochastic forward.
  void sample(Context& ctx);

  // One parameter per distinct alpha (shared groups appear once), then the network's other
  // architecture parameters (e.g. PC-DARTS's edge-normalisation betas).
  std::vector<Parameter*> architecture_parameters();
  // The first part of that: one parameter per distinct alpha, without the others.
  const std::vector<Parameter*>& alpha_parameters() const { return leaders_; }
  // The architecture parameters that are not MixedOp alphas, with their paths.
  const std::vector<NamedParameter>& other_architecture_parameters() const { return others_; }
  std::vector<Parameter*> operational_parameters();
  const std::vector<std::pair<std::string, MixedOp*>>& mixed_ops() const { return mixed_ops_; }
  // All distinct alphas, concatenated in order of first appearance. After writing it directly
  // (e.g. restoring a checkpoint), call alphas_changed().
  const Tensor& alphas() const { return alphas_; }
  // Marks every alpha as changed (Parameter::mark_changed): deterministic forwards derive again.
  void alphas_changed();

  // One line per MixedOp: its path, type and softmax(alpha) per candidate (* = derived).
  std::string architecture_summary() const;
  // {"mixed_ops": [{"name", "type", "num_on", "candidates", "alpha", "probabilities",
  //   "derived"}]}
  std::string architecture_json() const;
  // alpha of every MixedOp by name, written atomically; load checks names and sizes.
  void save_architecture(const std::string& path) const;
  void load_architecture(Context& ctx, const std::string& path);

  // Registers the ProxylessNAS update (masks and rescale hooks) on the architecture optimizer,
  // which must hold architecture_parameters(). Once per optimizer; the model must outlive it.
  void attach_architecture_optimizer(Optimizer& optimizer,
                                     ProxylessUpdate update = ProxylessUpdate::Exact);
  ~SearchModel();

 private:
  std::unique_ptr<Layer> net_;
  std::vector<std::pair<std::string, MixedOp*>> mixed_ops_;
  std::vector<Parameter*> leaders_;     // one architecture parameter per alpha group
  std::vector<NamedParameter> others_;  // architecture parameters that are no alpha
  Gradients gradients_ = Gradients::All;
  std::vector<int64_t> op_offsets_;       // per MixedOp, into the sampled logits
  Tensor alphas_, alpha_grads_;           // distinct alphas and their gradients
  Tensor op_offsets_dev_, gather_index_;  // sampling: per-op logits gathered from alphas_
  std::vector<size_t> group_of_;          // per MixedOp, its alpha group
  std::vector<int64_t> group_offsets_;    // per alpha group, into alphas_ (and one past)
  ArchGradBatch arch_batch_;              // the MixedOps' architecture gradients of a backward
  void share_probabilities(Context& ctx);
  class ProxylessHook;  // the exact ProxylessNAS update (search_model.cpp)
  std::vector<std::unique_ptr<ProxylessHook>> proxyless_hooks_;
};

}  // namespace cudarts
