// The NAS-Bench-201 search space (include/cudarts/nb201.h, docs/DESIGN.md section 10).
#include "cudarts/nb201.h"

#include <algorithm>
#include <cctype>

#include "cudarts/error.h"
#include "cudarts/onnx.h"

namespace cudarts::nb201 {

const std::vector<std::string>& primitives() {
  static const std::vector<std::string> p = {"none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                             "avg_pool_3x3"};
  return p;
}

std::unique_ptr<Layer> make_primitive(Context& ctx, const std::string& primitive,
                                      const std::string& name, int64_t c, bool search) {
  if (primitive == "none") return std::make_unique<Zero>(name);
  if (primitive == "skip_connect") return std::make_unique<Identity>(name);
  if (primitive == "nor_conv_1x1") return darts::relu_conv_bn(ctx, name, c, c, 1, 1, 0, !search);
  if (primitive == "nor_conv_3x3") return darts::relu_conv_bn(ctx, name, c, c, 3, 1, 1, !search);
  if (primitive == "avg_pool_3x3") return std::make_unique<AvgPool2d>(name, 3, 1, 1);
  CUDARTS_FAIL("unknown NAS-Bench-201 primitive '", primitive,
               "'; expected none, skip_connect, nor_conv_1x1, nor_conv_3x3 or avg_pool_3x3");
}

int edge_index(int to, int from) {
  CUDARTS_CHECK(to >= 1 && to <= 3 && from >= 0 && from < to, "nb201: no edge ", to, " <- ", from);
  return (to - 1) * to / 2 + from;
}

std::string Arch::str() const {
  std::string s;
  for (int to = 1; to <= 3; ++to) {
    if (to > 1) s += "+";
    s += "|";
    for (int from = 0; from < to; ++from)
      s += ops[size_t(edge_index(to, from))] + "~" + std::to_string(from) + "|";
  }
  return s;
}

Arch Arch::parse(const std::string& text) {
  std::string t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
  size_t start = 0;
  while (start < t.size() && std::isspace(static_cast<unsigned char>(t[start]))) ++start;
  t = t.substr(start);
  auto fail = [&](const std::string& why) {
    CUDARTS_INPUT_FAIL("nb201 architecture '", t.substr(0, 120), "': ", why,
                       " (expected |op~0|+|op~0|op~1|+|op~0|op~1|op~2| with ops among none, "
                       "skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3)");
  };
  std::vector<std::string> nodes;
  for (size_t p = 0;;) {
    const size_t plus = t.find('+', p);
    nodes.push_back(t.substr(p, plus == std::string::npos ? std::string::npos : plus - p));
    if (plus == std::string::npos) break;
    p = plus + 1;
  }
  if (nodes.size() != 3) fail(std::to_string(nodes.size()) + " nodes, expected 3");
  Arch a;
  for (int to = 1; to <= 3; ++to) {
    const std::string& n = nodes[size_t(to - 1)];
    if (n.size() < 2 || n.front() != '|' || n.back() != '|')
      fail("node " + std::to_string(to) + " is not enclosed in '|'");
    std::vector<std::string> edges;
    for (size_t p = 1; p < n.size();) {
      const size_t bar = n.find('|', p);
      edges.push_back(n.substr(p, bar - p));
      p = bar + 1;
    }
    if (int(edges.size()) != to)
      fail("node " + std::to_string(to) + " has " + std::to_string(edges.size()) +
           " inputs, expected " + std::to_string(to));
    for (int from = 0; from < to; ++from) {
      const std::string& e = edges[size_t(from)];
      const size_t tilde = e.find('~');
      if (tilde == std::string::npos || e.substr(tilde + 1) != std::to_string(from))
        fail("edge '" + e + "' of node " + std::to_string(to) + " should read from node " +
             std::to_string(from));
      const std::string op = e.substr(0, tilde);
      const auto& prims = primitives();
      if (std::find(prims.begin(), prims.end(), op) == prims.end()) fail("unknown op '" + op + "'");
      a.ops[size_t(edge_index(to, from))] = op;
    }
  }
  return a;
}

Arch derive(const std::vector<std::vector<float>>& p, int max_skips) {
  const auto& prims = primitives();
  CUDARTS_CHECK(p.size() == size_t(kEdges), "nb201::derive: ", p.size(), " edges, expected ",
                kEdges);
  for (size_t e = 0; e < p.size(); ++e)
    CUDARTS_CHECK(p[e].size() == prims.size(), "nb201::derive: edge ", e, " has ", p[e].size(),
                  " probabilities, expected ", prims.size());
  std::vector<std::vector<float>> w = p;
  const size_t skip = 1;  // primitives()[1]
  for (;;) {
    Arch a;
    int skips = 0;
    size_t weakest = 0;
    for (size_t e = 0; e < w.size(); ++e) {
      // The first maximum on ties.
      const size_t k = size_t(std::max_element(w[e].begin(), w[e].end()) - w[e].begin());
      a.ops[e] = prims[k];
      if (k != skip) continue;
      if (skips == 0 || w[e][skip] < w[weakest][skip]) weakest = e;
      ++skips;
    }
    if (max_skips < 0 || skips <= max_skips) return a;
    w[weakest][skip] = -1.0f;  // below every probability
  }
}

// ---------------------------------------------------------------- Network
namespace {
// NAS-Bench-201's residual reduction block (ResNetBasicblock, stride 2).
std::unique_ptr<Graph> residual_block(Context& ctx, const std::string& name, int64_t c_in,
                                      int64_t c_out) {
  auto g = std::make_unique<Graph>(name);
  g->add(darts::relu_conv_bn(ctx, "conv_a", c_in, c_out, 3, 2, 1, true), "input");
  g->add(darts::relu_conv_bn(ctx, "conv_b", c_out, c_out, 3, 1, 1, true), "conv_a");
  auto down = std::make_unique<Sequential>("downsample");
  down->emplace<AvgPool2d>("pool", 2, 2, 0);
  down->emplace<Conv2d>(ctx, "conv", c_in, c_out, 1, Conv2dParams{}, false);
  g->add(std::move(down), "input");
  g->add_sum("out", {"conv_b", "downsample"});
  g->set_output("out");
  return g;
}
}  // namespace

Network::Network(Context& ctx, std::string name, const Config& config, const Arch* arch)
    : RetrainNetwork(std::move(name)), config_(config) {
  CUDARTS_CHECK(config.channels >= 1 && config.cells_per_stage >= 1 && config.in_channels >= 1 &&
                    config.num_classes >= 1,
                label(), ": channels ", config.channels, ", cells per stage ",
                config.cells_per_stage, ", input channels ", config.in_channels, " and classes ",
                config.num_classes, " must be positive");
  const bool search = arch == nullptr;
  body_ = std::make_unique<Sequential>("body");
  auto& stem = body_->emplace<Sequential>("stem");
  stem.emplace<Conv2d>(ctx, "conv", config.in_channels, config.channels, 3,
                       Conv2dParams::make(1, 1), false);
  stem.emplace<BatchNorm2d>(ctx, "bn", config.channels, true);
  int64_t c = config.channels;
  int index = 0;
  for (int stage = 0; stage < 3; ++stage) {
    if (stage > 0) {
      body_->add(residual_block(ctx, "cell" + std::to_string(index++), c, 2 * c));
      c *= 2;
    }
    for (int k = 0; k < config.cells_per_stage; ++k) {
      auto cell = std::make_unique<Graph>("cell" + std::to_string(index++));
      std::vector<std::string> nodes{"input"};
      for (int to = 1; to <= 3; ++to) {
        std::vector<std::string> in;
        for (int from = 0; from < to; ++from) {
          const int e = edge_index(to, from);
          const std::string edge = "edge" + std::to_string(e);
          std::unique_ptr<Layer> layer;
          if (search) {
            std::vector<std::unique_ptr<Layer>> cands;
            for (const std::string& p : primitives())
              cands.push_back(make_primitive(ctx, p, p, c, true));
            MixedOpConfig mc = config.mixed;
            mc.alpha_group = "nb201.edge" + std::to_string(e);
            auto m = make_mixed_op(ctx, edge, std::move(cands), mc);
            if (mixed_.size() < size_t(kEdges)) mixed_.push_back(m.get());
            layer = std::move(m);
          } else {
            layer = make_primitive(ctx, arch->ops[size_t(e)], edge, c, false);
          }
          cell->add(std::move(layer), nodes[size_t(from)]);
          in.push_back(edge);
        }
        cell->add_sum("node" + std::to_string(to), in);
        nodes.push_back("node" + std::to_string(to));
      }
      cell->set_output("node3");
      body_->add(std::move(cell));
    }
  }
  body_->emplace<BatchNorm2d>(ctx, "lastact_bn", c, true);
  body_->emplace<ReLU>("lastact_relu");
  body_->emplace<GlobalAvgPool>("gap");
  body_->emplace<Linear>(ctx, "classifier", c, config.num_classes);
}

std::vector<std::vector<float>> Network::probabilities() const {
  CUDARTS_CHECK(searching(), label(), ": a discrete network has no alphas");
  std::vector<std::vector<float>> p;
  for (const MixedOp* m : mixed_) p.push_back(m->probabilities());
  return p;
}

void Network::set_drop_path_prob(float p) {
  CUDARTS_CONFIG_CHECK(p == 0.0f, label(), ": drop-path probability ", p,
                       "; NAS-Bench-201 networks train without drop-path (use 0)");
}

std::pair<Tensor, Tensor> Network::forward_train(Context& ctx, const Tensor& x) {
  return {forward(ctx, x, Mode::Train), Tensor()};
}

void Network::backward_train(Context& ctx, const Tensor& dlogits, const Tensor&) {
  backward(ctx, dlogits);
}

Tensor Network::forward_impl(Context& ctx, const Tensor& x, Mode mode) {
  return body_->forward(ctx, x, mode);
}

std::string Network::to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) {
  return body_->to_onnx(g, x);  // a search network's MixedOps refuse (NotSupported)
}

Tensor Network::backward_impl(Context& ctx, const Tensor& dy) {
  return body_->backward(ctx, dy);
}

}  // namespace cudarts::nb201
