// SearchModel: architecture/operational parameter split, consolidated alphas, one-launch
// sampling, summaries and alpha save/load.
#include "cudarts/search_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts {

namespace {
void find_mixed_ops(Layer& layer, const std::string& prefix,
                    std::vector<std::pair<std::string, MixedOp*>>& out) {
  const std::string path = prefix.empty() ? layer.name() : prefix + "." + layer.name();
  if (auto* m = dynamic_cast<MixedOp*>(&layer)) out.emplace_back(path, m);
  for (Layer* c : layer.children()) find_mixed_ops(*c, path, out);
}
}  // namespace

SearchModel::SearchModel(Context& ctx, std::unique_ptr<Layer> network) : net_(std::move(network)) {
  CUDARTS_CHECK(net_ != nullptr, "SearchModel: null network");
  find_mixed_ops(*net_, "", mixed_ops_);
  for (auto& [name, p] : net_->named_parameters()) {
    if (p->kind != ParamKind::Architecture) continue;
    bool alpha = false;
    for (auto& [n, m] : mixed_ops_) alpha = alpha || &m->alpha() == p;
    if (!alpha) others_.emplace_back(name, p);
  }
  if (mixed_ops_.empty()) return;
  // Groups in order of first appearance; an empty group name means a group of one.
  std::map<std::string, size_t> group_index;
  std::vector<size_t> group_of;
  std::vector<int64_t> group_offsets{0};
  for (size_t i = 0; i < mixed_ops_.size(); ++i) {
    MixedOp* m = mixed_ops_[i].second;
    const std::string key =
        m->config().alpha_group.empty() ? "#" + std::to_string(i) : m->config().alpha_group;
    auto [it, fresh] = group_index.emplace(key, leaders_.size());
    if (fresh) {
      leaders_.push_back(&m->alpha());
      group_offsets.push_back(group_offsets.back() + m->num_candidates());
    } else {
      const Parameter* lead = leaders_[it->second];
      CUDARTS_CHECK(lead->value.numel() == m->num_candidates(), "SearchModel: MixedOp '",
                    mixed_ops_[i].first, "' has ", m->num_candidates(),
                    " candidates but shares alpha group '", key, "' of size ", lead->value.numel());
    }
    group_of.push_back(it->second);
  }
  alphas_ = Tensor::empty(ctx, Shape{group_offsets.back()});
  alpha_grads_ = Tensor::zeros(ctx, Shape{group_offsets.back()});
  for (size_t g = 0; g < leaders_.size(); ++g) {
    Tensor slice = alphas_.slice(group_offsets[g], group_offsets[g + 1]);
    ops::copy(ctx, leaders_[g]->value, slice);
  }
  op_offsets_.push_back(0);
  std::vector<int32_t> index;
  for (size_t i = 0; i < mixed_ops_.size(); ++i) {
    const int64_t b = group_offsets[group_of[i]], e = group_offsets[group_of[i] + 1];
    Parameter& a = mixed_ops_[i].second->alpha();
    a.value = alphas_.slice(b, e);
    a.grad = alpha_grads_.slice(b, e);
    a.version = leaders_[group_of[i]]->version;  // one change count per shared alpha
    for (int64_t j = b; j < e; ++j) index.push_back(int32_t(j));
    op_offsets_.push_back(op_offsets_.back() + (e - b));
  }
  group_of_ = group_of;
  group_offsets_ = group_offsets;
  std::vector<int32_t> off(op_offsets_.begin(), op_offsets_.end());
  op_offsets_dev_ = Tensor::from_vector_i32(ctx, Shape{int64_t(off.size())}, off);
  if (leaders_.size() < mixed_ops_.size())
    gather_index_ = Tensor::from_vector_i32(ctx, Shape{int64_t(index.size())}, index);
}

void SearchModel::sample(Context& ctx) {
  bool any = false;
  for (auto& [name, m] : mixed_ops_) any |= m->samples();
  if (!any) return;
  const int64_t total = op_offsets_.back();
  Tensor logits;
  if (gather_index_.defined()) {  // shared alphas: one logit row per MixedOp
    logits = Tensor::empty(ctx, Shape{total});
    ops::gather(ctx, alphas_, gather_index_, logits);
  } else {
    logits = alphas_.share();
  }
  Tensor ranking = Tensor::empty(ctx, Shape{total}, DType::I32);
  const uint64_t offset = ctx.reserve_rng(uint64_t(total));
  ops::gumbel_rank(ctx, logits, op_offsets_dev_, ctx.seed(), offset, ranking);
  const std::vector<int32_t> host = ranking.to_vector_i32();  // the one host read per step
  for (size_t i = 0; i < mixed_ops_.size(); ++i) {
    MixedOp* m = mixed_ops_[i].second;
    if (!m->samples()) continue;
    const int64_t b = op_offsets_[i], e = op_offsets_[i + 1];
    m->set_ranking(std::vector<int>(host.begin() + b, host.begin() + e), ranking.slice(b, e),
                   GumbelDraw{ctx.seed(), offset, b});
  }
}

// softmax(alpha) of every alpha group that a MixedOp of the pass reads, in one launch; each such
// MixedOp gets its group's row for its next forward.
void SearchModel::share_probabilities(Context& ctx) {
  std::vector<bool> used(leaders_.size(), false);
  bool any = false;
  for (size_t i = 0; i < mixed_ops_.size(); ++i)
    if (mixed_ops_[i].second->uses_probabilities()) any = used[group_of_[i]] = true;
  if (!any) return;
  Tensor probs = Tensor::empty(ctx, Shape{group_offsets_.back()});
  std::vector<Tensor> rows;
  rows.reserve(leaders_.size());
  std::vector<const Tensor*> logits;
  std::vector<Tensor*> outs;
  for (size_t g = 0; g < leaders_.size(); ++g) {
    if (!used[g]) continue;
    rows.push_back(probs.slice(group_offsets_[g], group_offsets_[g + 1]));
    logits.push_back(&leaders_[g]->value);
    outs.push_back(&rows.back());
  }
  ops::softmax_many(ctx, logits, outs);
  for (size_t i = 0; i < mixed_ops_.size(); ++i)
    if (mixed_ops_[i].second->uses_probabilities())
      mixed_ops_[i].second->set_pass_probabilities(
          probs.slice(group_offsets_[group_of_[i]], group_offsets_[group_of_[i] + 1]));
}

Tensor SearchModel::forward(Context& ctx, const Tensor& x, Mode mode, Sampling sampling) {
  // Only switches: a Deterministic forward re-derives when alpha changed (its version), not on
  // every call.
  for (auto& [name, m] : mixed_ops_)
    if (m->sampling() != sampling) m->set_sampling(sampling);
  // Whatever happens, no MixedOp keeps this pass's probabilities for a later forward.
  struct Clear {
    SearchModel* model;
    ~Clear() {
      for (auto& [name, m] : model->mixed_ops_) m->set_pass_probabilities(Tensor());
    }
  } clear{this};
  if (sampling == Sampling::Stochastic) {
    sample(ctx);
    share_probabilities(ctx);
  }
  return net_->forward(ctx, x, mode);
}

Tensor SearchModel::backward(Context& ctx, const Tensor& dy) {
  // The MixedOps' architecture gradients go into one batch, applied after the network's
  // backward in the order the MixedOps ran (one launch instead of one per MixedOp).
  struct Detach {
    SearchModel* model;
    ~Detach() {
      for (auto& [name, m] : model->mixed_ops_) m->set_arch_grad_batch(nullptr);
      model->arch_batch_.clear();
    }
  } detach{this};
  for (auto& [name, m] : mixed_ops_) m->set_arch_grad_batch(&arch_batch_);
  Tensor dx = net_->backward(ctx, dy);
  arch_batch_.flush(ctx);
  return dx;
}

void SearchModel::set_search_progress(double fraction) {
  CUDARTS_CHECK(fraction >= 0.0 && fraction <= 1.0, "SearchModel::set_search_progress: ", fraction,
                " is outside [0, 1]");
  for (auto& [name, m] : mixed_ops_) m->set_search_progress(fraction);
}

void SearchModel::set_gradients(Gradients g) {
  gradients_ = g;
  const bool op = g == Gradients::All || g == Gradients::Operational;
  const bool arch = g == Gradients::All || g == Gradients::Architecture;
  for (Parameter* p : net_->parameters())
    p->requires_grad = p->kind == ParamKind::Architecture ? arch : op;
}

void SearchModel::alphas_changed() {
  for (Parameter* p : leaders_) p->mark_changed();
}

std::vector<Parameter*> SearchModel::architecture_parameters() {
  std::vector<Parameter*> out = leaders_;
  for (auto& [name, p] : others_) out.push_back(p);
  return out;
}

std::vector<Parameter*> SearchModel::operational_parameters() {
  std::vector<Parameter*> out;
  for (Parameter* p : net_->parameters())
    if (p->kind == ParamKind::Operational) out.push_back(p);
  return out;
}

std::string SearchModel::architecture_summary() const {
  std::ostringstream s;
  s << "Architecture: " << mixed_ops_.size() << " MixedOps\n";
  for (auto& [name, m] : mixed_ops_) {
    const std::vector<float> p = m->probabilities();
    const std::vector<int> d = m->derived();
    const std::set<int> on(d.begin(), d.end());
    s << "  " << name << " [" << m->type() << ", k_on=" << m->config().num_on << "]:";
    for (int i = 0; i < m->num_candidates(); ++i)
      s << ' ' << m->candidate(i).name() << '=' << std::fixed << std::setprecision(4)
        << p[size_t(i)] << (on.count(i) ? "*" : "");
    s << '\n';
  }
  for (auto& [name, p] : others_) {
    const std::vector<float> v = p->value.to_vector();
    const float mx = v.empty() ? 0.0f : *std::max_element(v.begin(), v.end());
    double z = 0.0;
    for (float x : v) z += std::exp(double(x) - mx);
    s << "  " << name << " [softmax]:";
    for (float x : v)
      s << ' ' << std::fixed << std::setprecision(4) << std::exp(double(x) - mx) / z;
    s << '\n';
  }
  return s.str();
}

std::string SearchModel::architecture_json() const {
  nlohmann::json ops = nlohmann::json::array();
  for (auto& [name, m] : mixed_ops_) {
    nlohmann::json j;
    j["name"] = name;
    j["type"] = m->type();
    j["num_on"] = m->config().num_on;
    std::vector<std::string> cands;
    for (int i = 0; i < m->num_candidates(); ++i) cands.push_back(m->candidate(i).name());
    j["candidates"] = cands;
    j["alpha"] = m->alpha().value.to_vector();
    j["probabilities"] = m->probabilities();
    j["derived"] = m->derived();
    ops.push_back(j);
  }
  return nlohmann::json{{"mixed_ops", ops}}.dump(2);
}

void SearchModel::save_architecture(const std::string& path) const {
  nlohmann::json j;
  j["format"] = "cudarts-architecture";
  j["version"] = 1;
  nlohmann::json ops = nlohmann::json::object();
  for (auto& [name, m] : mixed_ops_) ops[name] = m->alpha().value.to_vector();
  j["alpha"] = ops;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    CUDARTS_CHECK(f.good(), "save_architecture: cannot write '", tmp, "'");
    f << std::setprecision(9) << j.dump(2) << '\n';
    f.flush();
    CUDARTS_CHECK(f.good(), "save_architecture: writing '", tmp, "' failed");
  }
  CUDARTS_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "save_architecture: cannot rename '",
                tmp, "' to '", path, "'");
}

void SearchModel::load_architecture(Context& ctx, const std::string& path) {
  std::ifstream f(path);
  CUDARTS_CHECK(f.good(), "load_architecture: cannot open '", path, "'");
  nlohmann::json j;
  try {
    f >> j;
  } catch (const std::exception& e) {
    CUDARTS_FAIL("load_architecture: '", path, "' is not valid JSON: ", e.what());
  }
  CUDARTS_CHECK(j.value("format", "") == "cudarts-architecture" && j.contains("alpha"),
                "load_architecture: '", path, "' is not a cudarts architecture file");
  const nlohmann::json& a = j["alpha"];
  for (auto& [name, m] : mixed_ops_) {
    CUDARTS_CHECK(a.contains(name), "load_architecture: '", path, "' has no alpha for MixedOp '",
                  name, "'");
    const std::vector<float> v = a[name].get<std::vector<float>>();
    CUDARTS_CHECK(int(v.size()) == m->num_candidates(), "load_architecture: '", path, "' gives ",
                  v.size(), " values for MixedOp '", name, "' with ", m->num_candidates(),
                  " candidates");
    Tensor src = Tensor::from_vector(ctx, Shape{int64_t(v.size())}, v);
    ops::copy(ctx, src, m->alpha().value);
    m->alpha().mark_changed();  // deterministic forwards derive again
  }
}

// The exact ProxylessNAS update: per alpha group with ProxylessNAS MixedOps, a mask of the
// entries their pending sets E cover (the optimizer leaves the rest and its state alone) and
// the log-sum-exp over it before the step, restored after it.
class SearchModel::ProxylessHook final : public StepHook {
 public:
  struct Group {
    Parameter* alpha;
    std::vector<MixedOp*> ops;
    Tensor mask, lse;
  };
  std::vector<Group> groups;
  Optimizer* optimizer = nullptr;

  void before_step(Context& ctx) override {
    for (Group& g : groups) {
      if (!g.mask.defined()) {  // first step: the masks, which the optimizer reads from now on
        g.mask = Tensor::zeros(ctx, g.alpha->value.shape());
        g.lse = Tensor::zeros(ctx, Shape{1});
        optimizer->set_update_mask(g.alpha, &g.mask);
      }
      ops::fill(ctx, g.mask, 0.0f);
      for (MixedOp* m : g.ops)
        if (const Tensor* e = m->pending_eval_set()) {
          ops::mark_ranked(ctx, *e, m->eval_set_size(), g.mask);
          m->clear_pending_eval_set();
        }
      ops::mask_logsumexp(ctx, g.alpha->value, g.mask, g.lse);
    }
  }
  void after_step(Context& ctx) override {
    for (Group& g : groups) ops::mask_rescale(ctx, g.alpha->value, g.mask, g.lse);
  }
};

SearchModel::~SearchModel() = default;

void SearchModel::attach_architecture_optimizer(Optimizer& optimizer, ProxylessUpdate update) {
  if (update == ProxylessUpdate::Reference) {
    for (auto& [name, m] : mixed_ops_)
      if (StepHook* h = m->reference_update_hook()) optimizer.add_hook(h);
    return;
  }
  auto hook = std::make_unique<ProxylessHook>();
  std::map<const float*, size_t> group_of;  // by the alpha's storage
  for (auto& [name, m] : mixed_ops_) {
    if (!m->restricted_update()) continue;
    const float* key = m->alpha().value.data();
    auto [it, fresh] = group_of.emplace(key, hook->groups.size());
    if (fresh) {
      Parameter* leader = nullptr;
      for (Parameter* p : leaders_)
        if (p->value.data() == key) leader = p;
      CUDARTS_CHECK(leader != nullptr, "SearchModel: no architecture parameter for '", name, "'");
      const auto& held = optimizer.params();
      CUDARTS_CHECK(std::find(held.begin(), held.end(), leader) != held.end(),
                    "SearchModel::attach_architecture_optimizer: the optimizer does not hold "
                    "the alpha of '",
                    name, "' (give it architecture_parameters())");
      hook->groups.push_back({leader, {}, Tensor(), Tensor()});
    }
    hook->groups[it->second].ops.push_back(m);
  }
  if (hook->groups.empty()) return;
  hook->optimizer = &optimizer;
  optimizer.add_hook(hook.get());
  proxyless_hooks_.push_back(std::move(hook));
}

}  // namespace cudarts
