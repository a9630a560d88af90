// Finite-difference gradient checks of every layer (inputs and parameters) on the CPU
// backend, including strided, dilated, grouped and depthwise convolutions, containers and a
// Graph whose values fan out.
#include <functional>

#include "gradcheck.h"

namespace cudarts {
namespace {

using test::check_layer;
using test::random_tensor;

struct ConvGrad {
  int64_t c, k;
  int r;
  Conv2dParams p;
  bool bias;
};

class GradConv2d : public ::testing::TestWithParam<ConvGrad> {};

TEST_P(GradConv2d, InputAndWeights) {
  const ConvGrad g = GetParam();
  Context ctx(Device::cpu(), ContextOptions{5});
  Conv2d conv(ctx, "conv", g.c, g.k, g.r, g.p, g.bias);
  Tensor x = random_tensor(ctx, Shape{2, g.c, 7, 6}, 3);
  check_layer(ctx, conv, x);
}

INSTANTIATE_TEST_SUITE_P(Configs, GradConv2d,
                         ::testing::Values(ConvGrad{3, 4, 3, Conv2dParams::make(1, 1), true},
                                           ConvGrad{4, 4, 3, Conv2dParams::make(2, 1), false},
                                           ConvGrad{2, 3, 3, Conv2dParams::make(1, 2, 2), false},
                                           ConvGrad{4, 6, 3, Conv2dParams::make(1, 1, 1, 2), true},
                                           ConvGrad{4, 4, 5, Conv2dParams::make(1, 4, 2, 4), false},
                                           ConvGrad{4, 4, 3, Conv2dParams::make(2, 1, 1, 4), false},
                                           ConvGrad{3, 5, 1, Conv2dParams::make(1, 0), true}));

TEST(GradBatchNorm2d, AffineAndNot) {
  for (bool affine : {true, false}) {
    Context ctx(Device::cpu(), ContextOptions{6});
    BatchNorm2d bn(ctx, "bn", 3, affine);
    if (affine) {
      init_uniform(ctx, bn.gamma()->value, 0.5f, 1.5f);
      init_uniform(ctx, bn.beta()->value, -0.5f, 0.5f);
    }
    Tensor x = random_tensor(ctx, Shape{3, 3, 4, 4}, 4, 2.0f);
    test::GradCheckOptions o;
    o.eps = 3e-3;
    check_layer(ctx, bn, x, o);
  }
}

TEST(GradBatchNorm2d, ProbeModeLeavesRunningStatisticsAlone) {
  Context ctx;
  BatchNorm2d bn(ctx, "bn", 2);
  Tensor x = random_tensor(ctx, Shape{2, 2, 3, 3}, 1);
  bn.forward(ctx, x, Mode::Probe);
  EXPECT_EQ(bn.running_mean().to_vector(), (std::vector<float>{0, 0}));
  EXPECT_EQ(bn.running_var().to_vector(), (std::vector<float>{1, 1}));
  EXPECT_FALSE(bn.awaiting_backward());
  bn.forward(ctx, x, Mode::Train);
  EXPECT_NE(bn.running_mean().to_vector(), (std::vector<float>{0, 0}));
}

TEST(GradReLU, AwayFromZero) {
  Context ctx;
  ReLU relu("relu");
  Tensor x = Tensor::from_vector(ctx, Shape{2, 2, 3, 3}, test::distinct_vector(36, 9, 0.1f));
  check_layer(ctx, relu, x);
}

TEST(GradPool, MaxAndAverage) {
  Context ctx;
  MaxPool2d m1("max3", 3, 1, 1), m2("max2", 2, 2, 0);
  AvgPool2d a1("avg3", 3, 1, 1), a2("avg3s2", 3, 2, 1);
  for (Layer* l : std::initializer_list<Layer*>{&m1, &m2, &a1, &a2}) {
    Tensor x = Tensor::from_vector(ctx, Shape{2, 2, 6, 6}, test::distinct_vector(144, 2, 0.05f));
    SCOPED_TRACE(l->name());
    check_layer(ctx, *l, x);
  }
}

TEST(GradLinear, InputWeightsBias) {
  Context ctx(Device::cpu(), ContextOptions{8});
  Linear fc(ctx, "fc", 6, 4);
  Tensor x = random_tensor(ctx, Shape{5, 6}, 1);
  check_layer(ctx, fc, x);
}

TEST(GradSimpleLayers, IdentityZeroGlobalPoolFlatten) {
  Context ctx;
  Identity id("id");
  Zero zero("zero", 2);
  GlobalAvgPool gap("gap");
  Flatten flat("flat");
  for (Layer* l : std::initializer_list<Layer*>{&id, &zero, &gap, &flat}) {
    Tensor x = random_tensor(ctx, Shape{2, 3, 4, 5}, 2);
    SCOPED_TRACE(l->name());
    check_layer(ctx, *l, x);
  }
  EXPECT_EQ(zero.output_shape(Shape{2, 3, 5, 5}), (Shape{2, 3, 3, 3}));
}

TEST(GradSequential, SmallCnn) {
  Context ctx(Device::cpu(), ContextOptions{10});
  Sequential net("net");
  net.emplace<Conv2d>(ctx, "conv1", 2, 4, 3, Conv2dParams::make(1, 1), false);
  net.emplace<BatchNorm2d>(ctx, "bn1", 4);
  net.emplace<ReLU>("relu1");
  net.emplace<MaxPool2d>("pool1", 2, 2);
  net.emplace<Conv2d>(ctx, "conv2", 4, 4, 3, Conv2dParams::make(1, 1, 1, 4), false);
  net.emplace<AvgPool2d>("pool2", 3, 1, 1);
  net.emplace<GlobalAvgPool>("gap");
  net.emplace<Linear>(ctx, "fc", 4, 3);
  Tensor x = random_tensor(ctx, Shape{4, 2, 6, 6}, 3);
  test::GradCheckOptions o;
  o.eps = 3e-3;
  o.max_checks = 30;
  check_layer(ctx, net, x, o);
  EXPECT_EQ(net.parameters().size(), 1u + 2u + 1u + 2u);  // conv1, bn1, conv2, fc
  EXPECT_EQ(net.named_parameters()[0].first, "net.conv1.weight");
  EXPECT_EQ(net.named_buffers().size(), 2u);
}

TEST(GradGraph, FanOutSumAndConcat) {
  // x -> a = conv_a(x), b = conv_b(x); s = a + b + x; c = concat(a, s); out = conv_c(c).
  // x fans out to three consumers and a to two: their gradients must be summed.
  Context ctx(Device::cpu(), ContextOptions{12});
  Graph g("g");
  g.emplace<Conv2d>("input", ctx, "conv_a", 3, 3, 3, Conv2dParams::make(1, 1), false);
  g.emplace<Conv2d>("input", ctx, "conv_b", 3, 3, 1, Conv2dParams{}, true);
  g.add_sum("s", {"conv_a", "conv_b", "input"});
  g.add_concat("c", {"conv_a", "s"});
  g.emplace<Conv2d>("c", ctx, "conv_c", 6, 2, 3, Conv2dParams::make(2, 1), false);
  g.set_output("conv_c");
  Tensor x = random_tensor(ctx, Shape{2, 3, 5, 5}, 4);
  check_layer(ctx, g, x);
  EXPECT_EQ(g.output_shape(x.shape()), (Shape{2, 2, 3, 3}));
}

TEST(GradGraph, TwoInputsAndUnusedBranch) {
  Context ctx(Device::cpu(), ContextOptions{13});
  Graph g("cell", {"s0", "s1"});
  g.emplace<Conv2d>("s0", ctx, "p0", 2, 2, 1, Conv2dParams{}, false);
  g.emplace<ReLU>("s1", "unused");  // does not reach the output
  g.add_sum("n0", {"p0", "s1"});
  g.set_output("n0");
  Tensor a = random_tensor(ctx, Shape{2, 2, 3, 3}, 1), b = random_tensor(ctx, Shape{2, 2, 3, 3}, 2);
  Tensor y = g.forward_many(ctx, {&a, &b}, Mode::Train);
  Tensor dy = random_tensor(ctx, y.shape(), 3);
  std::vector<Tensor> dx = g.backward_many(ctx, dy);
  ASSERT_EQ(dx.size(), 2u);
  EXPECT_EQ(dx[1].to_vector(), dy.to_vector());  // s1 -> n0 directly
  // p0 is a 1x1 convolution: dx0 = W^T dy per pixel.
  const auto w = g.named_parameters()[0].second->value.to_vector();
  const auto gv = dy.to_vector(), d0 = dx[0].to_vector();
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 2; ++c)
      for (int j = 0; j < 9; ++j) {
        const double want =
            w[0 * 2 + c] * gv[(n * 2 + 0) * 9 + j] + w[1 * 2 + c] * gv[(n * 2 + 1) * 9 + j];
        EXPECT_NEAR(d0[(n * 2 + c) * 9 + j], want, 1e-5);
      }
  EXPECT_FALSE(g.children()[1]->awaiting_backward());
}

}  // namespace
}  // namespace cudarts

namespace cudarts {
namespace {

// requires_grad = false on some parameters of a layer: their gradients stay as they were (the
// layer skips them), the other parameters' gradients and dx are bit for bit those of a pass
// that computes everything, for every combination of frozen parameters.
TEST(FrozenParameters, LeaveTheirGradientsAndChangeNothingElse) {
  struct Maker {
    const char* name;
    std::function<std::unique_ptr<Layer>(Context&)> make;
    Shape x;
  };
  const std::vector<Maker> makers = {
      {"conv",
       [](Context& c) {
         return std::make_unique<Conv2d>(c, "conv", 3, 4, 3, Conv2dParams::make(1, 1), true);
       },
       Shape{2, 3, 5, 5}},
      {"linear", [](Context& c) { return std::make_unique<Linear>(c, "lin", 6, 3, true); },
       Shape{4, 6}},
      {"bn",
       [](Context& c) {
         auto bn = std::make_unique<BatchNorm2d>(c, "bn", 3, true);
         init_uniform(c, bn->gamma()->value, 0.5f, 1.5f);
         init_uniform(c, bn->beta()->value, -0.5f, 0.5f);
         return bn;
       },
       Shape{3, 3, 4, 4}},
  };
  for (const Maker& m : makers) {
    for (int mask = 0; mask < 4; ++mask) {  // bit i set: parameter i frozen
      SCOPED_TRACE(std::string(m.name) + " frozen mask " + std::to_string(mask));
      auto run = [&](bool freeze) {
        Context ctx(Device::cpu(), ContextOptions{9});
        std::unique_ptr<Layer> layer = m.make(ctx);
        std::vector<Parameter*> ps = layer->parameters();
        EXPECT_EQ(ps.size(), 2u);
        for (size_t i = 0; i < ps.size(); ++i) {
          ops::fill(ctx, ps[i]->grad, 0.25f);  // a previous gradient that must survive
          ps[i]->requires_grad = !(freeze && (mask >> i & 1));
        }
        Tensor x = random_tensor(ctx, m.x, 7);
        Tensor y = layer->forward(ctx, x, Mode::Train);
        for (Parameter* p : ps) p->requires_grad = true;  // forward's choice holds for backward
        Tensor dy = random_tensor(ctx, y.shape(), 8);
        std::vector<std::vector<float>> out{layer->backward(ctx, dy).to_vector()};
        for (Parameter* p : ps) out.push_back(p->grad.to_vector());
        return out;
      };
      const auto full = run(false), part = run(true);
      EXPECT_EQ(part[0], full[0]) << "dx";
      for (size_t i = 0; i < 2; ++i) {
        if (mask >> i & 1)
          EXPECT_EQ(part[i + 1], std::vector<float>(full[i + 1].size(), 0.25f)) << "param " << i;
        else
          EXPECT_EQ(part[i + 1], full[i + 1]) << "param " << i;
      }
    }
  }
}

}  // namespace
}  // namespace cudarts
