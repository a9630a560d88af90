// The DARTS search space: reference weight counts, alpha sharing, gradient checks through
// FactorizedReduce and whole (tiny) search and discrete networks, genotype derivation.
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <tuple>

#include "cudarts/hardware.h"
#include "gradcheck.h"

namespace cudarts {
namespace {

using namespace darts;

TEST(DartsSearchSpace, ReferenceWeightCountAndSharedAlphas) {
  Context ctx;
  SearchConfig cfg;  // C = 16, 8 cells, 3 input channels, 10 classes
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  EXPECT_EQ(test::count_weights(model.operational_parameters()),
            1930618);  // the DARTS search model
  // 14 normal and 14 reduction alphas of 8 primitives, shared by the cells of each kind.
  EXPECT_EQ(model.architecture_parameters().size(), 28u);
  EXPECT_EQ(model.alphas().numel(), 28 * 8);
  EXPECT_EQ(model.mixed_ops().size(), 8u * 14u);
  auto& net = static_cast<SearchNetwork&>(model.network());
  EXPECT_EQ(net.num_edges(), 14);
  EXPECT_TRUE(net.is_reduction(2) && net.is_reduction(5) && !net.is_reduction(3));
  // Cells 0 and 1 are normal: their edge 3 shares storage.
  const auto& ops = model.mixed_ops();
  EXPECT_EQ(ops[3].second->alpha().value.raw(), ops[14 + 3].second->alpha().value.raw());
  EXPECT_NE(ops[3].second->alpha().value.raw(), ops[2 * 14 + 3].second->alpha().value.raw());
  EXPECT_EQ(net.output_shape(Shape{2, 3, 32, 32}), (Shape{2, 10}));
}

Genotype darts_v2() {
  Genotype g;
  g.normal = {{"sep_conv_3x3", 0}, {"sep_conv_3x3", 1}, {"sep_conv_3x3", 0}, {"sep_conv_3x3", 1},
              {"sep_conv_3x3", 1}, {"skip_connect", 0}, {"skip_connect", 0}, {"dil_conv_3x3", 2}};
  g.reduce = {{"max_pool_3x3", 0}, {"max_pool_3x3", 1}, {"skip_connect", 2}, {"max_pool_3x3", 1},
              {"max_pool_3x3", 0}, {"skip_connect", 2}, {"skip_connect", 2}, {"max_pool_3x3", 1}};
  g.normal_concat = g.reduce_concat = {2, 3, 4, 5};
  return g;
}

TEST(DartsEvalNetwork, DartsV2ReferenceWeightCount) {
  Context ctx;
  EvalNetwork net(ctx, "net", darts_v2(), EvalConfig{});  // C = 36, 20 cells, auxiliary head
  int64_t main = 0, aux = 0;
  for (auto& [name, p] : net.named_parameters())
    (name.find(".auxiliary.") != std::string::npos ? aux : main) += p->value.numel();
  EXPECT_EQ(main, 3349342);  // DARTS (V2) CIFAR-10 network without its auxiliary head
  EXPECT_GT(aux, 0);
  EXPECT_EQ(net.output_shape(Shape{2, 3, 32, 32}), (Shape{2, 10}));
}

TEST(DartsSearchSpace, FactorizedReduceGradients) {
  Context ctx(Device::cpu(), ContextOptions{3});
  FactorizedReduce fr(ctx, "fr", 3, 4, true);
  Tensor x = test::random_tensor(ctx, Shape{2, 3, 6, 4}, 1);
  test::GradCheckOptions o;
  o.eps = 3e-3;
  test::check_layer(ctx, fr, x, o);
  EXPECT_THROW(fr.output_shape(Shape{2, 3, 5, 4}), Error);
}

// Whole networks are dense with kinks (ReLU and max-pool over batch-normalised maps of a few
// pixels) at every step size that float round-off allows, so finite differences can only
// bound them statistically: most coordinates must match, which a missing or misrouted gradient
// path fails. Components are checked tightly above and in test_gradcheck; the strict
// whole-network check is perf/torch_darts.py against PyTorch autograd (test torch_twin_cpu).
test::GradCheckOptions network_check() {
  test::GradCheckOptions o;
  o.eps = 1e-3;
  o.rtol = 0.05;
  o.atol = 2e-3;
  o.max_checks = 6;
  o.max_kink_fraction = 0.6;
  o.min_match_fraction = 0.6;
  return o;
}

TEST(DartsSearchSpace, WholeSearchNetworkGradients) {
  Context ctx(Device::cpu(), ContextOptions{4});
  SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;  // normal? no: reductions at 1 and 2
  cfg.steps = 2;
  cfg.multiplier = 2;
  cfg.stem_multiplier = 1;
  cfg.mixed.method = std::string("continuous");
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  for (Parameter* a : model.architecture_parameters()) init_normal(ctx, a->value, 0.0f, 0.5f);
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 2);
  test::check_layer(ctx, model.network(), x, network_check());
}

// PC-DARTS's partial channel connection against a direct computation: of x (N, 8, H, W) with
// k = 4, channels 0-1 go through a 1x1 convolution (naive loops here), 2-7 bypass (a 2x2 max
// pooling on the stride-2 edge), then the channels are shuffled in 4 groups: output channel
// i * 4 + j is concatenated channel j * 2 + i.
TEST(PcDarts, PartialChannelsMatchesADirectComputation) {
  for (int stride : {1, 2}) {
    SCOPED_TRACE("stride " + std::to_string(stride));
    Context ctx(Device::cpu(), ContextOptions{8});
    const int64_t n = 2, c = 8, h = 4, w = 6, part = 2;
    auto conv =
        std::make_unique<Conv2d>(ctx, "conv", part, part, 1, Conv2dParams::make(stride, 0), false);
    const std::vector<float> wt = conv->weight().value.to_vector();
    PartialChannels pc("pc", std::move(conv), c, 4, stride);
    const std::vector<float> xv = test::random_vector(size_t(n * c * h * w), 4);
    Tensor x = Tensor::from_vector(ctx, Shape{n, c, h, w}, xv);
    Tensor y = pc.forward(ctx, x, Mode::Eval);
    const int64_t ho = h / stride, wo = w / stride;
    ASSERT_EQ(y.shape(), (Shape{n, c, ho, wo}));
    auto at = [&](int64_t s, int64_t ch, int64_t r, int64_t q) {
      return xv[size_t(((s * c + ch) * h + r) * w + q)];
    };
    std::vector<double> cat(size_t(n * c * ho * wo));
    for (int64_t s = 0; s < n; ++s)
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t r = 0; r < ho; ++r)
          for (int64_t q = 0; q < wo; ++q) {
            double v;
            if (ch < part) {
              v = 0;
              for (int64_t ci = 0; ci < part; ++ci)
                v += double(wt[size_t(ch * part + ci)]) * at(s, ci, r * stride, q * stride);
            } else if (stride == 1) {
              v = at(s, ch, r, q);
            } else {
              v = std::max({at(s, ch, 2 * r, 2 * q), at(s, ch, 2 * r + 1, 2 * q),
                            at(s, ch, 2 * r, 2 * q + 1), at(s, ch, 2 * r + 1, 2 * q + 1)});
            }
            cat[size_t(((s * c + ch) * ho + r) * wo + q)] = v;
          }
    std::vector<double> want(cat.size());
    for (int64_t s = 0; s < n; ++s)
      for (int64_t i = 0; i < c / 4; ++i)
        for (int64_t j = 0; j < 4; ++j)
          for (int64_t e = 0; e < ho * wo; ++e)
            want[size_t((s * c + i * 4 + j) * ho * wo + e)] =
                cat[size_t((s * c + j * (c / 4) + i) * ho * wo + e)];
    EXPECT_TRUE(test::all_close(y.to_vector(), want, 1e-5, 1e-6));
  }
}

TEST(PcDarts, PartialChannelsGradients) {
  Context ctx(Device::cpu(), ContextOptions{9});
  for (int stride : {1, 2}) {
    auto conv =
        std::make_unique<Conv2d>(ctx, "conv", 2, 2, 3, Conv2dParams::make(stride, 1), false);
    PartialChannels pc("pc", std::move(conv), 8, 4, stride);
    Tensor x = test::random_tensor(ctx, Shape{2, 8, 4, 4}, uint32_t(10 + stride));
    test::check_layer(ctx, pc, x);
  }
}

// The whole PC-DARTS search network (partial channels, edge normalisation) by finite
// differences: weights, every alpha and every beta.
TEST(PcDarts, WholeSearchNetworkGradientsIncludingBetas) {
  Context ctx(Device::cpu(), ContextOptions{4});
  SearchConfig cfg;
  cfg.channels = 4;
  cfg.cells = 3;
  cfg.steps = 2;
  cfg.multiplier = 2;
  cfg.stem_multiplier = 1;
  cfg.partial_channels = 2;
  cfg.edge_normalization = true;
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  EXPECT_EQ(model.other_architecture_parameters().size(), 4u);  // 2 nodes x 2 cell kinds
  EXPECT_EQ(model.alpha_parameters().size(), 10u);              // 5 edges x 2 cell kinds: no betas
  EXPECT_EQ(model.architecture_parameters().size(), 14u);
  for (Parameter* a : model.architecture_parameters()) init_normal(ctx, a->value, 0.0f, 0.5f);
  // The edge weights are the softmax of each node's beta.
  auto& net = static_cast<SearchNetwork&>(model.network());
  const std::vector<float> w = net.edge_weights(false);
  ASSERT_EQ(w.size(), 5u);  // 2 + 3 edges
  const std::vector<float> b0 = model.other_architecture_parameters()[0].second->value.to_vector();
  EXPECT_NEAR(w[0] / w[1], std::exp(double(b0[0]) - b0[1]), 1e-5);
  EXPECT_NEAR(w[0] + w[1], 1.0, 1e-6);
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 2);
  test::check_layer(ctx, model.network(), x, network_check());
}

// PC-DARTS searches with about 1/K of the MixedOp activations: the allocator peak of one
// search step (forward and backward) of the search network against DARTS's at the same batch.
TEST(PcDarts, SearchMemoryIsAFractionOfDarts) {
  auto peak = [](int k) {
    Context ctx(Device::cpu(), ContextOptions{1});
    SearchConfig cfg;
    cfg.channels = 16;
    cfg.cells = 3;
    cfg.in_channels = 1;
    cfg.partial_channels = k;
    cfg.edge_normalization = k > 1;
    SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
    Tensor x = test::random_tensor(ctx, Shape{16, 1, 16, 16}, 1);
    const size_t base = ctx.allocator().stats().current_bytes;
    ctx.allocator().reset_peak();
    {
      Tensor y = model.forward(ctx, x, Mode::Train);
      Tensor dy = test::random_tensor(ctx, y.shape(), 2);
      model.backward(ctx, dy);
    }
    return double(ctx.allocator().stats().peak_bytes - base);
  };
  const double darts = peak(1), pc = peak(4);
  std::printf(
      "[ measured ] search step peak, C=16, 3 cells, batch 16, 16x16: DARTS %.0f bytes, "
      "PC-DARTS (K=4) %.0f bytes, ratio %.3f\n",
      darts, pc, pc / darts);
  EXPECT_LT(pc / darts, 0.5);
}

// GDAS-FRC: the fixed reduction cell's weights counted by hand, its output shape, and the
// whole search network with fixed reduction cells by finite differences (only normal alphas).
TEST(GdasFrc, FixedReductionCellWeightsShapeAndGradients) {
  Context ctx(Device::cpu(), ContextOptions{4});
  Genotype g = darts_v2();
  g.reduce.clear();
  g.reduce_concat.clear();
  g.reduce_cell = "gdas_frc";
  EvalConfig ecfg;
  ecfg.channels = 8;
  ecfg.cells = 3;  // normal (C 8), FRC (C 16, after a normal cell), FRC (C 32, after a reduction)
  ecfg.auxiliary = false;
  EvalNetwork eval(ctx, "net", g, ecfg);
  std::map<int, int64_t> per_cell;
  for (auto& [name, p] : eval.named_parameters()) {
    const size_t at = name.find("cell");
    if (at != std::string::npos) per_cell[std::stoi(name.substr(at + 4))] += p->value.numel();
  }
  // One side: 1x3 and 3x1 convolutions in 8 groups (C * C/8 * 3 each), BN (2 C), 1x1
  // convolution (C^2), BN (2 C); the pooling side: BN (2 C). Two sides.
  auto frc_body = [](int64_t c) { return 2 * (2 * c * (c / 8) * 3 + c * c + 4 * c + 2 * c); };
  // Preprocessing: ReLU-1x1 conv-BN (c_in C + 2 C); after a reduction cell, s0 goes through
  // FactorizedReduce (two 1x1 convolutions to C/2 each, then BN: c_in C + 2 C as well).
  auto pre = [](int64_t c_in, int64_t c) { return c_in * c + 2 * c; };
  EXPECT_EQ(per_cell[1], pre(24, 16) + pre(32, 16) + frc_body(16));  // stem 3 C, cell 0: 4 C
  EXPECT_EQ(per_cell[2], pre(32, 32) + pre(64, 32) + frc_body(32));
  EXPECT_EQ(eval.output_shape(Shape{2, 3, 16, 16}), (Shape{2, 10}));
  Tensor y = eval.forward(ctx, test::random_tensor(ctx, Shape{2, 3, 16, 16}, 1), Mode::Eval);
  EXPECT_EQ(y.shape(), (Shape{2, 10}));

  SearchConfig cfg;
  cfg.channels = 4;  // reduction cells at C 8 and 16
  cfg.cells = 3;
  cfg.stem_multiplier = 1;
  cfg.fixed_reduction = true;
  cfg.mixed.method = std::string("continuous");
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  EXPECT_EQ(model.architecture_parameters().size(), 14u);  // the normal cell's edges only
  for (Parameter* a : model.architecture_parameters()) init_normal(ctx, a->value, 0.0f, 0.5f);
  auto& net = static_cast<SearchNetwork&>(model.network());
  const auto [normal, reduce] = edge_probabilities(net);
  EXPECT_EQ(normal.size(), 14u);
  EXPECT_TRUE(reduce.empty());
  const Genotype derived = derive_genotype(normal, reduce);
  EXPECT_EQ(derived.reduce_cell, "gdas_frc");
  EXPECT_TRUE(derived.reduce.empty() && derived.reduce_concat.empty());
  EXPECT_EQ(Genotype::from_json(derived.to_json()), derived);
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 2);
  test::check_layer(ctx, model.network(), x, network_check());

  SearchConfig narrow = cfg;
  narrow.channels = 2;  // reduction cells of 4 channels cannot hold 8 groups
  EXPECT_THROW(SearchNetwork(ctx, "narrow", narrow), Error);
  SearchConfig two = cfg;
  two.multiplier = 2;
  EXPECT_THROW(SearchNetwork(ctx, "two", two), Error);
}

TEST(DartsEvalNetwork, WholeNetworkGradientsAndAuxiliaryHead) {
  Context ctx(Device::cpu(), ContextOptions{5});
  EvalConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;
  cfg.auxiliary = false;
  Genotype g = darts_v2();
  EvalNetwork net(ctx, "net", g, cfg);
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 2);
  test::check_layer(ctx, net, x, network_check());

  // With the auxiliary head (needs 8x8 maps at 2/3 depth: 32x32 input).
  EvalConfig acfg;
  acfg.channels = 4;
  acfg.cells = 3;
  EvalNetwork with_aux(ctx, "aux", g, acfg);
  with_aux.set_drop_path_prob(0.2f);
  Tensor big = test::random_tensor(ctx, Shape{2, 3, 32, 32}, 3);
  auto [logits, aux] = with_aux.forward_train(ctx, big);
  ASSERT_TRUE(aux.defined());
  EXPECT_EQ(aux.shape(), (Shape{2, 10}));
  with_aux.backward_train(ctx, test::random_tensor(ctx, logits.shape(), 4),
                          test::random_tensor(ctx, aux.shape(), 5));
  double aux_grad = 0;
  for (auto& [name, p] : with_aux.named_parameters())
    if (name.find(".auxiliary.") != std::string::npos)
      for (float v : p->grad.to_vector()) aux_grad += std::abs(v);
  EXPECT_GT(aux_grad, 0.0);
}

TEST(DartsSearchSpace, DropPathDropsWholeSamplesAndRescales) {
  Context ctx(Device::cpu(), ContextOptions{6});
  DropPath dp("dp");
  dp.set_drop_prob(0.5f);
  Tensor x = Tensor::full(ctx, Shape{64, 2, 2, 2}, 1.0f);
  Tensor y = dp.forward(ctx, x, Mode::Train);
  const auto v = y.to_vector();
  int dropped = 0;
  for (int n = 0; n < 64; ++n) {
    const float first = v[size_t(n * 8)];
    for (int j = 0; j < 8; ++j) ASSERT_EQ(v[size_t(n * 8 + j)], first);
    ASSERT_TRUE(first == 0.0f || first == 2.0f);
    dropped += first == 0.0f;
  }
  EXPECT_GT(dropped, 16);
  EXPECT_LT(dropped, 48);
  Tensor dx = dp.backward(ctx, Tensor::full(ctx, x.shape(), 1.0f));
  EXPECT_EQ(dx.to_vector(), v);
  EXPECT_EQ(dp.forward(ctx, x, Mode::Eval).to_vector(), x.to_vector());
}

TEST(DartsGenotype, DerivesTwoStrongestEdgesIgnoringNone) {
  // 14 edges x 8 primitives; every edge prefers 'none' most, which must be ignored.
  std::vector<std::vector<float>> w(14, std::vector<float>(8, 0.01f));
  for (auto& e : w) e[0] = 0.9f;
  // Node 0 (edges 0, 1): edge 1 sep_conv_3x3 0.5, edge 0 max_pool 0.3.
  w[1][4] = 0.5f;
  w[0][1] = 0.3f;
  // Node 1 (edges 2..4): edge 4 dil_conv_5x5 0.6, edge 2 skip 0.4, edge 3 weaker.
  w[4][7] = 0.6f;
  w[2][3] = 0.4f;
  w[3][5] = 0.2f;
  // Node 2 (edges 5..8): ties between edges 6 and 8 go to the lower index.
  w[6][2] = 0.3f;
  w[8][2] = 0.3f;
  // Node 3 (edges 9..13): edge 13 sep_conv_5x5, edge 10 dil_conv_3x3.
  w[13][5] = 0.7f;
  w[10][6] = 0.6f;
  const Genotype g = derive_genotype(w, w);
  const std::vector<std::pair<std::string, int>> want = {
      {"sep_conv_3x3", 1}, {"max_pool_3x3", 0}, {"dil_conv_5x5", 2}, {"skip_connect", 0},
      {"avg_pool_3x3", 1}, {"avg_pool_3x3", 3}, {"sep_conv_5x5", 4}, {"dil_conv_3x3", 1}};
  EXPECT_EQ(g.normal, want);
  EXPECT_EQ(g.normal_concat, (std::vector<int>{2, 3, 4, 5}));
  EXPECT_EQ(Genotype::from_json(g.to_json()), g);
}

TEST(DartsGenotype, JsonValidation) {
  Genotype g = darts_v2();
  std::string text = g.to_json();
  EXPECT_NO_THROW(Genotype::from_json(text));
  auto bad = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  EXPECT_THROW(Genotype::from_json(bad("\"dil_conv_3x3\"", "\"conv_7x7\"")), Error);
  EXPECT_THROW(Genotype::from_json(bad("\"dil_conv_3x3\",\n      2", "\"dil_conv_3x3\",\n      9")),
               Error);
  EXPECT_THROW(Genotype::from_json("{"), Error);
  {  // GDAS-FRC genotypes: reduce_cell "gdas_frc" with no reduce genes, nothing else
    nlohmann::json f = nlohmann::json::parse(text);
    f["reduce"] = nlohmann::json::array();
    f["reduce_concat"] = nlohmann::json::array();
    f["reduce_cell"] = "gdas_frc";
    EXPECT_EQ(Genotype::from_json(f.dump()).reduce_cell, "gdas_frc");
    nlohmann::json other = f;
    other["reduce_cell"] = "fixed";
    EXPECT_THROW(Genotype::from_json(other.dump()), InputError);
    nlohmann::json both = nlohmann::json::parse(text);
    both["reduce_cell"] = "gdas_frc";
    EXPECT_THROW(Genotype::from_json(both.dump()), InputError);
  }
  EXPECT_THROW(Genotype::from_json("{\"normal\": []}"), Error);
  // Found by fuzzing: a concat index too big for an int was converted (undefined behaviour);
  // an input index of 2^32 wrapped to 0 and was accepted; a non-integer escaped as a JSON
  // library exception. Each is an InputError now.
  nlohmann::json j = nlohmann::json::parse(text);
  for (auto tamper : std::vector<std::function<void(nlohmann::json&)>>{
           [](nlohmann::json& x) { x["reduce_concat"][2] = 1e80; },
           [](nlohmann::json& x) { x["reduce_concat"][2] = "two"; },
           [](nlohmann::json& x) { x["normal"][0][1] = int64_t(1) << 32; },
           [](nlohmann::json& x) { x["normal"][0][1] = 1.5; },
           [](nlohmann::json& x) {
             x["normal_concat"] = {2, 3, 4, uint64_t(1) << 63};
           }}) {
    nlohmann::json t = j;
    tamper(t);
    EXPECT_THROW(Genotype::from_json(t.dump()), InputError) << t.dump();
  }
}

// The DARTS reference implementation's genotypes.py, as published (DARTS_V2 from the DARTS
// repository, PC_DARTS_cifar from the PC-DARTS repository, in the multi-line style with
// double quotes and range() that reformatted copies use), with the surrounding definitions.
const char* kGenotypesPy = R"py(from collections import namedtuple

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')

PRIMITIVES = [
    'none',
    'max_pool_3x3',
]

DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])

PC_DARTS_cifar = Genotype(
    normal=[
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),  # node 0
        ("sep_conv_3x3", 0),
        ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0),
        ("dil_conv_3x3", 1),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("sep_conv_5x5", 1),
        ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 2),
    ],
    reduce_concat=range(2, 6),
)

DARTS = DARTS_V2
)py";

TEST(DartsGenotype, ReadsAndWritesThePythonNotation) {
  const Genotype v2 = darts_v2();
  // namedtuple's repr is the published line: writing gives it back character for character.
  const std::string published =
      std::string(kGenotypesPy)
          .substr(std::string(kGenotypesPy).find("Genotype(normal=[('sep"),
                  std::string(kGenotypesPy).find("\n\nPC_DARTS") -
                      std::string(kGenotypesPy).find("Genotype(normal=[('sep"));
  EXPECT_EQ(v2.to_python(), published);
  EXPECT_EQ(Genotype::from_python(published), v2);
  EXPECT_EQ(Genotype::from_python("DARTS_V2 = " + published + "  # comment\n"), v2);
  EXPECT_EQ(Genotype::parse(v2.to_json()), v2);
  EXPECT_EQ(Genotype::parse(published), v2);

  Genotype pc;
  pc.normal = {{"sep_conv_3x3", 1}, {"skip_connect", 0}, {"sep_conv_3x3", 0}, {"dil_conv_3x3", 1},
               {"sep_conv_5x5", 0}, {"sep_conv_3x3", 1}, {"avg_pool_3x3", 0}, {"dil_conv_3x3", 1}};
  pc.reduce = {{"sep_conv_5x5", 1}, {"max_pool_3x3", 0}, {"sep_conv_5x5", 1}, {"sep_conv_5x5", 2},
               {"sep_conv_3x3", 0}, {"sep_conv_3x3", 3}, {"sep_conv_3x3", 1}, {"sep_conv_3x3", 2}};
  pc.normal_concat = pc.reduce_concat = {2, 3, 4, 5};
  EXPECT_EQ(Genotype::from_python(kGenotypesPy, "PC_DARTS_cifar"), pc);
  EXPECT_EQ(Genotype::from_python(kGenotypesPy, "DARTS"), v2);  // an alias
  EXPECT_EQ(Genotype::parse(kGenotypesPy, "DARTS_V2"), v2);
  EXPECT_EQ(Genotype::from_python(pc.to_python()), pc);
  // Positional fields, range(b), list(range()), a tuple's trailing comma.
  const Genotype small = Genotype::from_python(
      "Genotype([('skip_connect', 0,), ('max_pool_3x3', 1)], list(range(2, 3)), "
      "[('avg_pool_3x3', 1), ('skip_connect', 0)], range(3))");
  EXPECT_EQ(small.normal,
            (std::vector<std::pair<std::string, int>>{{"skip_connect", 0}, {"max_pool_3x3", 1}}));
  EXPECT_EQ(small.normal_concat, (std::vector<int>{2}));
  EXPECT_EQ(small.reduce_concat, (std::vector<int>{0, 1, 2}));
}

TEST(DartsGenotype, PythonNotationErrorsNameThePlace) {
  const std::string v2 = darts_v2().to_python();
  auto error_of = [](const std::string& text, const std::string& name = "") {
    try {
      Genotype::from_python(text, name);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = v2;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  EXPECT_NE(error_of(with("'dil_conv_3x3'", "'conv_7x7'")).find("conv_7x7"), std::string::npos);
  EXPECT_NE(error_of(with("('dil_conv_3x3', 2)", "('dil_conv_3x3', 7)")).find("input 7"),
            std::string::npos);
  // Found by fuzzing: a byte that is not UTF-8 inside an op name escaped as a JSON library
  // exception; op names are identifiers.
  EXPECT_NE(error_of(with("'skip_connect', 2), ('max", "'skip_c\x99nnect', 2), ('max"))
                .find("letters, digits"),
            std::string::npos);
  EXPECT_NE(error_of(with("normal_concat=", "normal_cat=")).find("field 'normal_cat'"),
            std::string::npos);
  EXPECT_NE(error_of(with(", reduce_concat=[2, 3, 4, 5]", "")).find("'reduce_concat'"),
            std::string::npos);
  EXPECT_NE(error_of(with("normal_concat=[2, 3, 4, 5]", "normal_concat=range(0, 1000000)"))
                .find("more than 64"),
            std::string::npos);
  EXPECT_NE(error_of(with("('sep_conv_3x3', 1)", "('sep_conv_3x3', 12345678901)"))
                .find("at most 9 digits"),
            std::string::npos);
  const std::string cut = error_of(v2.substr(0, 60));
  EXPECT_NE(cut.find("line 1 column 61"), std::string::npos) << cut;
  EXPECT_NE(error_of("Genotype(normal=[('skip_connect',\n 0)], normal=[])").find("line 2"),
            std::string::npos);
  EXPECT_NE(error_of(kGenotypesPy).find("--genotype-name"), std::string::npos);
  EXPECT_NE(error_of(kGenotypesPy, "NASNet").find("no assignment 'NASNet"), std::string::npos);
  EXPECT_NE(error_of(kGenotypesPy, "Genotype").find("neither a Genotype"), std::string::npos);
  EXPECT_NE(error_of("A = B\nB = A\n", "A").find("cycle"), std::string::npos);
  EXPECT_THROW(Genotype::parse(darts_v2().to_json(), "DARTS"), InputError);
  Genotype frc = darts_v2();
  frc.reduce.clear();
  frc.reduce_concat.clear();
  frc.reduce_cell = "gdas_frc";
  EXPECT_THROW(frc.to_python(), InputError);
}

TEST(DartsSearchSpace, BinaryTypesRunEndToEnd) {
  for (std::string t : {std::string("binary"), std::string("masked"), std::string("proxyless"),
                        std::string("moving-average")}) {
    Context ctx(Device::cpu(), ContextOptions{7});
    SearchConfig cfg;
    cfg.channels = 2;
    cfg.cells = 2;
    cfg.steps = 2;
    cfg.multiplier = 2;
    cfg.mixed = MixedOpConfig{t, 1, 3, 0.1f, ""};
    SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
    Adam arch(ctx, model.architecture_parameters(), AdamParams{});
    model.attach_architecture_optimizer(arch);
    Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 1);
    Tensor y = model.forward(ctx, x, Mode::Train);
    model.backward(ctx, test::random_tensor(ctx, y.shape(), 2));
    arch.step(ctx);
    double g = 0;
    for (Parameter* p : model.architecture_parameters())
      for (float v : p->grad.to_vector()) g += std::abs(v);
    EXPECT_GT(g, 0.0) << mixed_op_type_name(t);
  }
}

// Second-order DARTS against finite differences of the quantity it approximates: the
// validation loss after one virtual weight step, F(a) = L_val(w - xi (m buf + grad_w
// L_train(w, a) + wd w), a), on a small model of two stacked continuous MixedOps (no
// BatchNorm, so every pass is a function of w and a alone). The virtual step is recomputed
// here on the host; only forward values enter the reference.
// Layers of type L in a network, counted from its structure.
template <class L>
int count_layers(Layer& l) {
  int n = dynamic_cast<L*>(&l) != nullptr ? 1 : 0;
  for (Layer* c : l.children()) n += count_layers<L>(*c);
  return n;
}

// The 1x1 convolutions that take their ReLU as they load (Conv2dParams::relu_input).
int count_fused_pointwise(Layer& l) {
  auto* c = dynamic_cast<Conv2d*>(&l);
  int n = c && c->params().relu_input && c->params().groups == 1 && c->weight().value.dim(2) == 1 &&
                  c->weight().value.dim(3) == 1
              ? 1
              : 0;
  for (Layer* k : l.children()) n += count_fused_pointwise(*k);
  return n;
}

// A first-order iteration (alpha step on one batch, weight step on another) with and without
// computing the gradients each step discards: the op counts show exactly the skipped calls
// (one backward-filter convolution per Conv2d layer instead of two, one score pass per
// MixedOp instead of two), the updated weights and alphas are bit for bit the same, and the
// peak memory is lower (no candidate outputs kept in the weight step, no convolution inputs
// in the alpha step).
TEST(DartsSearchSpace, FirstOrderIterationSkipsTheGradientsItDiscards) {
  struct Result {
    std::map<std::string, int64_t> calls;
    std::map<std::string, double> bytes;  // read and written (the cost model)
    std::vector<float> weights, alphas;
    size_t peak = 0;
    int normed = 0;           // candidates with a trailing norm, over all MixedOps
    int fused_pointwise = 0;  // 1x1 convolutions with a fused ReLU
  };
  auto iterate = [](bool skip, bool fuse_relu = true, bool fuse_norm = true,
                    bool fuse_lead = true) {
    Context ctx(Device::cpu(), ContextOptions{5});
    SearchConfig cfg;
    cfg.channels = 4;
    cfg.cells = 3;
    cfg.steps = 2;
    cfg.multiplier = 2;
    cfg.in_channels = 1;
    cfg.fuse_relu = fuse_relu;
    cfg.mixed.fuse_norm = fuse_norm;
    cfg.mixed.fuse_lead = fuse_lead;
    SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
    SGD w_opt(ctx, model.operational_parameters(), SgdParams{0.1f, 0.9f, 3e-4f, false});
    AdamParams ap;
    ap.lr = 0.1f;
    Adam a_opt(ctx, model.architecture_parameters(), ap);
    Tensor xv = test::random_tensor(ctx, Shape{4, 1, 8, 8}, 21),
           xt = test::random_tensor(ctx, Shape{4, 1, 8, 8}, 22);
    Tensor yv = Tensor::from_vector_i32(ctx, Shape{4}, {0, 1, 2, 3}),
           yt = Tensor::from_vector_i32(ctx, Shape{4}, {3, 2, 1, 0});
    Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
    auto pass = [&](const Tensor& x, const Tensor& y) {
      Tensor logits = model.forward(ctx, x, Mode::Train);
      Tensor d = Tensor::empty(ctx, logits.shape());
      ops::softmax_xent(ctx, logits, y, loss, d, hits);
      model.backward(ctx, d);
    };
    Result r;
    {
      ctx.allocator().reset_peak();
      OpProfiler prof(ctx);
      model.set_gradients(skip ? Gradients::Architecture : Gradients::All);
      a_opt.zero_grad(ctx);
      pass(xv, yv);
      a_opt.step(ctx);
      model.set_gradients(skip ? Gradients::Operational : Gradients::All);
      w_opt.zero_grad(ctx);
      pass(xt, yt);
      w_opt.step(ctx);
      for (const auto& row : prof.report_by_op()) {
        r.calls[row.op] = row.calls;
        r.bytes[row.op] = row.cost.bytes_read + row.cost.bytes_written;
      }
      r.peak = ctx.allocator().stats().peak_bytes;
    }
    for (Parameter* p : model.operational_parameters())
      for (float v : p->value.to_vector()) r.weights.push_back(v);
    r.alphas = model.alphas().to_vector();
    for (const auto& [name, m] : model.mixed_ops())
      for (int i = 0; i < m->num_candidates(); ++i)
        r.normed += m->candidate(i).trailing_norm() ? 1 : 0;
    r.fused_pointwise = count_fused_pointwise(model.network());
    const int convs = count_layers<Conv2d>(model.network());
    const int mixed = int(model.mixed_ops().size());
    return std::make_tuple(r, convs, mixed);
  };
  const auto [all, convs, mixed] = iterate(false);
  const auto [skip, convs2, mixed2] = iterate(true);
  ASSERT_GT(convs, 50);
  // The filter gradients: per edge the 4 leading convolutions' in one group op.
  EXPECT_EQ(all.calls.at("conv2d_bwd_filter"), 2 * (convs - 4 * mixed));
  EXPECT_EQ(skip.calls.at("conv2d_bwd_filter"), convs - 4 * mixed);
  EXPECT_EQ(all.calls.at("depthwise_group_bwd_filter"), 2 * mixed);
  EXPECT_EQ(skip.calls.at("depthwise_group_bwd_filter"),
            mixed);  // weights frozen in the alpha pass
  // Activation gradients in both passes; per edge the 4 convolution candidates' leading
  // depthwise convolutions as one group (input read once, input gradient in one pass).
  EXPECT_EQ(all.calls.at("conv2d_bwd_data"), 2 * (convs - 4 * mixed));
  EXPECT_EQ(skip.calls.at("conv2d_bwd_data"), 2 * (convs - 4 * mixed));
  EXPECT_EQ(skip.calls.at("depthwise_group_bwd_data"), 2 * mixed);
  EXPECT_EQ(skip.calls.at("depthwise_group_fwd"), 2 * mixed);
  // The scores (fused with the edge's backward) only in the alpha pass when skipping.
  EXPECT_EQ(all.calls.at("mix_norm_bwd"), 2 * mixed);
  EXPECT_EQ(skip.calls.at("mix_norm_bwd"), 2 * mixed);
  EXPECT_LT(skip.bytes.at("mix_norm_bwd"), all.bytes.at("mix_norm_bwd"));
  // Every MixedOp's architecture gradient in one launch per backward that wants them, every
  // alpha group's softmax in one per forward.
  EXPECT_EQ(all.calls.at("arch_grad_many"), 2);
  EXPECT_EQ(skip.calls.at("arch_grad_many"), 1);
  EXPECT_EQ(all.calls.count("arch_grad") + skip.calls.count("arch_grad"), 0u);
  EXPECT_EQ(skip.calls.at("softmax_many"), 2);
  EXPECT_EQ(skip.calls.count("softmax"), 0u);
  EXPECT_EQ(all.calls.at("linear_bwd_weight"), 2);
  EXPECT_EQ(skip.calls.at("linear_bwd_weight"), 1);
  EXPECT_EQ(all.calls.at("conv2d_fwd"), skip.calls.at("conv2d_fwd"));
  EXPECT_EQ(skip.weights, all.weights);
  EXPECT_EQ(skip.alphas, all.alphas);
  // The weight pass, the same in both, holds the peak: the BatchNorms inside the mixes keep the
  // candidates' pre-norm values whether or not scores are computed (the unfused comparison
  // below shows the saving skipping makes when the candidates keep their outputs for the scores).
  EXPECT_LE(skip.peak, all.peak);
  std::printf("[ measured ] first-order iteration: peak %zu bytes skipping, %zu computing all\n",
              skip.peak, all.peak);

  // The edge fusions: per edge and pass one batchnorm_stats and one mix_norm_fwd (the
  // candidates' trailing BatchNorms inside the mix), one mix_norm_bwd (no per-candidate scaling
  // or BatchNorm backward), no fills for Zero candidates or per-parameter gradient zeroing.
  auto calls = [](const Result& r, const char* op) {
    auto it = r.calls.find(op);
    return it == r.calls.end() ? int64_t(0) : it->second;
  };
  EXPECT_EQ(calls(skip, "batchnorm_stats"), 2 * mixed);
  EXPECT_EQ(calls(skip, "mix_norm_fwd"), 2 * mixed);
  EXPECT_EQ(calls(skip, "mix_fwd"), 0);
  EXPECT_EQ(calls(skip, "mix_bwd"), 0);
  EXPECT_EQ(calls(skip, "mix_bwd_scores"), 0);
  EXPECT_EQ(calls(skip, "mix_scores"), 0);
  EXPECT_LE(calls(skip, "fill"), 4);
  // The BatchNorms inside the mixes against each candidate's own: the same numbers bit for bit,
  // the trailing BatchNorm of 6 candidates per edge (pools, sep and dil convolutions) and of
  // FactorizedReduce (skip_connect on stride-2 edges) no longer run on their own, the edges'
  // weighted sums and scores go through mix_fwd / mix_bwd(_scores) again.
  [[maybe_unused]] const auto [own, convs4, mixed4] = iterate(true, true, false);
  EXPECT_EQ(own.weights, skip.weights);
  EXPECT_EQ(own.alphas, skip.alphas);
  EXPECT_GE(skip.normed, 6 * mixed);
  EXPECT_LE(skip.normed, 7 * mixed);
  EXPECT_EQ(calls(own, "batchnorm_fwd_train") - calls(skip, "batchnorm_fwd_train"),
            2 * skip.normed);
  EXPECT_EQ(calls(own, "batchnorm_bwd") - calls(skip, "batchnorm_bwd"), 2 * skip.normed);
  EXPECT_EQ(calls(own, "mix_fwd"), 2 * mixed);
  EXPECT_EQ(calls(own, "mix_bwd_scores"), mixed);  // the alpha pass
  EXPECT_EQ(calls(own, "mix_bwd"), mixed);         // the weight pass
  EXPECT_LT(skip.peak, own.peak);
  [[maybe_unused]] const auto [own_all, convs5, mixed5] = iterate(false, true, false);
  EXPECT_EQ(own_all.weights, all.weights);
  EXPECT_LT(own.peak, own_all.peak);  // skipping, with each candidate's own BatchNorm
  std::printf(
      "[ measured ] with each candidate's own BatchNorm: peak %zu bytes skipping, %zu "
      "computing all\n",
      own.peak, own_all.peak);
  // The fused ReLU against separate ReLU layers: the same numbers bit for bit, no ReLU pass
  // before a depthwise convolution, less memory.
  [[maybe_unused]] const auto [unfused, convs3, mixed3] = iterate(true, false);
  EXPECT_EQ(unfused.weights, skip.weights);
  EXPECT_EQ(unfused.alphas, skip.alphas);
  // Per edge 6 depthwise convolutions (2 per sep_conv, 1 per dil_conv), and the cells'
  // preprocessing 1x1 convolutions (one or two per cell), in two forwards.
  EXPECT_EQ(unfused.fused_pointwise, 0);
  EXPECT_GE(skip.fused_pointwise, 4);
  EXPECT_EQ(calls(unfused, "relu_fwd") - calls(skip, "relu_fwd"),
            2 * (6 * mixed + skip.fused_pointwise));
  EXPECT_EQ(calls(unfused, "relu_bwd") - calls(skip, "relu_bwd"),
            2 * (6 * mixed + skip.fused_pointwise));
  EXPECT_LT(skip.peak, unfused.peak);
  // The leading convolutions one by one: the same numbers bit for bit, no group ops, the edges'
  // input gradients summed by add_n again.
  [[maybe_unused]] const auto [single, convs6, mixed6] = iterate(true, true, true, false);
  EXPECT_EQ(single.weights, skip.weights);
  EXPECT_EQ(single.alphas, skip.alphas);
  EXPECT_EQ(calls(single, "depthwise_group_fwd") + calls(single, "depthwise_group_bwd_data") +
                calls(single, "depthwise_group_bwd_filter"),
            0);
  EXPECT_EQ(calls(single, "conv2d_bwd_filter") - calls(skip, "conv2d_bwd_filter"), 4 * mixed);
  EXPECT_EQ(calls(single, "conv2d_bwd_data") - calls(skip, "conv2d_bwd_data"), 2 * 4 * mixed);
  EXPECT_EQ(calls(single, "conv2d_fwd") - calls(skip, "conv2d_fwd"), 2 * 4 * mixed);
  EXPECT_GE(calls(single, "add_n") - calls(skip, "add_n"), 2 * mixed);
  EXPECT_LE(skip.peak, single.peak);
}

TEST(DartsSecondOrder, MatchesFiniteDifferencesOfTheUnrolledLoss) {
  Context ctx(Device::cpu(), ContextOptions{9});
  auto net = std::make_unique<Sequential>("net");
  MixedOpConfig mc;
  mc.method = std::string("continuous");
  for (int layer = 0; layer < 2; ++layer) {
    const int64_t in = layer == 0 ? 5 : 4, out = layer == 0 ? 4 : 3;
    std::vector<std::unique_ptr<Layer>> cands;
    cands.push_back(std::make_unique<Linear>(ctx, "lin", in, out));
    auto relu_lin = std::make_unique<Sequential>("relu_lin");
    relu_lin->emplace<Linear>(ctx, "lin", in, out);
    relu_lin->emplace<ReLU>("relu");
    cands.push_back(std::move(relu_lin));
    cands.push_back(std::make_unique<Linear>(ctx, "lin_nobias", in, out, false));
    net->add(make_mixed_op(ctx, "mix" + std::to_string(layer), std::move(cands), mc));
  }
  SearchModel model(ctx, std::move(net));
  for (Parameter* a : model.architecture_parameters()) init_normal(ctx, a->value, 0.0f, 0.5f);
  SGD w_opt(ctx, model.operational_parameters(), SgdParams{0.1f, 0.9f, 1e-2f, false});
  Tensor xt = test::random_tensor(ctx, Shape{8, 5}, 11),
         xv = test::random_tensor(ctx, Shape{8, 5}, 12);
  std::vector<int32_t> lt(8), lv(8);
  for (int i = 0; i < 8; ++i) lt[size_t(i)] = i % 3, lv[size_t(i)] = (i * 2 + 1) % 3;
  Tensor yt = Tensor::from_vector_i32(ctx, Shape{8}, lt),
         yv = Tensor::from_vector_i32(ctx, Shape{8}, lv);
  Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
  auto pass = [&](const Tensor& x, const Tensor& y, bool backward) {
    for (Parameter* p : model.operational_parameters()) ops::fill(ctx, p->grad, 0.0f);
    for (Parameter* p : model.architecture_parameters()) ops::fill(ctx, p->grad, 0.0f);
    Tensor logits = model.forward(ctx, x, Mode::Train);
    Tensor dl = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, y, loss, dl, hits);
    if (backward)
      model.backward(ctx, dl);
    else
      model.network().release_saved();
    return double(loss.item());
  };
  pass(xt, yt, true);
  w_opt.step(ctx);        // a real step first: the momentum buffers are non-zero
  const float xi = 0.5f;  // large, so the second-order term is clearly visible

  auto alphas = [&] {
    std::vector<float> v;
    for (Parameter* a : model.architecture_parameters())
      for (float x : a->value.to_vector()) v.push_back(x);
    return v;
  };
  auto set_alphas = [&](const std::vector<float>& v) {
    size_t k = 0;
    for (Parameter* a : model.architecture_parameters()) {
      std::vector<float> part(v.begin() + int64_t(k), v.begin() + int64_t(k) + a->value.numel());
      k += part.size();
      Tensor t = Tensor::from_vector(ctx, a->value.shape(), part);
      ops::copy(ctx, t, a->value);
    }
  };
  auto grads_of = [&](const std::vector<Parameter*>& ps) {
    std::vector<float> v;
    for (Parameter* p : ps)
      for (float x : p->grad.to_vector()) v.push_back(x);
    return v;
  };
  const std::vector<Parameter*> w = model.operational_parameters();
  auto unrolled_val_loss = [&](const std::vector<float>& a) {
    set_alphas(a);
    std::vector<std::vector<float>> w0;
    for (Parameter* p : w) w0.push_back(p->value.to_vector());
    pass(xt, yt, true);
    for (size_t i = 0; i < w.size(); ++i) {
      const auto g = w[i]->grad.to_vector(), buf = w_opt.momentum_buffer(i)->to_vector();
      std::vector<float> moved(w0[i].size());
      for (size_t j = 0; j < moved.size(); ++j)
        moved[j] = w0[i][j] - xi * (0.9f * buf[j] + g[j] + 1e-2f * w0[i][j]);
      Tensor t = Tensor::from_vector(ctx, w[i]->value.shape(), moved);
      ops::copy(ctx, t, w[i]->value);
    }
    const double l = pass(xv, yv, false);
    for (size_t i = 0; i < w.size(); ++i) {
      Tensor t = Tensor::from_vector(ctx, w[i]->value.shape(), w0[i]);
      ops::copy(ctx, t, w[i]->value);
    }
    return l;
  };

  const std::vector<float> a0 = alphas();
  std::vector<float> weights_before;
  for (Parameter* p : w)
    for (float x : p->value.to_vector()) weights_before.push_back(x);
  darts::unrolled_architecture_gradient(ctx, model, w_opt, xi, xt, yt, xv, yv);
  const std::vector<float> got = grads_of(model.architecture_parameters());
  EXPECT_EQ(alphas(), a0) << "alphas unchanged";
  std::vector<float> weights_after;
  for (Parameter* p : w)
    for (float x : p->value.to_vector()) weights_after.push_back(x);
  EXPECT_EQ(weights_after, weights_before) << "weights restored exactly";

  std::vector<float> ref(a0.size());
  const float h = 1e-2f;
  for (size_t i = 0; i < a0.size(); ++i) {
    std::vector<float> ap = a0, am = a0;
    ap[i] += h;
    am[i] -= h;
    ref[i] = float((unrolled_val_loss(ap) - unrolled_val_loss(am)) / (2.0 * double(h)));
  }
  set_alphas(a0);
  pass(xv, yv, true);  // first order: grad_a L_val(w, a)
  const std::vector<float> first = grads_of(model.architecture_parameters());
  const double err = test::normalized_error(got, ref),
               first_err = test::normalized_error(first, ref);
  std::printf(
      "[ measured ] second-order alpha gradient vs finite differences: %.2e (first order: %.2e)\n",
      err, first_err);
  EXPECT_LE(err, 2e-3);
  EXPECT_GE(first_err, 10 * err) << "the second-order term should matter in this setting";

  // Sampled MixedOps are refused.
  darts::SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;
  cfg.in_channels = 1;
  cfg.mixed.method = std::string("binary");
  SearchModel binary(ctx, std::make_unique<darts::SearchNetwork>(ctx, "bnet", cfg));
  SGD b_opt(ctx, binary.operational_parameters(), SgdParams{0.1f});
  EXPECT_THROW(darts::unrolled_architecture_gradient(ctx, binary, b_opt, xi, xt, yt, xv, yv),
               Error);
}

// ---------------------------------------------------------------- anti-collapse regularisers

// beta-decay: the value against hand-computed logsumexps, the gradient against central
// differences of the value.
TEST(Regularizers, BetaDecayValueAndGradient) {
  EXPECT_NEAR(beta_decay_value({{0.0f, std::log(3.0f)}}), std::log(4.0), 1e-6);
  EXPECT_NEAR(beta_decay_value({{0.0f, std::log(3.0f)}, {1.0f, 1.0f, 1.0f}}),
              (std::log(4.0) + 1.0 + std::log(3.0)) / 2.0, 1e-6);
  Context ctx(Device::cpu(), ContextOptions{3});
  std::vector<std::unique_ptr<Parameter>> owned;
  std::vector<Parameter*> ps;
  for (int e = 0; e < 3; ++e) {
    owned.push_back(std::make_unique<Parameter>());
    owned.back()->value = Tensor::empty(ctx, Shape{5});
    init_normal(ctx, owned.back()->value, 0.0f, 1.0f);
    owned.back()->grad = Tensor::zeros(ctx, Shape{5});
    ps.push_back(owned.back().get());
  }
  const float c = 2.5f;
  add_beta_decay_gradient(ctx, ps, c);
  auto host = [&] {
    std::vector<std::vector<float>> v;
    for (Parameter* p : ps) v.push_back(p->value.to_vector());
    return v;
  };
  for (size_t e = 0; e < ps.size(); ++e) {
    const std::vector<float> g = ps[e]->grad.to_vector();
    for (int i = 0; i < 5; ++i) {
      auto at = [&](double d) {
        auto v = host();
        v[e][size_t(i)] += float(d);
        return c * beta_decay_value(v);
      };
      const double h = 1e-2, fd = (at(h) - at(-h)) / (2 * h);
      EXPECT_NEAR(g[size_t(i)], fd, 2e-4) << "edge " << e << " op " << i;
    }
  }
  // A frozen alpha gets nothing; a zero coefficient adds nothing.
  ps[0]->requires_grad = false;
  const std::vector<float> before = ps[0]->grad.to_vector();
  add_beta_decay_gradient(ctx, ps, c);
  EXPECT_EQ(ps[0]->grad.to_vector(), before);
  const std::vector<float> mid = ps[1]->grad.to_vector();
  add_beta_decay_gradient(ctx, {ps[1]}, 0.0f);
  EXPECT_EQ(ps[1]->grad.to_vector(), mid);
}

TEST(Regularizers, Schedules) {
  RegularizerOptions r;
  EXPECT_EQ(auxiliary_skip_weight(r, 0, 4), 0.0f);  // off
  r.auxiliary_skip = 1.0f;
  const float linear[] = {1.0f, 0.75f, 0.5f, 0.25f};
  for (int e = 0; e < 4; ++e) EXPECT_FLOAT_EQ(auxiliary_skip_weight(r, e, 4), linear[e]);
  r.auxiliary_skip = 2.0f;
  r.auxiliary_skip_decay = "cosine";  // 2 (1 + cos(pi e / 4)) / 2
  const float cosine[] = {2.0f, 1.70710678f, 1.0f, 0.29289322f};
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(auxiliary_skip_weight(r, e, 4), cosine[e], 1e-6);
  r.beta_decay = 25.0f;  // the reference code's 50 e / 100 over 50 epochs
  for (int e : {0, 1, 17, 49}) EXPECT_FLOAT_EQ(beta_decay_coefficient(r, e, 50), 0.5f * e);
  r.auxiliary_skip_decay = "step";
  EXPECT_THROW(check_regularizers(r, "test"), ConfigError);
  r.auxiliary_skip_decay = "linear";
  r.max_skips = -2;
  EXPECT_THROW(check_regularizers(r, "test"), ConfigError);
  r.max_skips = 2;
  r.beta_decay = -1.0f;
  EXPECT_THROW(check_regularizers(r, "test"), ConfigError);
}

// The auxiliary skip: forward against inner(x) + w x (stride 1), shapes with the reducing skip,
// and both by finite differences (input and every weight, the FactorizedReduce's included).
TEST(Regularizers, AuxiliarySkipForwardAndGradients) {
  Context ctx(Device::cpu(), ContextOptions{5});
  auto conv = [&](int stride) {
    return std::make_unique<Conv2d>(ctx, "conv", 4, 4, 3, Conv2dParams::make(stride, 1), false);
  };
  AuxiliarySkip same(ctx, "same", conv(1), 4, 1);
  same.set_weight(0.7f);
  Tensor x = test::random_tensor(ctx, Shape{2, 4, 6, 6}, 1);
  const std::vector<float> y = same.forward(ctx, x, Mode::Eval).to_vector();
  const std::vector<float> inner = same.inner().forward(ctx, x, Mode::Eval).to_vector();
  const std::vector<float> xv = x.to_vector();
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], inner[i] + 0.7f * xv[i], 1e-6) << i;
  test::GradCheckOptions o;
  o.eps = 3e-3;
  test::check_layer(ctx, same, x, o);
  AuxiliarySkip reduce(ctx, "reduce", conv(2), 4, 2);
  reduce.set_weight(0.4f);
  EXPECT_EQ(reduce.output_shape(x.shape()), (Shape{2, 4, 3, 3}));
  EXPECT_EQ(reduce.named_parameters().size(), 3u);  // conv, the skip's two 1x1 convolutions
  test::check_layer(ctx, reduce, x, o);
  reduce.set_weight(0.0f);  // decayed away: the edge is the inner layer alone
  EXPECT_EQ(reduce.forward(ctx, x, Mode::Eval).to_vector(),
            reduce.inner().forward(ctx, x, Mode::Eval).to_vector());
  EXPECT_THROW(reduce.set_weight(-1.0f), Error);
  EXPECT_THROW(AuxiliarySkip(ctx, "bad", conv(1), 4, 3), Error);
}

// The capped derivation (P-DARTS) on a hand-worked table: the uncapped cell has skips on edges
// 0, 1, 2 and 5 (probabilities 0.5, 0.4, 0.3, 0.2); with at most 2 the weakest go, one at a
// time: edge 5 loses its skip, and node 2 takes edge 5's next best op (all 0.01: the first,
// max_pool_3x3); still 3, so edge 2 loses its skip and node 1 takes its dil_conv_3x3 (0.25).
TEST(DartsGenotype, SkipCapRemovesTheWeakestSkipsFirst) {
  std::vector<std::vector<float>> w(14, std::vector<float>(8, 0.01f));
  const int max_pool = 1, avg = 2, skip = 3, sep3 = 4, sep5 = 5, dil3 = 6, dil5 = 7;
  w[0][skip] = 0.5f, w[0][sep3] = 0.2f;
  w[1][skip] = 0.4f, w[1][max_pool] = 0.1f;
  w[2][skip] = 0.3f, w[2][dil3] = 0.25f;
  w[3][sep5] = 0.35f;
  w[5][skip] = 0.2f;
  w[6][sep3] = 0.45f;
  w[9][avg] = 0.3f;
  w[10][dil5] = 0.28f;
  using Genes = std::vector<std::pair<std::string, int>>;
  const Genes uncapped = {{"skip_connect", 0}, {"skip_connect", 1}, {"sep_conv_5x5", 1},
                          {"skip_connect", 0}, {"sep_conv_3x3", 1}, {"skip_connect", 0},
                          {"avg_pool_3x3", 0}, {"dil_conv_5x5", 1}};
  EXPECT_EQ(derive_genotype(w, w).normal, uncapped);
  EXPECT_EQ(count_skips(uncapped), 4);
  EXPECT_EQ(derive_genotype(w, w, 4, 4).normal, uncapped);
  const Genes capped = {{"skip_connect", 0}, {"skip_connect", 1}, {"sep_conv_5x5", 1},
                        {"dil_conv_3x3", 0}, {"sep_conv_3x3", 1}, {"max_pool_3x3", 0},
                        {"avg_pool_3x3", 0}, {"dil_conv_5x5", 1}};
  const Genotype g = derive_genotype(w, w, 4, 2);
  EXPECT_EQ(g.normal, capped);
  EXPECT_EQ(g.reduce, capped);  // the cap holds per cell
  const Genotype none = derive_genotype(w, w, 4, 0);
  EXPECT_EQ(count_skips(none.normal), 0);
  EXPECT_EQ(none.normal[0], (std::pair<std::string, int>{"sep_conv_3x3", 0}));
  // The parameter-free share of this table: per edge none + pools + skip.
  double share = 0;
  for (const auto& e : w) share += e[0] + e[max_pool] + e[avg] + e[skip];
  EXPECT_NEAR(parameter_free_share(w), share / 14, 1e-6);
}

// Power iteration on a quadratic with a known spectrum: A = Q diag(4, -1, 0.5, 2, 0) Q^T (Q a
// Householder reflection), g(x) = A x + b.
TEST(Hessian, PowerIterationFindsTheDominantEigenvalueOfAQuadratic) {
  const std::vector<double> d = {4.0, -1.0, 0.5, 2.0, 0.0};
  const size_t n = d.size();
  std::vector<double> u = {0.3, -0.7, 0.2, 0.5, 0.1};
  double un = 0;
  for (double x : u) un += x * x;
  std::vector<std::vector<double>> a(n, std::vector<double>(n, 0.0));
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j)
      for (size_t k = 0; k < n; ++k) {
        const double qik = (i == k) - 2 * u[i] * u[k] / un, qjk = (j == k) - 2 * u[j] * u[k] / un;
        a[i][j] += qik * d[k] * qjk;
      }
  int calls = 0;
  auto g = [&](const std::vector<double>& x) {
    ++calls;
    std::vector<double> out(n, 0.25);
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) out[i] += a[i][j] * x[j];
    return out;
  };
  HessianOptions o;
  o.iterations = 200;
  o.tolerance = 1e-13;
  EXPECT_NEAR(dominant_eigenvalue(g, {1.0, 2.0, 3.0, 4.0, 5.0}, o), 4.0, 1e-9);
  EXPECT_LT(calls, 2 * 200);  // stopped on the tolerance
  // A dominant negative eigenvalue is found with its sign.
  for (auto& row : a)
    for (double& x : row) x = -x;
  EXPECT_NEAR(dominant_eigenvalue(g, std::vector<double>(n, 0.0), o), -4.0, 1e-9);
  o.iterations = 0;
  EXPECT_THROW(dominant_eigenvalue(g, std::vector<double>(n, 0.0), o), Error);
}

// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (the test's own reference).
std::vector<double> jacobi_eigenvalues(std::vector<std::vector<double>> a) {
  const size_t n = a.size();
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (size_t p = 0; p < n; ++p)
      for (size_t q = p + 1; q < n; ++q) off += a[p][q] * a[p][q];
    if (off < 1e-30) break;
    for (size_t p = 0; p < n; ++p)
      for (size_t q = p + 1; q < n; ++q) {
        if (std::abs(a[p][q]) < 1e-300) continue;
        const double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        const double t =
            (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (size_t k = 0; k < n; ++k) {  // A <- J^T A J
          const double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (size_t k = 0; k < n; ++k) {
          const double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> e;
  for (size_t i = 0; i < n; ++i) e.push_back(a[i][i]);
  return e;
}

// The alpha Hessian of a smooth network (two MixedOps of 1x1 and 3x3 convolutions, a pooling
// with BatchNorm and a skip, then global pooling and a linear layer: no ReLU or max, so the
// loss is twice differentiable in alpha and finite differences mean something): power
// iteration against the dense Hessian (central differences of the alpha gradient along every
// coordinate, computed here with the model's forward and backward) and its Jacobi spectrum.
// A DARTS search network (ReLU and max-pool kinks everywhere) is then checked to be left as it
// was: alphas, BatchNorm running statistics, outputs.
TEST(Hessian, AlphaHessianEigenvalueMatchesTheDenseHessian) {
  Context ctx(Device::cpu(), ContextOptions{8});
  auto net = std::make_unique<Sequential>("net");
  for (int k = 0; k < 2; ++k) {
    std::vector<std::unique_ptr<Layer>> c;
    c.push_back(std::make_unique<Conv2d>(ctx, "conv1", 3, 3, 1, Conv2dParams{}, false));
    c.push_back(std::make_unique<Conv2d>(ctx, "conv3", 3, 3, 3, Conv2dParams::make(1, 1), false));
    c.push_back(make_primitive(ctx, "avg_pool_3x3", "pool", 3, 1, false, true));
    c.push_back(make_primitive(ctx, "skip_connect", "skip", 3, 1, false, true));
    MixedOpConfig mc;
    mc.method = "continuous";
    net->add(make_mixed_op(ctx, "mix" + std::to_string(k), std::move(c), mc));
  }
  net->emplace<GlobalAvgPool>("gap");
  net->emplace<Linear>(ctx, "fc", 3, 10);
  SearchModel model(ctx, std::move(net));
  for (Parameter* a : model.alpha_parameters()) init_normal(ctx, a->value, 0.0f, 1.0f);
  Tensor x = test::random_tensor(ctx, Shape{8, 3, 6, 6}, 3);
  Tensor y = Tensor::from_vector_i32(ctx, Shape{8}, {0, 1, 2, 3, 4, 5, 6, 7});
  std::vector<std::pair<Tensor, Tensor>> batches;
  batches.emplace_back(x.share(), y.share());
  HessianOptions o;
  o.iterations = 200;
  o.tolerance = 1e-9;
  o.epsilon = 1e-3;
  const double lambda = alpha_hessian_eigenvalue(ctx, model, batches, o);

  const std::vector<Parameter*> alphas = model.alpha_parameters();
  std::vector<float> at;
  for (Parameter* a : alphas)
    for (float v : a->value.to_vector()) at.push_back(v);
  auto grad_at = [&](const std::vector<float>& point) {
    size_t k = 0;
    for (Parameter* a : alphas) {
      std::vector<float> v(size_t(a->value.numel()));
      for (float& e : v) e = point[k++];
      Tensor t = Tensor::from_vector(ctx, a->value.shape(), v);
      ops::copy(ctx, t, a->value);  // into the alphas' shared storage
      ops::fill(ctx, a->grad, 0.0f);
    }
    model.alphas_changed();
    model.set_gradients(Gradients::Architecture);
    Tensor logits = model.forward(ctx, x, Mode::Train);
    Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
    Tensor dl = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, y, loss, dl, hits);
    model.backward(ctx, dl);
    std::vector<double> g;
    for (Parameter* a : alphas)
      for (float v : a->grad.to_vector()) g.push_back(v);
    return g;
  };
  const size_t n = at.size();
  ASSERT_EQ(n, 8u);  // 2 MixedOps x 4 candidates
  std::vector<std::vector<double>> h(n, std::vector<double>(n));
  const float step = 1e-2f;
  for (size_t j = 0; j < n; ++j) {
    std::vector<float> plus = at, minus = at;
    plus[j] += step;
    minus[j] -= step;
    const std::vector<double> gp = grad_at(plus), gm = grad_at(minus);
    for (size_t i = 0; i < n; ++i) h[i][j] = (gp[i] - gm[i]) / (2.0 * step);
  }
  double asym = 0, scale = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      asym = std::max(asym, std::abs(h[i][j] - h[j][i]));
      scale = std::max(scale, std::abs(h[i][j]));
    }
  EXPECT_LT(asym, 1e-2 * scale);  // a smooth loss: the difference Hessian is symmetric
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) h[i][j] = h[j][i] = 0.5 * (h[i][j] + h[j][i]);
  double dominant = 0;
  for (double e : jacobi_eigenvalues(h))
    if (std::abs(e) > std::abs(dominant)) dominant = e;
  std::printf("[ measured ] dominant alpha-Hessian eigenvalue: power iteration %.6f, dense %.6f\n",
              lambda, dominant);
  EXPECT_GT(std::abs(dominant), 1e-3);
  EXPECT_NEAR(lambda, dominant, 0.01 * std::abs(dominant));

  // A DARTS search network is left as it was.
  SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;
  cfg.steps = 1;
  cfg.multiplier = 1;
  cfg.stem_multiplier = 1;
  SearchModel darts(ctx, std::make_unique<SearchNetwork>(ctx, "darts", cfg));
  for (Parameter* a : darts.alpha_parameters()) init_normal(ctx, a->value, 0.0f, 1.0f);
  Tensor xd = test::random_tensor(ctx, Shape{8, 3, 8, 8}, 4);
  for (int i = 0; i < 2; ++i) darts.forward(ctx, xd, Mode::Train);  // running statistics move
  darts.network().release_saved();
  darts.set_gradients(Gradients::Operational);
  auto state = [&] {
    std::vector<std::vector<float>> s;
    for (Parameter* a : darts.alpha_parameters()) s.push_back(a->value.to_vector());
    for (auto& [name, t] : darts.network().named_buffers()) s.push_back(t->to_vector());
    s.push_back(darts.forward(ctx, xd, Mode::Eval).to_vector());
    return s;
  };
  const auto before = state();
  std::vector<std::pair<Tensor, Tensor>> dbatches;
  dbatches.emplace_back(xd.share(), y.share());
  const double ld = alpha_hessian_eigenvalue(ctx, darts, dbatches);
  EXPECT_TRUE(std::isfinite(ld));
  EXPECT_EQ(state(), before);
  EXPECT_EQ(darts.gradients(), Gradients::Operational);
}

// ---------------------------------------------------------------- hardware-aware search

SearchConfig tiny_cost_config() {
  SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;  // normal (C 2), reduction (C 4), reduction (C 8)
  cfg.steps = 2;
  cfg.multiplier = 2;
  cfg.stem_multiplier = 1;
  cfg.in_channels = 1;
  return cfg;
}

// The table of a tiny search network: one site per edge of every cell, parameters by hand,
// FLOPs zero exactly for the candidates without arithmetic, a JSON round trip, bad tables
// refused.
TEST(HardwareAware, CostTableOfEverySite) {
  Context ctx(Device::cpu(), ContextOptions{3});
  SearchNetwork net(ctx, "net", tiny_cost_config());
  CostTableOptions o;
  o.repeats = 3;
  std::vector<std::vector<float>> buffers;
  for (auto& [name, b] : net.named_buffers()) buffers.push_back(b->to_vector());
  const CostTable t = measure_cost_table(ctx, net, Shape{4, 1, 8, 8}, o);
  ASSERT_EQ(t.sites.size(), 15u);         // 3 cells x 5 edges
  std::vector<std::vector<float>> after;  // measuring moved no running statistics
  for (auto& [name, b] : net.named_buffers()) after.push_back(b->to_vector());
  EXPECT_EQ(after, buffers);
  EXPECT_EQ(t.input, (std::vector<int64_t>{4, 1, 8, 8}));
  const size_t none = 0, skip = 3, sep3 = 4, dil3 = 6;
  for (const auto& s : t.sites) {
    ASSERT_EQ(s.candidates.size(), 8u);
    const int64_t c = s.cell == 0 ? 2 : s.cell == 1 ? 4 : 8;
    // sep_conv_3x3: twice (depthwise 9 C + pointwise C^2); dil_conv_3x3 once; no BN weights
    // (affine off in the search network).
    EXPECT_EQ(s.candidates[sep3].params, double(2 * (9 * c + c * c)));
    EXPECT_EQ(s.candidates[dil3].params, double(9 * c + c * c));
    EXPECT_EQ(s.candidates[none].flops, 0.0);
    EXPECT_GT(s.candidates[sep3].flops, s.candidates[dil3].flops);
    // skip_connect is the identity except on the reduction cells' edges from the cell inputs
    // (FactorizedReduce: two 1x1 convolutions to C/2). With 2 steps, edges 0-1 read inputs
    // 0-1 and edges 2-4 inputs 0-2.
    const int input = s.edge < 2 ? s.edge : s.edge - 2;
    if (!s.reduction || input >= 2) EXPECT_EQ(s.candidates[skip].flops, 0.0);
    if (s.reduction && input < 2) EXPECT_EQ(s.candidates[skip].params, double(2 * c * (c / 2)));
    for (const auto& k : s.candidates)
      EXPECT_TRUE(std::isfinite(k.latency_ms) && k.latency_ms >= 0);
  }
  // A training step (forward and backward) costs more than an inference forward.
  double train = 0, infer = 0;
  for (const auto& s : t.sites) {
    EXPECT_TRUE(std::isfinite(s.candidates[sep3].train_ms) && s.candidates[sep3].train_ms > 0);
    train += s.candidates[sep3].train_ms;
    infer += s.candidates[sep3].latency_ms;
  }
  EXPECT_GT(train, infer);
  const CostTable back = CostTable::from_json(t.to_json());
  EXPECT_EQ(back.sites[7].candidates[sep3].train_ms, t.sites[7].candidates[sep3].train_ms);
  ASSERT_EQ(back.sites.size(), t.sites.size());
  EXPECT_EQ(back.sites[7].candidates[sep3].flops, t.sites[7].candidates[sep3].flops);
  EXPECT_EQ(back.device, t.device);
  std::string bad = t.to_json();
  bad.replace(bad.find("\"params\": 0.0"), 13, "\"params\": -1");
  EXPECT_THROW(CostTable::from_json(bad), InputError);
  EXPECT_THROW(CostTable::from_json("{\"device\": 1}"), InputError);
}

// E[c] against the sum over sites of softmax(alpha) . c (probabilities read from each site's
// own MixedOp), its gradient against central differences, and a genotype's cost by hand.
TEST(HardwareAware, ExpectedCostValueGradientAndGenotypeCost) {
  Context ctx(Device::cpu(), ContextOptions{4});
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", tiny_cost_config()));
  auto& net = static_cast<SearchNetwork&>(model.network());
  for (Parameter* a : model.alpha_parameters()) init_normal(ctx, a->value, 0.0f, 1.0f);
  CostTable t = measure_cost_table(ctx, net, Shape{4, 1, 8, 8});
  ExpectedCost cost(ctx, model, net, t, "params");
  const auto sites = net.edge_sites(Shape{4, 1, 8, 8});
  double want = 0;
  for (size_t s = 0; s < sites.size(); ++s) {
    const std::vector<float> p = sites[s].op->probabilities();
    for (size_t i = 0; i < p.size(); ++i) want += p[i] * t.value(s, i, "params");
  }
  EXPECT_NEAR(cost.value(), want, 1e-9 * want);
  for (Parameter* a : model.alpha_parameters()) ops::fill(ctx, a->grad, 0.0f);
  cost.add_gradient(ctx, 1.0f);
  for (Parameter* a : model.alpha_parameters()) {
    const std::vector<float> g = a->grad.to_vector(), v = a->value.to_vector();
    for (size_t i = 0; i < v.size(); ++i) {
      auto at = [&](float d) {
        std::vector<float> w = v;
        w[i] += d;
        Tensor x = Tensor::from_vector(ctx, a->value.shape(), w);
        ops::copy(ctx, x, a->value);
        return cost.value();
      };
      const double fd = (at(1e-2f) - at(-1e-2f)) / 2e-2;
      at(0.0f);
      EXPECT_NEAR(g[i], fd, 1e-3 * std::max(1.0, std::abs(fd))) << i;
    }
  }
  Genotype g;  // steps 2: per node two genes
  g.normal = {{"sep_conv_3x3", 0}, {"skip_connect", 1}, {"dil_conv_3x3", 2}, {"max_pool_3x3", 0}};
  g.reduce = {{"sep_conv_5x5", 1}, {"sep_conv_3x3", 0}, {"skip_connect", 2}, {"dil_conv_5x5", 1}};
  g.normal_concat = g.reduce_concat = {2, 3};
  // Cell 0 normal (C 2), cells 1 and 2 reduction (C 4, 8); node 1's edges are 2, 3, 4.
  auto params = [](const std::string& op, int64_t c) -> double {
    if (op == "sep_conv_3x3") return 2 * (9 * c + c * c);
    if (op == "sep_conv_5x5") return 2 * (25 * c + c * c);
    if (op == "dil_conv_3x3") return 9 * c + c * c;
    if (op == "dil_conv_5x5") return 25 * c + c * c;
    return 0;  // pools, skip (FactorizedReduce on stride-2 edges: its two 1x1 convolutions)
  };
  // Normal cell: sep_conv_3x3 (edge 0), skip (edge 1: identity), dil_conv_3x3 (edge 4), max
  // pool (edge 2); reduction cells: sep_conv_5x5 (edge 1) and sep_conv_3x3 (edge 0), both
  // stride 2 with the weights of stride 1, skip from node 0 (edge 4: identity), dil_conv_5x5
  // (edge 3).
  double hand = params("sep_conv_3x3", 2) + params("dil_conv_3x3", 2);
  for (int64_t c : {4, 8})
    hand += params("sep_conv_5x5", c) + params("sep_conv_3x3", c) + params("dil_conv_5x5", c);
  EXPECT_NEAR(cost.genotype_cost(g), hand / 1e3, 1e-9);  // in thousands
  EXPECT_THROW(ExpectedCost(ctx, model, net, t, "energy"), ConfigError);
  t.sites.pop_back();
  EXPECT_THROW(ExpectedCost(ctx, model, net, t, "params"), ConfigError);
}

// The network's predicted latency is the sum over its ops: a derived network's measured
// latency against the sum of its chosen candidates' latencies from the table plus the fixed
// part (stem, preprocessing, sums, concatenations, pooling, classifier), the latter taken once
// from a reference genotype. Random genotypes, inference, on the default device; the error is
// reported (the bound here is loose: other tests share the two cores under ctest -j2).
// The cost table of a small search network measured on ctx's device, and the whole derived
// network's latency predicted from it against its measured latency for four random
// architectures (the table's sums plus one fixed offset, measured on a fifth). Prints each
// error; the issue aims for 15 % on the GPU, the assertion only catches a broken table.
void check_latency_prediction(Context& ctx) {
  SearchConfig cfg;
  cfg.channels = 8;
  cfg.cells = 3;
  cfg.in_channels = 1;
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  auto& net = static_cast<SearchNetwork&>(model.network());
  const Shape input{16, 1, 16, 16};
  CostTableOptions o;
  o.repeats = 7;
  const CostTable t = measure_cost_table(ctx, net, input, o);
  ExpectedCost cost(ctx, model, net, t, "latency");
  EvalConfig ecfg;
  ecfg.channels = 8;
  ecfg.cells = 3;
  ecfg.in_channels = 1;
  ecfg.auxiliary = false;
  Tensor x = Tensor::empty(ctx, input);
  init_normal(ctx, x, 0.0f, 1.0f);
  std::mt19937 rng(5);
  const std::vector<std::string> ops = {"max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                        "dil_conv_5x5"};
  auto random_genotype = [&] {
    Genotype g;
    for (auto* cell : {&g.normal, &g.reduce})
      for (int node = 0; node < 4; ++node) {
        std::vector<int> in(size_t(node + 2));
        std::iota(in.begin(), in.end(), 0);
        std::shuffle(in.begin(), in.end(), rng);
        for (int k = 0; k < 2; ++k)
          cell->emplace_back(ops[std::uniform_int_distribution<size_t>(0, 6)(rng)], in[size_t(k)]);
      }
    g.normal_concat = g.reduce_concat = {2, 3, 4, 5};
    return g;
  };
  auto measured = [&](const Genotype& g) {
    EvalNetwork e(ctx, "eval", g, ecfg);
    return measure_latency_ms(ctx, e, x, o);
  };
  const Genotype ref = random_genotype();
  const double fixed = measured(ref) - cost.genotype_cost(ref);
  double worst = 0, sum = 0;
  const int n = 4;
  for (int i = 0; i < n; ++i) {
    const Genotype g = random_genotype();
    const double m = measured(g), p = fixed + cost.genotype_cost(g);
    const double err = std::abs(p - m) / m;
    std::printf(
        "[ measured ] %s: architecture %d measured %.3f ms, predicted %.3f ms (error %.1f%%)\n",
        ctx.device().str().c_str(), i, m, p, 100 * err);
    worst = std::max(worst, err);
    sum += err;
  }
  std::printf("[ measured ] %s: mean prediction error %.1f%%, worst %.1f%%\n",
              ctx.device().str().c_str(), 100 * sum / n, 100 * worst);
  EXPECT_LT(sum / n, 0.5);
}

TEST(HardwareAware, PredictedLatencyOfRandomArchitectures) {
  Context ctx;
  check_latency_prediction(ctx);
}

// The same on the GPU: the table measured with CUDA events (perf/device_check.sh prints it).
TEST(HardwareAware, PredictedLatencyOfRandomArchitecturesOnTheGpu) {
  CUDARTS_REQUIRE_GPU();
  Context ctx(Device::cuda(0));
  check_latency_prediction(ctx);
}

}  // namespace
}  // namespace cudarts
