// Genotype: derivation from edge probabilities (DARTS rule), JSON reading and writing.
#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cudarts/darts.h"
#include "cudarts/error.h"

namespace cudarts::darts {

namespace {
std::vector<std::pair<std::string, int>> derive_cell(const std::vector<std::vector<float>>& w,
                                                     int steps, const char* which) {
  const auto& prims = primitives();
  const int none = 0;  // primitives()[0] == "none"
  const size_t edges = size_t(steps) * size_t(steps + 3) / 2;
  CUDARTS_CHECK(w.size() == edges, "derive_genotype: ", which, " has ", w.size(),
                " edges, expected ", edges, " for ", steps, " steps");
  for (size_t e = 0; e < w.size(); ++e)
    CUDARTS_CHECK(w[e].size() == prims.size(), "derive_genotype: ", which, " edge ", e, " has ",
                  w[e].size(), " probabilities, expected ", prims.size());
  // Strongest op other than none on an edge (the first one on ties, as DARTS does).
  auto best_op = [&](size_t e) {
    int k = -1;
    for (int j = 0; j < int(prims.size()); ++j)
      if (j != none && (k < 0 || w[e][size_t(j)] > w[e][size_t(k)])) k = j;
    return k;
  };
  std::vector<std::pair<std::string, int>> gene;
  size_t start = 0;
  for (int node = 0; node < steps; ++node) {
    const int inputs = node + 2;
    std::vector<int> order(static_cast<size_t>(inputs));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return w[start + size_t(a)][size_t(best_op(start + size_t(a)))] >
             w[start + size_t(b)][size_t(best_op(start + size_t(b)))];
    });
    for (int t = 0; t < 2 && t < inputs; ++t) {
      const int j = order[size_t(t)];
      gene.emplace_back(prims[size_t(best_op(start + size_t(j)))], j);
    }
    start += size_t(inputs);
  }
  return gene;
}

std::vector<int> default_concat(int steps) {
  std::vector<int> c;
  for (int i = 2; i < steps + 2; ++i) c.push_back(i);
  return c;
}

// derive_cell with at most max_skips skip connections (max_skips < 0: no cap). Each round
// takes the chosen skip of lowest probability (the first edge on ties) off its edge's
// candidates (probability -1, below any other) and derives again: one skip candidate fewer
// per round, so it ends.
std::vector<std::pair<std::string, int>> derive_capped(std::vector<std::vector<float>> w, int steps,
                                                       const char* which, int max_skips) {
  const auto& prims = primitives();
  const size_t skip = size_t(std::find(prims.begin(), prims.end(), "skip_connect") - prims.begin());
  for (;;) {
    std::vector<std::pair<std::string, int>> gene = derive_cell(w, steps, which);
    if (max_skips < 0) return gene;
    int skips = 0;
    size_t weakest = 0;
    bool found = false;
    size_t start = 0;
    for (int node = 0; node < steps; ++node) {
      for (int t = 0; t < 2; ++t) {
        const auto& [op, in] = gene[size_t(2 * node + t)];
        if (op != "skip_connect") continue;
        ++skips;
        const size_t e = start + size_t(in);
        if (!found || w[e][skip] < w[weakest][skip] ||
            (w[e][skip] == w[weakest][skip] && e < weakest))
          weakest = e, found = true;
      }
      start += size_t(node + 2);
    }
    if (skips <= max_skips) return gene;
    w[weakest][skip] = -1.0f;
  }
}
}  // namespace

Genotype derive_genotype(const std::vector<std::vector<float>>& normal,
                         const std::vector<std::vector<float>>& reduce, int steps, int max_skips) {
  Genotype g;
  g.normal = derive_capped(normal, steps, "normal", max_skips);
  g.normal_concat = default_concat(steps);
  if (reduce.empty()) {  // no searched reduction cell: GDAS's fixed one
    g.reduce_cell = "gdas_frc";
    return g;
  }
  g.reduce = derive_capped(reduce, steps, "reduce", max_skips);
  g.reduce_concat = default_concat(steps);
  return g;
}

std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>> edge_probabilities(
    SearchNetwork& net) {
  std::vector<std::vector<float>> normal, reduce;
  for (int k = 0; k < net.num_edges(); ++k) {
    normal.push_back(net.edge(false, k).probabilities());
    if (!net.config().fixed_reduction) reduce.push_back(net.edge(true, k).probabilities());
  }
  return {normal, reduce};
}

std::string Genotype::to_json() const {
  auto genes = [](const std::vector<std::pair<std::string, int>>& g) {
    nlohmann::json a = nlohmann::json::array();
    for (auto& [op, in] : g) a.push_back({op, in});
    return a;
  };
  nlohmann::json j;
  j["normal"] = genes(normal);
  j["normal_concat"] = normal_concat;
  j["reduce"] = genes(reduce);
  j["reduce_concat"] = reduce_concat;
  if (!reduce_cell.empty()) j["reduce_cell"] = reduce_cell;
  return j.dump(2);
}

namespace {
// A JSON integer that fits an int (big numbers parse as floating point or unsigned; converting
// those to int would be undefined or wrap).
bool small_integer(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>() <= uint64_t(INT32_MAX);
  return v.is_number_integer() && v.get<int64_t>() >= INT32_MIN && v.get<int64_t>() <= INT32_MAX;
}
}  // namespace

Genotype Genotype::from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    CUDARTS_INPUT_FAIL("genotype: not valid JSON: ", e.what());
  }
  Genotype g;
  const auto& prims = primitives();
  auto read = [&](const char* key, std::vector<std::pair<std::string, int>>& out) {
    CUDARTS_INPUT_CHECK(j.contains(key) && j[key].is_array(), "genotype: missing array '", key,
                        "'");
    const auto& arr = j[key];
    CUDARTS_INPUT_CHECK(!arr.empty() && arr.size() % 2 == 0, "genotype: '", key, "' has ",
                        arr.size(), " entries, expected two per node");
    for (size_t i = 0; i < arr.size(); ++i) {
      const auto& e = arr[i];
      CUDARTS_INPUT_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && small_integer(e[1]),
                          "genotype: '", key, "'[", i, "] should be [op, input], found ", e.dump());
      const std::string op = e[0];
      const int in = int(e[1].get<int64_t>());
      CUDARTS_INPUT_CHECK(std::find(prims.begin() + 1, prims.end(), op) != prims.end(),
                          "genotype: '", key, "'[", i, "] has op '", op,
                          "', expected a DARTS primitive other than none");
      const int node = int(i / 2);
      CUDARTS_INPUT_CHECK(in >= 0 && in < node + 2, "genotype: '", key, "'[", i, "] reads input ",
                          in, "; node ", node, " can read 0..", node + 1);
      out.emplace_back(op, in);
    }
  };
  auto concat = [&](const char* key, size_t genes) {
    CUDARTS_INPUT_CHECK(j.contains(key) && j[key].is_array(), "genotype: missing array '", key,
                        "'");
    std::vector<int> c;
    for (const auto& e : j[key]) {
      CUDARTS_INPUT_CHECK(small_integer(e), "genotype: '", key, "' holds ", e.dump(),
                          ", expected state indices");
      const int64_t v = e.get<int64_t>();
      CUDARTS_INPUT_CHECK(v >= 0 && v < int64_t(genes / 2) + 2, "genotype: '", key, "' index ", v,
                          " outside 0..", genes / 2 + 1);
      c.push_back(int(v));
    }
    return c;
  };
  read("normal", g.normal);
  if (j.contains("reduce_cell")) {
    CUDARTS_INPUT_CHECK(j["reduce_cell"].is_string() && j["reduce_cell"] == "gdas_frc",
                        "genotype: 'reduce_cell' is ", j["reduce_cell"].dump(),
                        ", expected \"gdas_frc\" (GDAS's fixed reduction cell)");
    CUDARTS_INPUT_CHECK(
        (!j.contains("reduce") || (j["reduce"].is_array() && j["reduce"].empty())) &&
            (!j.contains("reduce_concat") ||
             (j["reduce_concat"].is_array() && j["reduce_concat"].empty())),
        "genotype: with 'reduce_cell' \"gdas_frc\", 'reduce' and 'reduce_concat' must be empty");
    g.reduce_cell = "gdas_frc";
    g.normal_concat = concat("normal_concat", g.normal.size());
    return g;
  }
  read("reduce", g.reduce);
  g.normal_concat = concat("normal_concat", g.normal.size());
  g.reduce_concat = concat("reduce_concat", g.reduce.size());
  return g;
}

bool Genotype::operator==(const Genotype& o) const {
  return normal == o.normal && reduce == o.reduce && normal_concat == o.normal_concat &&
         reduce_concat == o.reduce_concat && reduce_cell == o.reduce_cell;
}

}  // namespace cudarts::darts
