// SearchModel: architecture/operational parameter split, consolidated alphas, one-launch
// sampling, summaries and alpha save/load.
#include "cudarts/search_model.h"

#include <cstdio>
#include <fstream>
#include <iomanip>
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
  offsets_host_.push_back(0);
  for (auto& [name, m] : mixed_ops_) offsets_host_.push_back(offsets_host_.back() + m->num_candidates());
  const int64_t total = offsets_host_.back();
  if (total == 0) return;
  alphas_ = Tensor::empty(ctx, Shape{total});
  alpha_grads_ = Tensor::zeros(ctx, Shape{total});
  for (size_t i = 0; i < mixed_ops_.size(); ++i) {
    Parameter& a = mixed_ops_[i].second->alpha();
    Tensor value = alphas_.slice(offsets_host_[i], offsets_host_[i + 1]);
    ops::copy(ctx, a.value, value);
    a.value = std::move(value);
    a.grad = alpha_grads_.slice(offsets_host_[i], offsets_host_[i + 1]);
  }
  std::vector<int32_t> off(offsets_host_.begin(), offsets_host_.end());
  offsets_ = Tensor::from_vector_i32(ctx, Shape{int64_t(off.size())}, off);
}

void SearchModel::sample(Context& ctx) {
  bool any = false;
  for (auto& [name, m] : mixed_ops_) any |= m->config().type != MixedOpType::Continuous;
  if (!any) return;
  const int64_t total = alphas_.numel();
  Tensor ranking = Tensor::empty(ctx, Shape{total}, DType::I32);
  ops::gumbel_rank(ctx, alphas_, offsets_, ctx.seed(), ctx.reserve_rng(uint64_t(total)), ranking);
  const std::vector<int32_t> host = ranking.to_vector_i32();  // the one host read per step
  for (size_t i = 0; i < mixed_ops_.size(); ++i) {
    MixedOp* m = mixed_ops_[i].second;
    if (m->config().type == MixedOpType::Continuous) continue;
    const int64_t b = offsets_host_[i], e = offsets_host_[i + 1];
    m->set_ranking(std::vector<int>(host.begin() + b, host.begin() + e), ranking.slice(b, e));
  }
}

Tensor SearchModel::forward(Context& ctx, const Tensor& x, Mode mode, Sampling sampling) {
  for (auto& [name, m] : mixed_ops_) m->set_sampling(sampling);
  if (sampling == Sampling::Stochastic) sample(ctx);
  return net_->forward(ctx, x, mode);
}

Tensor SearchModel::backward(Context& ctx, const Tensor& dy) { return net_->backward(ctx, dy); }

std::vector<Parameter*> SearchModel::architecture_parameters() {
  std::vector<Parameter*> out;
  for (Parameter* p : net_->parameters())
    if (p->kind == ParamKind::Architecture) out.push_back(p);
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
  }
}

void SearchModel::attach_architecture_optimizer(Optimizer& optimizer) {
  for (auto& [name, m] : mixed_ops_)
    if (m->config().type == MixedOpType::ProxylessNAS) optimizer.add_hook(m);
}

}  // namespace cudarts
