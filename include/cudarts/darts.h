// The DARTS search space and pipeline pieces (docs/DESIGN.md section 4): the eight primitives,
// search cells of MixedOps (alphas shared per edge among normal cells and among reduction
// cells), the search network, genotype derivation, and the discrete network a genotype
// describes (with drop-path and an auxiliary head) for retraining.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/graph.h"
#include "cudarts/layers.h"
#include "cudarts/mixed_op.h"
#include "cudarts/optim.h"
#include "cudarts/search_model.h"

namespace cudarts::darts {

// In DARTS order: none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3,
// sep_conv_5x5, dil_conv_3x3, dil_conv_5x5.
const std::vector<std::string>& primitives();

// One primitive on C channels. `search`: pooling is followed by BatchNorm(affine = false),
// as in the search network. `affine`: BatchNorm parameters in the convolutions. `fuse_relu`:
// the ReLU before each depthwise convolution is fused into it (Conv2dParams::relu_input; the
// same numbers, bit for bit on the CPU); false builds a separate ReLU layer (for comparisons).
std::unique_ptr<Layer> make_primitive(Context& ctx, const std::string& primitive,
                                      const std::string& name, int64_t channels, int stride,
                                      bool affine, bool search, bool fuse_relu = true);

// ReLU - Conv(k, stride, pad) - BN. With `fuse_relu` a 1x1 convolution takes the ReLU as it
// loads its input (Conv2dParams::relu_input; the same numbers, bit for bit on the CPU).
std::unique_ptr<Layer> relu_conv_bn(Context& ctx, const std::string& name, int64_t c_in,
                                    int64_t c_out, int kernel, int stride, int pad, bool affine,
                                    bool fuse_relu = true);

// ReLU, then two 1x1 stride-2 convolutions (on x and on x shifted by one pixel), each to
// c_out / 2 channels, concatenated, then BN. Halves H and W (which must be even).
class FactorizedReduce final : public Layer {
 public:
  FactorizedReduce(Context& ctx, std::string name, int64_t c_in, int64_t c_out, bool affine);
  const char* type() const override { return "FactorizedReduce"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;
  BatchNorm2d* trailing_norm() override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  Tensor forward_to_norm_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_from_norm_impl(Context& ctx, const Tensor& dz) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override { relu_x_shape_ = Shape(); }

 private:
  Tensor branches(Context& ctx, const Tensor& x, Mode mode);  // the concatenation before bn_
  Tensor branches_backward(Context& ctx, const Tensor& dcat);
  int64_t c_in_, c_out_;
  std::unique_ptr<ReLU> relu_;
  std::unique_ptr<Conv2d> conv1_, conv2_;
  std::unique_ptr<BatchNorm2d> bn_;
  Shape relu_x_shape_;
};

// Per-sample drop-path with probability drop_prob (Train mode only; identity otherwise).
class DropPath final : public Layer {
 public:
  explicit DropPath(std::string name);
  const char* type() const override { return "DropPath"; }
  Shape output_shape(const Shape& x) const override { return x; }
  void set_drop_prob(float p);
  float drop_prob() const { return drop_prob_; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override { scales_ = Tensor(); }

 private:
  float drop_prob_ = 0.0f;
  Tensor scales_;
  bool dropped_ = false;
};

// PC-DARTS's partial channel connection (Xu et al., ICLR 2020) around an edge's layer: of the
// input's C channels the first C / k go through `inner` (built for C / k channels), the other
// ones bypass it (through a 2x2 max pooling on a stride-2 edge), the two are concatenated and
// the channels shuffled in k groups (ops::channel_shuffle).
class PartialChannels final : public Layer {
 public:
  PartialChannels(std::string name, std::unique_ptr<Layer> inner, int64_t channels, int k,
                  int stride);
  const char* type() const override { return "PartialChannels"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;
  Layer& inner() { return *inner_; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;

 private:
  std::unique_ptr<Layer> inner_;
  std::unique_ptr<MaxPool2d> pool_;  // the stride-2 bypass
  int64_t channels_;
  int k_;
  Shape x_shape_;
};

// PC-DARTS's edge normalisation: y = softmax(beta)_index * inner(x), beta the architecture
// parameter of the node the edge feeds (one entry per incoming edge, owned by the network and
// shared by the cells of one kind). Backward: dbeta += softmax-backward of g, g_index =
// <dy, inner(x)> (when beta wants a gradient), inner gets softmax(beta)_index dy.
class EdgeWeight final : public Layer {
 public:
  EdgeWeight(std::string name, std::unique_ptr<Layer> inner, Parameter& beta, int index);
  const char* type() const override { return "EdgeWeight"; }
  Shape output_shape(const Shape& x) const override { return inner_->output_shape(x); }
  std::vector<Layer*> children() const override { return {inner_.get()}; }
  Layer& inner() { return *inner_; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  void release_saved_impl() override;

 private:
  std::unique_ptr<Layer> inner_;
  Parameter& beta_;
  int index_;
  Tensor weights_, out_;
  bool grad_beta_ = false;
};

// ---------------------------------------------------------------- anti-collapse (section 9)
// DARTS- (Chu et al., ICLR 2021): an auxiliary skip connection parallel to an edge's MixedOp,
// y = inner(x) + w skip(x), skip the identity (stride 1) or FactorizedReduce without affine
// BatchNorm (stride 2, its weights trained with the others); w is set per epoch and decays to
// 0 over the search (auxiliary_skip_weight). With w = 0 the skip is not computed.
class AuxiliarySkip final : public Layer {
 public:
  AuxiliarySkip(Context& ctx, std::string name, std::unique_ptr<Layer> inner, int64_t channels,
                int stride);
  const char* type() const override { return "AuxiliarySkip"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;
  Layer& inner() { return *inner_; }
  void set_weight(float w);  // finite, >= 0
  float weight() const { return weight_; }

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;

 private:
  std::unique_ptr<Layer> inner_;
  std::unique_ptr<FactorizedReduce> reduce_;  // stride 2 only
  float weight_ = 1.0f, used_weight_ = 1.0f;  // used_weight_: the forward's, for its backward
};

// The anti-collapse regularisers of a search; all off by default.
struct RegularizerOptions {
  // beta-DARTS (Ye et al., CVPR 2022): L += lambda(e) mean over edges of logsumexp(alpha_e),
  // lambda(e) = beta_decay e / epochs for 0-based epoch e (the reference code's 50 e / 100 over
  // 50 epochs is beta_decay = 25). 0: off.
  float beta_decay = 0.0f;
  // DARTS-: the auxiliary skip's initial weight w0 (0: no auxiliary skip) and its decay to 0:
  // "linear" w0 (1 - e / epochs) or "cosine" w0 (1 + cos(pi e / epochs)) / 2.
  float auxiliary_skip = 0.0f;
  std::string auxiliary_skip_decay = "linear";
  // P-DARTS-style cap on skip connections per derived cell (-1: none; P-DARTS uses 2).
  int max_skips = -1;
};
void check_regularizers(const RegularizerOptions& r, const char* program);  // ConfigError
float auxiliary_skip_weight(const RegularizerOptions& r, int epoch, int epochs);
float beta_decay_coefficient(const RegularizerOptions& r, int epoch, int epochs);
// alpha.grad += coefficient / E softmax(alpha) for each of the E alphas that want a gradient:
// the gradient of coefficient * mean_e logsumexp(alpha_e).
void add_beta_decay_gradient(Context& ctx, const std::vector<Parameter*>& alphas,
                             float coefficient);
// mean_e logsumexp(alpha_e) of host copies of the alphas (0 for none).
double beta_decay_value(const std::vector<std::vector<float>>& alphas);

// Collapse monitors. Parameter-free primitives: none, max_pool_3x3, avg_pool_3x3,
// skip_connect. The share: the mean over edges of the probability on those.
bool is_parameter_free(const std::string& primitive);
double parameter_free_share(const std::vector<std::vector<float>>& probabilities);
// The same over another space's candidate list (probabilities in its order).
double parameter_free_share(const std::vector<std::vector<float>>& probabilities,
                            const std::vector<std::string>& primitives);
int count_skips(const std::vector<std::pair<std::string, int>>& genes);

// R-DARTS's collapse signal: the dominant (largest in magnitude) eigenvalue of a Hessian by
// power iteration on central-difference Hessian-vector products, Hv = (g(x + eps v) -
// g(x - eps v)) / (2 eps) (exact for quadratics); stops after `iterations` or when the
// Rayleigh quotient changes by at most tolerance times itself. The start vector is drawn
// from `seed`.
struct HessianOptions {
  int iterations = 20;
  double epsilon = 1e-2;
  double tolerance = 1e-3;
  uint64_t seed = 1;
};
using GradientFn = std::function<std::vector<double>(const std::vector<double>&)>;
double dominant_eigenvalue(const GradientFn& gradient, const std::vector<double>& at,
                           const HessianOptions& o = {});
// Of the mean cross-entropy over `batches` (images, labels), Train mode, with respect to the
// model's alphas (alpha_parameters()). Needs MixedOps whose loss is a function of alpha
// (second_order(): continuous). Leaves the model as it found it: alphas restored bit for bit,
// BatchNorm running statistics too, alpha (and other architecture) gradients zeroed, the
// gradient setting restored; weights and their gradients are not touched.
double alpha_hessian_eigenvalue(Context& ctx, SearchModel& model,
                                const std::vector<std::pair<Tensor, Tensor>>& batches,
                                const HessianOptions& o = {});

struct SearchConfig {
  int64_t channels = 16;  // C
  int cells = 8;
  int steps = 4;       // intermediate nodes per cell
  int multiplier = 4;  // nodes concatenated into the cell output
  int stem_multiplier = 3;
  int64_t in_channels = 3;
  int num_classes = 10;
  MixedOpConfig mixed;  // type, k_on, k_eval, lr of every edge (alpha_group is set per edge)
  // PC-DARTS: partial channel connections on every edge (k = 1: off) and edge normalisation
  // (per node a softmax over its incoming edges' beta, the genotype chosen by alpha times it).
  int partial_channels = 1;
  bool edge_normalization = false;
  // GDAS-FRC: the reduction cells are GDAS's fixed reduction cell (no MixedOps, not searched;
  // the genotype says reduce_cell "gdas_frc"). Needs multiplier 4 and channels divisible by 4.
  bool fixed_reduction = false;
  // DARTS-: an AuxiliarySkip around every edge (its weight: set_auxiliary_skip_weight).
  bool auxiliary_skip = false;
  // Every ReLU before a depthwise convolution fused into it (see make_primitive); false only
  // to measure the fusion against separate ReLU layers.
  bool fuse_relu = true;
};

// The search network: stem (3x3 conv + BN), cells (reductions at 1/3 and 2/3 depth), global
// average pooling, linear classifier. Edge k of normal cells shares alpha group
// "normal.edge<k>", of reduction cells "reduce.edge<k>".
class SearchNetwork final : public Layer {
 public:
  SearchNetwork(Context& ctx, std::string name, const SearchConfig& config);
  const char* type() const override { return "DartsSearchNetwork"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;
  const SearchConfig& config() const { return config_; }
  int num_edges() const;  // per cell: 2 + 3 + ... (14 for 4 steps)
  // The edge's MixedOp of the first normal / reduction cell (their alphas are the shared ones).
  MixedOp& edge(bool reduction, int k);
  // With edge normalisation: per edge (DARTS order) the weight softmax(beta_node)_edge of the
  // first normal / reduction cell (reads to the host); without: all ones.
  std::vector<float> edge_weights(bool reduction);
  bool is_reduction(int cell) const;
  // DARTS-: the weight of every edge's auxiliary skip (needs config().auxiliary_skip).
  void set_auxiliary_skip_weight(float w);
  // Every searched edge of every cell (fixed reduction cells have none), in cell then DARTS
  // edge order: its MixedOp and the shape of the candidates' input for network input x
  // (PC-DARTS: the 1/K channels that go through the candidates).
  struct EdgeSite {
    int cell = 0, edge = 0;
    bool reduction = false;
    MixedOp* op = nullptr;
    Shape input;
  };
  std::vector<EdgeSite> edge_sites(const Shape& x);

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  void release_saved_impl() override;

 private:
  SearchConfig config_;
  std::unique_ptr<Sequential> stem_;
  std::vector<std::unique_ptr<Graph>> cells_;
  std::unique_ptr<GlobalAvgPool> gap_;
  std::unique_ptr<Linear> classifier_;
  std::vector<Shape> state_shapes_;
  std::vector<Parameter*> betas_normal_, betas_reduce_;  // per node (edge normalisation)
  std::vector<AuxiliarySkip*> aux_skips_;                // every edge's (DARTS-)
};

// A derived cell: for each node two (op, input) pairs; inputs 0, 1 are the cell inputs.
struct Genotype {
  std::vector<std::pair<std::string, int>> normal, reduce;
  std::vector<int> normal_concat, reduce_concat;
  // "" (reduction cells from `reduce`) or "gdas_frc": GDAS's fixed reduction cell (reduce and
  // reduce_concat are then empty); JSON "reduce_cell".
  std::string reduce_cell;
  std::string to_json() const;
  static Genotype from_json(const std::string& text);  // validates ops and inputs
  // The DARTS reference implementation's Python notation (its genotypes.py; namedtuple repr):
  //   Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
  //            reduce_concat=[2, 3, 4, 5])
  // Reading takes keyword or positional fields, either quote, comments, trailing commas,
  // range(a, b) for concat; with a `name`, the top-level assignment `name = ...` of a whole
  // file (aliases followed). Validated like JSON. Writing throws for a fixed reduction cell.
  std::string to_python() const;
  static Genotype from_python(const std::string& text, const std::string& name = "");
  // JSON when the text starts with '{', else the Python notation.
  static Genotype parse(const std::string& text, const std::string& name = "");
  bool operator==(const Genotype& o) const;
};

// DARTS derivation from per-edge probabilities (edges x primitives, DARTS edge order): per
// node the two incoming edges with the strongest non-none op, each with that op. An empty
// `reduce` (a search with fixed reduction cells) gives reduce_cell "gdas_frc". max_skips >= 0
// caps the skip connections per cell (P-DARTS): while a cell has more, the chosen skip with
// the lowest probability is removed from its edge's candidates and the cell derived again.
Genotype derive_genotype(const std::vector<std::vector<float>>& normal,
                         const std::vector<std::vector<float>>& reduce, int steps = 4,
                         int max_skips = -1);
// The per-edge softmax(alpha) of a search network (normal, reduce).
std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>> edge_probabilities(
    SearchNetwork& net);

struct EvalConfig {
  int64_t channels = 36;
  int cells = 20;
  int64_t in_channels = 3;
  int num_classes = 10;
  bool auxiliary = true;
};

// A discrete network that darts_train retrains: a training forward that may give auxiliary
// logits, and drop-path.
class RetrainNetwork : public Layer {
 public:
  using Layer::Layer;
  virtual void set_drop_path_prob(float p) = 0;
  // Training: returns {logits, aux_logits} (aux undefined without an auxiliary head);
  // backward takes both gradients (daux may be undefined).
  virtual std::pair<Tensor, Tensor> forward_train(Context& ctx, const Tensor& x) = 0;
  virtual void backward_train(Context& ctx, const Tensor& dlogits, const Tensor& daux) = 0;
};

// The discrete network of a genotype (DARTS NetworkCIFAR): affine BatchNorm everywhere,
// drop-path on every non-identity op, auxiliary head after the cell at 2/3 depth.
class EvalNetwork final : public RetrainNetwork {
 public:
  EvalNetwork(Context& ctx, std::string name, const Genotype& genotype, const EvalConfig& config);
  const char* type() const override { return "DartsEvalNetwork"; }
  Shape output_shape(const Shape& x) const override;
  std::vector<Layer*> children() const override;
  void set_drop_path_prob(float p) override;
  std::pair<Tensor, Tensor> forward_train(Context& ctx, const Tensor& x) override;
  void backward_train(Context& ctx, const Tensor& dlogits, const Tensor& daux) override;

 protected:
  Tensor forward_impl(Context& ctx, const Tensor& x, Mode mode) override;
  Tensor backward_impl(Context& ctx, const Tensor& dy) override;
  std::string to_onnx_impl(onnx::GraphBuilder& g, const std::string& x) override;
  void release_saved_impl() override;

 private:
  Tensor run(Context& ctx, const Tensor& x, Mode mode, Tensor* aux);
  Tensor run_backward(Context& ctx, const Tensor& dy, const Tensor* daux);

  EvalConfig config_;
  std::unique_ptr<Sequential> stem_;
  std::vector<std::unique_ptr<Graph>> cells_;
  std::vector<DropPath*> drop_paths_;
  std::unique_ptr<Sequential> aux_head_;
  int aux_cell_ = -1;
  std::unique_ptr<GlobalAvgPool> gap_;
  std::unique_ptr<Linear> classifier_;
  bool aux_used_ = false;
};

// Second-order DARTS (Liu et al., ICLR 2019, eqs. 7-8), for continuous MixedOps. With one
// virtual step of the weight optimizer, w' = w - xi (momentum buf + g_train + wd w) (its
// momentum buffer and weight decay, learning rate xi), the architecture gradient is
//   grad_a L_val(w', a) - xi (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps),
//   w+- = w +- eps grad_w' L_val(w', a),   eps = 0.01 / ||grad_w' L_val(w', a)||,
// the Hessian-vector product by central differences. Written into the architecture
// parameters' gradients (=). The weights and alphas are left unchanged; the operational
// gradients are overwritten (zero them before the weight step, as usual); BatchNorm running
// statistics see the extra batches, as in the reference implementation. Four forward and
// backward passes and one host read (the norm): not capturable in a StepGraph. Each pass
// computes only the gradients it uses (the first the weights', the last two the alphas'; the
// parameters' requires_grad flags are restored on return); skip_unused_gradients = false
// computes every gradient in every pass (the same result, for checking). On several ranks
// (ctx.communicator()) every pass's gradients are averaged over them: the result is the whole
// batch's second-order gradient on every rank.
void unrolled_architecture_gradient(Context& ctx, SearchModel& model, const SGD& weights, float xi,
                                    const Tensor& x_train, const Tensor& y_train,
                                    const Tensor& x_val, const Tensor& y_val,
                                    bool skip_unused_gradients = true);

}  // namespace cudarts::darts
