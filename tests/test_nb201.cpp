// The NAS-Bench-201 search space: weight counts of known architectures against the benchmark's
// published numbers and a hand count, the architecture string, derivation, the search network
// by finite differences and its alpha sharing.
#include <cudarts/nb201.h>

#include "gradcheck.h"

namespace cudarts {
namespace {

// The benchmark's ResNet (index 11472 of NAS-Bench-201; its own analysis code, AutoDL-Projects
// exps/NAS-Bench-201/visualize.py, records 'params': 0.559 MB on CIFAR-10) and the cell of six
// 3x3 convolutions (counted by hand: stem 3*16*9 + 32; per stage 5 cells of 6 (9 C^2 + 2 C);
// reduction blocks 9 C 2C + 9 (2C)^2 + 4C + 4C + C 2C; final BN 2 * 64; classifier 64*10 + 10).
TEST(Nb201, WeightCountsOfKnownArchitectures) {
  Context ctx;
  nb201::Config cfg;  // C = 16, N = 5, 10 classes
  const nb201::Arch resnet = nb201::Arch::parse(
      "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|");
  nb201::Network r(ctx, "resnet", cfg, &resnet);
  EXPECT_EQ(test::count_weights(r.parameters()), 559386);  // 0.559 MB
  const nb201::Arch convs = nb201::Arch::parse(
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
      "nor_conv_3x3~2|");
  nb201::Network c(ctx, "convs", cfg, &convs);
  int64_t hand = 3 * 16 * 9 + 32 + 64 * 10 + 10 + 2 * 64;
  for (int64_t ch : {16, 32, 64}) hand += 5 * 6 * (9 * ch * ch + 2 * ch);
  for (int64_t ch : {16, 32}) hand += 9 * ch * 2 * ch + 9 * 4 * ch * ch + 8 * ch + 2 * ch * ch;
  EXPECT_EQ(hand, 1531546);
  EXPECT_EQ(test::count_weights(c.parameters()), hand);
  EXPECT_EQ(c.output_shape(Shape{2, 3, 32, 32}), (Shape{2, 10}));
  Tensor y = r.forward(ctx, test::random_tensor(ctx, Shape{2, 3, 32, 32}, 1), Mode::Eval);
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
}

TEST(Nb201, ArchitectureStringsAndDerivation) {
  const std::string s =
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
      "skip_connect~2|";
  const nb201::Arch a = nb201::Arch::parse(s);
  EXPECT_EQ(a.str(), s);
  EXPECT_EQ(a.ops[size_t(nb201::edge_index(2, 1))], "avg_pool_3x3");
  EXPECT_EQ(a.ops[size_t(nb201::edge_index(3, 2))], "skip_connect");
  EXPECT_EQ(nb201::Arch::parse("  " + s + "\n"), a);
  for (const std::string bad :
       {std::string("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"),         // two nodes
        std::string("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|a~0|b~1|c~2|"),          // 1 input
        std::string("|nor_conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"),  // op
        std::string("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|")}) {       // input
    EXPECT_THROW(nb201::Arch::parse(bad), InputError) << bad;
  }
  // Derivation: the most probable op per edge, none included; the skip cap.
  std::vector<std::vector<float>> p(6, std::vector<float>{0.1f, 0.2f, 0.3f, 0.3f, 0.1f});
  p[0] = {0.5f, 0.2f, 0.1f, 0.1f, 0.1f};  // none
  p[1] = {0.1f, 0.4f, 0.3f, 0.1f, 0.1f};  // skip 0.4, then nor_conv_1x1
  p[3] = {0.1f, 0.6f, 0.1f, 0.1f, 0.1f};  // skip 0.6
  p[5] = {0.1f, 0.1f, 0.1f, 0.2f, 0.5f};  // avg_pool_3x3
  EXPECT_EQ(nb201::derive(p).str(),
            "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|"
            "avg_pool_3x3~2|");
  EXPECT_EQ(nb201::derive(p, 1).str(),  // edge 1 (skip 0.4) loses its skip first
            "|none~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_1x1~1|"
            "avg_pool_3x3~2|");
}

// The search network: 6 alphas of 5 candidates shared by all 15 cells, its weights and alphas
// by finite differences (a tiny one: C = 2, one cell per stage).
TEST(Nb201, SearchNetworkSharesAlphasAndItsGradientsMatchFiniteDifferences) {
  Context ctx(Device::cpu(), ContextOptions{5});
  nb201::Config full;
  SearchModel big(ctx, std::make_unique<nb201::Network>(ctx, "net", full));
  EXPECT_EQ(big.alpha_parameters().size(), 6u);
  EXPECT_EQ(big.alphas().numel(), 30);
  EXPECT_EQ(big.mixed_ops().size(), 15u * 6u);
  nb201::Config cfg;
  cfg.channels = 2;
  cfg.cells_per_stage = 1;
  cfg.mixed.method = "continuous";
  SearchModel model(ctx, std::make_unique<nb201::Network>(ctx, "net", cfg));
  for (Parameter* a : model.alpha_parameters()) init_normal(ctx, a->value, 0.0f, 0.5f);
  auto& net = static_cast<nb201::Network&>(model.network());
  const auto probs = net.probabilities();
  ASSERT_EQ(probs.size(), 6u);
  const std::vector<float> a0 = model.alpha_parameters()[0]->value.to_vector();
  double z = 0;
  for (float v : a0) z += std::exp(double(v));
  EXPECT_NEAR(probs[0][3], std::exp(double(a0[3])) / z, 1e-6);
  test::GradCheckOptions o;
  o.eps = 1e-3;
  o.rtol = 0.05;
  o.atol = 2e-3;
  o.max_checks = 6;
  o.max_kink_fraction = 0.6;
  o.min_match_fraction = 0.6;
  Tensor x = test::random_tensor(ctx, Shape{4, 3, 8, 8}, 2);
  test::check_layer(ctx, model.network(), x, o);
  EXPECT_THROW(net.set_drop_path_prob(0.2f), ConfigError);
}

}  // namespace
}  // namespace cudarts
