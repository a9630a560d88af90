// Hardware-aware search (docs/DESIGN.md section 11): a cost table of every candidate of every
// edge of every cell of the DARTS search network, measured on the device the search runs on
// (latency) and computed from shapes (FLOPs through the op table's cost model, parameters),
// and the expected cost E[c] = sum over cells and edges of sum_i p_i c_i that a search adds to
// its architecture loss.
#pragma once

#include <string>
#include <vector>

#include "cudarts/darts.h"

namespace cudarts::darts {

struct CandidateCost {
  double flops = 0.0;       // one inference forward (the cost model of src/dispatch.h)
  double params = 0.0;      // weights of the candidate
  double latency_ms = 0.0;  // median inference forward, measured
  double train_ms = 0.0;    // median training step of the candidate (forward + backward)
};

// sites[s] are the search network's edge sites (SearchNetwork::edge_sites order); each holds
// one cost per candidate.
struct CostTable {
  std::string device, date, versions;  // where and when it was measured
  std::vector<int64_t> input;          // the network input it was measured for (N, C, H, W)
  struct Site {
    int cell = 0, edge = 0;
    bool reduction = false;
    std::vector<CandidateCost> candidates;
  };
  std::vector<Site> sites;
  std::string to_json() const;
  static CostTable from_json(const std::string& text);  // InputError naming the problem
  // The metric's value ("latency" ms, "train_latency" ms, "flops" in MFLOP, "params" in
  // thousands) of candidate i at site s; ConfigError for another metric.
  double value(size_t site, size_t candidate, const std::string& metric) const;
};

struct CostTableOptions {
  int warmup = 2;
  int repeats = 5;        // the median of these
  double spread = 0.25;   // re-measure when (max - min) / median exceeds it ...
  int max_remeasure = 3;  // ... at most this often
};

// The median latency of inference forwards of `layer` on x (warm-up, repeats, re-measured
// while the spread is large; the clock read after ctx.synchronize()).
double measure_latency_ms(Context& ctx, Layer& layer, const Tensor& x,
                          const CostTableOptions& o = {});
// The same for a training step of `layer`: a Train forward and the backward of a fixed dy;
// the layer's buffers (BatchNorm running statistics) are restored and its gradients zeroed.
double measure_train_ms(Context& ctx, Layer& layer, const Tensor& x,
                        const CostTableOptions& o = {});

// Measures every candidate of every edge site of `net` for network input `input` on ctx's
// device (measure_latency_ms per candidate).
CostTable measure_cost_table(Context& ctx, SearchNetwork& net, const Shape& input,
                             const CostTableOptions& o = {});

// E[c] and its gradient for a search network: per alpha (SearchModel::alpha_parameters
// order) the summed costs g of the sites that share it, so that E[c] = sum_a <softmax(a), g_a>.
class ExpectedCost {
 public:
  // ConfigError when the table does not match the network (sites, candidates).
  ExpectedCost(Context& ctx, SearchModel& model, SearchNetwork& net, const CostTable& table,
               const std::string& metric);
  double value() const;  // from the alphas (reads them to the host)
  // alpha.grad += coefficient * dE/dalpha (= coefficient p (g - <p, g>), ops::arch_grad).
  void add_gradient(Context& ctx, float coefficient);
  // The cost of a derived genotype: per searched cell the chosen ops of its edges.
  double genotype_cost(const Genotype& g) const;
  const std::vector<std::vector<double>>& per_alpha() const { return g_host_; }

 private:
  SearchModel& model_;
  const CostTable& table_;
  std::string metric_;
  std::vector<std::vector<double>> g_host_;  // per alpha
  std::vector<Tensor> g_;                    // the same on the device
};

}  // namespace cudarts::darts
