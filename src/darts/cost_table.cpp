// Cost tables measured where the search runs, and the expected cost of a search network
// (include/cudarts/hardware.h, docs/DESIGN.md section 11).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "buffer_snapshot.h"
#include "cudarts/context.h"
#include "cudarts/error.h"
#include "cudarts/hardware.h"
#include "cudarts/ops.h"
#include "cudarts/profiler.h"

namespace cudarts::darts {

using json = nlohmann::json;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}
}  // namespace

std::string CostTable::to_json() const {
  json j;
  j["device"] = device;
  j["date"] = date;
  j["versions"] = versions;
  j["input"] = input;
  j["units"] = {{"flops", "FLOP per forward"},
                {"params", "weights"},
                {"latency_ms", "ms per inference forward"},
                {"train_ms", "ms per training forward and backward"}};
  j["sites"] = json::array();
  for (const Site& s : sites) {
    json c = json::array();
    for (const CandidateCost& k : s.candidates)
      c.push_back({{"flops", k.flops},
                   {"params", k.params},
                   {"latency_ms", k.latency_ms},
                   {"train_ms", k.train_ms}});
    j["sites"].push_back(
        {{"cell", s.cell}, {"edge", s.edge}, {"reduction", s.reduction}, {"candidates", c}});
  }
  return j.dump(1);
}

CostTable CostTable::from_json(const std::string& text) {
  CostTable t;
  try {
    const json j = json::parse(text);
    t.device = j.at("device").get<std::string>();
    t.date = j.at("date").get<std::string>();
    t.versions = j.value("versions", "");
    t.input = j.at("input").get<std::vector<int64_t>>();
    for (const json& s : j.at("sites")) {
      Site site;
      site.cell = s.at("cell").get<int>();
      site.edge = s.at("edge").get<int>();
      site.reduction = s.at("reduction").get<bool>();
      for (const json& c : s.at("candidates")) {
        CandidateCost k{c.at("flops").get<double>(), c.at("params").get<double>(),
                        c.at("latency_ms").get<double>(), c.value("train_ms", 0.0)};
        CUDARTS_INPUT_CHECK(std::isfinite(k.flops) && std::isfinite(k.params) &&
                                std::isfinite(k.latency_ms) && std::isfinite(k.train_ms) &&
                                k.flops >= 0 && k.params >= 0 && k.latency_ms >= 0 &&
                                k.train_ms >= 0,
                            "cost table: cell ", site.cell, " edge ", site.edge,
                            " holds a negative or non-finite cost");
        site.candidates.push_back(k);
      }
      t.sites.push_back(std::move(site));
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    CUDARTS_INPUT_FAIL("cost table: not the expected JSON (", e.what(), ")");
  }
  return t;
}

double CostTable::value(size_t site, size_t candidate, const std::string& metric) const {
  const CandidateCost& c = sites.at(site).candidates.at(candidate);
  if (metric == "latency") return c.latency_ms;
  if (metric == "train_latency") return c.train_ms;
  if (metric == "flops") return c.flops * 1e-6;
  if (metric == "params") return c.params * 1e-3;
  CUDARTS_CONFIG_CHECK(false, "cost metric '", metric,
                       "', expected latency, train_latency, flops or params");
  return 0.0;
}

namespace {
// The median time of `run` (warm-up, repeats, re-measured while the spread is large).
template <class F>
double median_ms(Context& ctx, const CostTableOptions& o, F&& run) {
  using Clock = std::chrono::steady_clock;
  for (int w = 0; w < o.warmup; ++w) run();
  ctx.synchronize();
  for (int attempt = 0;; ++attempt) {
    std::vector<double> ms;
    for (int r = 0; r < o.repeats; ++r) {
      const auto t0 = Clock::now();
      run();
      ctx.synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    const double m = median(ms);
    const double range =
        *std::max_element(ms.begin(), ms.end()) - *std::min_element(ms.begin(), ms.end());
    // Steady enough, or out of attempts (then the median of the last round).
    if (attempt >= o.max_remeasure || m <= 0 || range / m <= o.spread) return m;
  }
}
}  // namespace

double measure_latency_ms(Context& ctx, Layer& layer, const Tensor& x, const CostTableOptions& o) {
  return median_ms(ctx, o, [&] { layer.forward(ctx, x, Mode::Eval); });
}

double measure_train_ms(Context& ctx, Layer& layer, const Tensor& x, const CostTableOptions& o) {
  Tensor dy = Tensor::empty(ctx, layer.output_shape(x.shape()));
  init_normal(ctx, dy, 0.0f, 1.0f);
  // Train forwards move BatchNorm running statistics (as many times as the measurement
  // repeats): kept and restored, so that measuring changes nothing a run computes later.
  BufferSnapshot buffers(ctx, layer);
  const double ms = median_ms(ctx, o, [&] {
    layer.forward(ctx, x, Mode::Train);
    layer.backward(ctx, dy);
  });
  buffers.restore(ctx);
  for (Parameter* p : layer.parameters()) ops::fill(ctx, p->grad, 0.0f);  // leave no gradients
  return ms;
}

CostTable measure_cost_table(Context& ctx, SearchNetwork& net, const Shape& input,
                             const CostTableOptions& o) {
  CUDARTS_CHECK(o.repeats >= 1 && o.warmup >= 0 && o.max_remeasure >= 0 && o.spread > 0,
                "measure_cost_table: repeats ", o.repeats, " must be >= 1, warmup ", o.warmup,
                " and max_remeasure ", o.max_remeasure, " >= 0, spread ", o.spread, " > 0");
  CostTable t;
  t.device = ctx.device().str();
  t.date = utc_now();
  t.versions = "cudarts";
  for (int d = 0; d < input.ndim(); ++d) t.input.push_back(input[d]);
  for (const SearchNetwork::EdgeSite& site : net.edge_sites(input)) {
    CostTable::Site s{site.cell, site.edge, site.reduction, {}};
    Tensor x = Tensor::empty(ctx, site.input);
    init_normal(ctx, x, 0.0f, 1.0f);
    for (int i = 0; i < site.op->num_candidates(); ++i) {
      Layer& layer = site.op->candidate(i);
      CandidateCost c;
      for (Parameter* p : layer.parameters()) c.params += double(p->value.numel());
      {
        OpProfiler prof(ctx);
        layer.forward(ctx, x, Mode::Eval);
        c.flops = prof.total_cost().flops;
      }
      c.latency_ms = measure_latency_ms(ctx, layer, x, o);
      c.train_ms = measure_train_ms(ctx, layer, x, o);
      s.candidates.push_back(c);
    }
    t.sites.push_back(std::move(s));
  }
  return t;
}

// ---------------------------------------------------------------- ExpectedCost
ExpectedCost::ExpectedCost(Context& ctx, SearchModel& model, SearchNetwork& net,
                           const CostTable& table, const std::string& metric)
    : model_(model), table_(table), metric_(metric) {
  const Shape input(table.input);
  const std::vector<SearchNetwork::EdgeSite> sites = net.edge_sites(input);
  CUDARTS_CONFIG_CHECK(sites.size() == table.sites.size(), "cost table: ", table.sites.size(),
                       " edge sites, but the search network has ", sites.size(),
                       " (measured for another network configuration?)");
  const std::vector<Parameter*>& alphas = model.alpha_parameters();
  g_host_.assign(alphas.size(), {});
  for (size_t s = 0; s < sites.size(); ++s) {
    const auto& ts = table.sites[s];
    CUDARTS_CONFIG_CHECK(ts.cell == sites[s].cell && ts.edge == sites[s].edge &&
                             int(ts.candidates.size()) == sites[s].op->num_candidates(),
                         "cost table: site ", s, " is cell ", ts.cell, " edge ", ts.edge, " with ",
                         ts.candidates.size(), " candidates; the network has cell ", sites[s].cell,
                         " edge ", sites[s].edge, " with ", sites[s].op->num_candidates());
    const void* storage = sites[s].op->alpha().value.raw();
    size_t a = 0;
    while (a < alphas.size() && alphas[a]->value.raw() != storage) ++a;
    CUDARTS_CHECK(a < alphas.size(), "ExpectedCost: edge ", ts.edge, " of cell ", ts.cell,
                  " shares no alpha of the model");
    auto& g = g_host_[a];
    g.resize(ts.candidates.size(), 0.0);
    for (size_t i = 0; i < g.size(); ++i) g[i] += table.value(s, i, metric);
  }
  for (size_t a = 0; a < alphas.size(); ++a) {
    if (g_host_[a].empty()) g_host_[a].assign(size_t(alphas[a]->value.numel()), 0.0);
    std::vector<float> f(g_host_[a].begin(), g_host_[a].end());
    g_.push_back(Tensor::from_vector(ctx, alphas[a]->value.shape(), f));
  }
}

double ExpectedCost::value() const {
  double e = 0.0;
  const std::vector<Parameter*>& alphas = model_.alpha_parameters();
  for (size_t a = 0; a < alphas.size(); ++a) {
    const std::vector<float> v = alphas[a]->value.to_vector();
    const double m = *std::max_element(v.begin(), v.end());
    double z = 0.0;
    for (float x : v) z += std::exp(double(x) - m);
    for (size_t i = 0; i < v.size(); ++i) e += std::exp(double(v[i]) - m) / z * g_host_[a][i];
  }
  return e;
}

void ExpectedCost::add_gradient(Context& ctx, float coefficient) {
  if (coefficient == 0.0f) return;
  const std::vector<Parameter*>& alphas = model_.alpha_parameters();
  for (size_t a = 0; a < alphas.size(); ++a) {
    if (!alphas[a]->requires_grad) continue;
    Tensor g = Tensor::empty(ctx, g_[a].shape());
    ops::scale(ctx, g_[a], coefficient, g);
    ops::arch_grad(ctx, alphas[a]->value, g, nullptr, 0, alphas[a]->grad);
  }
}

double ExpectedCost::genotype_cost(const Genotype& g) const {
  const auto& prims = primitives();
  std::map<std::pair<int, int>, size_t> at;
  for (size_t s = 0; s < table_.sites.size(); ++s)
    at[{table_.sites[s].cell, table_.sites[s].edge}] = s;
  double cost = 0.0;
  std::map<int, bool> cells;
  for (const auto& s : table_.sites) cells[s.cell] = s.reduction;
  for (const auto& [cell, reduction] : cells) {
    const auto& genes = reduction ? g.reduce : g.normal;
    for (size_t k = 0; k < genes.size(); ++k) {
      const int node = int(k / 2), start = node * (node + 3) / 2;  // 2 + 3 + ... before it
      const auto it = at.find({cell, start + genes[k].second});
      const auto op = std::find(prims.begin(), prims.end(), genes[k].first);
      CUDARTS_CHECK(it != at.end() && op != prims.end(), "genotype_cost: gene ", k, " of cell ",
                    cell, " has no entry in the cost table");
      cost += table_.value(it->second, size_t(op - prims.begin()), metric_);
    }
  }
  return cost;
}

}  // namespace cudarts::darts
