// The NAS-Bench-201 search space (Dong and Yang, ICLR 2020; docs/DESIGN.md section 10): a
// cell of 4 nodes and 6 edges (node i sums an op of every earlier node), candidates none,
// skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3 (the convolutions ReLU-Conv-BN),
// three stages of N cells joined by residual reduction blocks, C = 16 (TinyNetwork). One
// alpha per edge is shared by all cells. The same class is the search network (MixedOps on
// every edge) and, given an architecture, the discrete network that is retrained.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "cudarts/darts.h"

namespace cudarts::nb201 {

// In the benchmark's order: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3.
const std::vector<std::string>& primitives();
// One primitive on C channels, stride 1. `search`: BatchNorm without affine parameters.
std::unique_ptr<Layer> make_primitive(Context& ctx, const std::string& primitive,
                                      const std::string& name, int64_t channels, bool search);

// An architecture: the op of each edge in the benchmark's order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1,
// 3<-2; written as the benchmark's string |op~0|+|op~0|op~1|+|op~0|op~1|op~2|.
struct Arch {
  std::array<std::string, 6> ops;
  std::string str() const;
  static Arch parse(const std::string& text);  // InputError naming the problem
  bool operator==(const Arch& o) const { return ops == o.ops; }
};
constexpr int kEdges = 6;
// The edge index of edge to <- from (1 <= to <= 3, 0 <= from < to).
int edge_index(int to, int from);

// The benchmark's derivation: on each edge the most probable op, none included (as its DARTS
// and GDAS baselines do). max_skips >= 0 caps skip_connect like darts::derive_genotype: the
// chosen skip of lowest probability goes first, its edge taking its next op.
Arch derive(const std::vector<std::vector<float>>& probabilities, int max_skips = -1);

struct Config {
  int64_t channels = 16;    // C
  int cells_per_stage = 5;  // N
  int64_t in_channels = 3;
  int num_classes = 10;
  MixedOpConfig mixed;  // the search network's MixedOps (alpha_group set per edge)
};

// TinyNetwork: stem 3x3 conv + BN, N cells, a residual block (ReLU-conv3x3 stride 2-BN,
// ReLU-conv3x3-BN, plus 2x2 average pooling then a 1x1 conv on the shortcut) to 2C, N cells,
// a residual block to 4C, N cells, BN + ReLU, global pooling, linear classifier. Without an
// architecture: the search network (cell BatchNorm without affine parameters, as the
// benchmark's search baselines); with one: the discrete network (affine BatchNorm).
class Network final : public darts::RetrainNetwork {
 public:
  Network(Context& ctx, std::string name, const Config& config, const Arch* arch = nullptr);
  const char* type() const override { return "Nb201Network"; }
  Shape output_shape(const Shape& x) const override { return body_->output_shape(x); }
  std::vector<Layer*> children() const override { return {body_.get()}; }
  const Config& config() const { return config_; }
  bool searching() const { return !mixed_.empty(); }
  // Search network: softmax(alpha) of each edge (the first cell's; all cells share them).
  std::vector<std::vector<float>> probabilities() const;
  // No drop-path and no auxiliary head in the benchmark's training: p must be 0.
  void set_drop_path_prob(float p) override;
  std::pair<Tensor, Tensor> forward_train(Context& ctx, const Tensor& x) override;
  void backward_train(Context& ctx, const Tensor& dlogits, const Tensor& daux) override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;

 private:
  Config config_;
  std::unique_ptr<Sequential> body_;
  std::vector<MixedOp*> mixed_;  // the first cell's edges, in edge order (search network)
};

}  // namespace cudarts::nb201
