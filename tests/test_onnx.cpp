// ONNX export on this side of the file (cudarts/onnx.h): what folds, what is refused, and that
// a failed export leaves an existing file alone. The exported models themselves are run in ONNX
// Runtime by the ctest case onnx_runtime (tests/onnx/).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <cudarts/cudarts.h>
#include <cudarts/onnx.h>

using namespace cudarts;

namespace {

int count(const onnx::GraphBuilder& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node.op_type == op;
  return n;
}

const onnx::GraphBuilder::Initializer& init(onnx::GraphBuilder& g, const std::string& name) {
  auto* i = g.find_initializer(name);
  if (!i) throw Error("no initializer " + name);
  return *i;
}

}  // namespace

// Conv -> BN folds into weight' = w * gamma / sqrt(var + eps) and bias' = beta - mean * that
// factor (values chosen by hand); a BN after a pooling and a BN whose convolution output is read
// twice stay; the folded BN's statistics leave the file.
TEST(OnnxExport, FoldsOnlyBatchNormAfterASingleUseConv) {
  Context ctx(Device::cpu(), ContextOptions{1});
  Graph g("g");
  auto& conv = g.emplace<Conv2d>("input", ctx, "conv", 1, 2, 1, Conv2dParams{}, false);
  auto& bn = g.emplace<BatchNorm2d>("conv", ctx, "bn", 2, true);
  auto& shared = g.emplace<Conv2d>("input", ctx, "shared", 1, 2, 1, Conv2dParams{}, false);
  g.emplace<BatchNorm2d>("shared", ctx, "bn_shared", 2, true);
  g.emplace<ReLU>("shared", "relu");
  g.emplace<MaxPool2d>("input", "pool", 1, 1, 0);
  g.emplace<BatchNorm2d>("pool", ctx, "bn_pool", 1, false);
  g.add_concat("cat", {"bn", "bn_shared", "relu", "bn_pool"});
  g.set_output("cat");
  copy_from_host(ctx, HostTensor{{2, 1, 1, 1}, DType::F32, {2.0f, -1.0f}, {}}, conv.weight().value,
                 "w");
  copy_from_host(ctx, HostTensor{{2}, DType::F32, {3.0f, 0.5f}, {}}, bn.gamma()->value, "gamma");
  copy_from_host(ctx, HostTensor{{2}, DType::F32, {1.0f, -2.0f}, {}}, bn.beta()->value, "beta");
  copy_from_host(ctx, HostTensor{{2}, DType::F32, {0.5f, 4.0f}, {}}, bn.running_mean(), "mean");
  copy_from_host(ctx, HostTensor{{2}, DType::F32, {4.0f - 1e-5f, 0.25f - 1e-5f}, {}},
                 bn.running_var(), "var");

  onnx::GraphBuilder b;
  const std::string out = g.to_onnx(b, "input");
  EXPECT_EQ(count(b, "BatchNormalization"), 3);
  EXPECT_EQ(onnx::fold_batchnorm(b, {out}), 1);
  EXPECT_EQ(count(b, "BatchNormalization"), 2);
  EXPECT_EQ(count(b, "Conv"), 2);
  // sqrt(var + eps) = 2 and 0.5: factors 1.5 and 1.
  const auto& w = init(b, "g.conv.weight");
  ASSERT_EQ(w.f32.size(), 2u);
  EXPECT_FLOAT_EQ(w.f32[0], 3.0f);          // 2 * 1.5
  EXPECT_FLOAT_EQ(w.f32[1], -1.0f);         // -1 * 1
  const auto& bias = init(b, "g.bn.bias");  // the BN's shift became the convolution's bias
  EXPECT_FLOAT_EQ(bias.f32[0], 1.0f - 0.5f * 1.5f);
  EXPECT_FLOAT_EQ(bias.f32[1], -2.0f - 4.0f * 1.0f);
  EXPECT_EQ(b.find_initializer("g.bn.running_mean"), nullptr);
  EXPECT_EQ(b.find_initializer("g.bn.weight"), nullptr);
  EXPECT_NE(b.find_initializer("g.bn_shared.running_mean"), nullptr);
  // The folded convolution writes what the BN wrote, so the concatenation still reads it.
  for (const auto& n : b.nodes())
    if (n.name == "g.conv.Conv") {
      ASSERT_EQ(n.inputs.size(), 3u);
      EXPECT_EQ(n.inputs[2], "g.bn.bias");
      EXPECT_EQ(n.outputs[0], "g.bn.BatchNormalization");
    }
}

// Search networks have no ONNX form: the error names the layer that has none.
TEST(OnnxExport, SearchLayersAreRefusedByName) {
  Context ctx(Device::cpu(), ContextOptions{1});
  darts::SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 1;
  cfg.steps = 1;
  cfg.multiplier = 1;
  cfg.stem_multiplier = 1;
  cfg.in_channels = 1;
  darts::SearchNetwork search(ctx, "search", cfg);
  try {
    onnx::export_model(search, Shape{1, 1, 8, 8});
    FAIL() << "exported a search network";
  } catch (const NotSupported& e) {
    EXPECT_NE(std::string(e.what()).find("DartsSearchNetwork 'search' has no ONNX form"),
              std::string::npos)
        << e.what();
  }
  nb201::Config nc;
  nc.channels = 4;
  nc.cells_per_stage = 1;
  nb201::Network nb(ctx, "nb", nc);  // without an architecture: MixedOps on every edge
  try {
    onnx::export_model(nb, Shape{1, 3, 8, 8});
    FAIL() << "exported a NAS-Bench-201 search network";
  } catch (const NotSupported& e) {
    EXPECT_NE(std::string(e.what()).find("has no ONNX form"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("edge"), std::string::npos) << e.what();
  }
}

// An input that does not fit, or a path that cannot be written: an Error naming it, and a
// file already at the path keeps its contents.
TEST(OnnxExport, BadInputAndUnwritablePathLeaveFilesAlone) {
  Context ctx(Device::cpu(), ContextOptions{1});
  Sequential net("net");
  net.emplace<Conv2d>(ctx, "conv", 3, 4, 3, Conv2dParams::make(1, 1), true);
  net.emplace<GlobalAvgPool>("gap");
  const auto dir = std::filesystem::temp_directory_path() / "cudarts_test_onnx";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.onnx").string();
  { std::ofstream(path) << "previous"; }
  try {
    onnx::export_model_file(net, Shape{1, 2, 8, 8}, path);  // 2 channels, the conv takes 3
    FAIL() << "exported for a wrong input";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv"), std::string::npos) << e.what();
  }
  EXPECT_THROW(onnx::export_model(net, Shape{8, 8}), Error);
  try {
    onnx::export_model_file(net, Shape{1, 3, 8, 8}, (dir / "missing" / "m.onnx").string());
    FAIL() << "wrote into a missing folder";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing/m.onnx"), std::string::npos) << e.what();
  }
  std::ifstream f(path);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "previous");
  onnx::export_model_file(net, Shape{1, 3, 8, 8}, path);
  EXPECT_GT(std::filesystem::file_size(path), 4u * 27u * 4u);  // holds the weights
  std::filesystem::remove_all(dir);
}
