// Writes the ONNX test cases that tests/onnx/check.py runs in ONNX Runtime: for each network
// <case>.onnx (BatchNorm folded), <case>.nofold.onnx (BatchNorm kept), <case>.input.bin and
// <case>.logits.bin (float32, cudarts's inference-mode logits on the CPU), listed in
// cases.json. The weights, BatchNorm statistics and affine parameters are random, so folding
// is tested on non-trivial values.
//   export_cases OUT_DIR                      the built-in networks
//   export_cases OUT_DIR --run DIR --onnx F --side S
//       a darts_train folder on Fashion-MNIST (loaded by darts::Classifier; S: the side its
//       images were padded to) and the model darts_train --export-onnx wrote
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <cudarts/cudarts.h>
#include <cudarts/onnx.h>

using namespace cudarts;

namespace {

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  if (!f) throw Error("cannot write " + path);
}

std::string shape_json(const Shape& s) {
  std::string out = "[";
  for (int i = 0; i < s.ndim(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Random BatchNorm statistics and random 1-D parameters (BN gamma/beta, biases).
void randomise(Context& ctx, Layer& net, uint64_t seed) {
  uint64_t offset = 0;
  for (auto& [name, t] : net.named_buffers()) {
    const bool var = name.size() >= 11 && name.compare(name.size() - 11, 11, "running_var") == 0;
    HostTensor h = to_host(*t);
    h.f32 = draw_uniform(seed, offset, h.numel(), var ? 0.5f : -0.4f, var ? 2.0f : 0.4f);
    offset += uint64_t(h.numel());
    copy_from_host(ctx, h, *t, name);
  }
  for (auto& [name, p] : net.named_parameters()) {
    if (p->value.shape().ndim() != 1) continue;
    HostTensor h = to_host(p->value);
    h.f32 = draw_uniform(seed, offset, h.numel(), 0.5f, 1.5f);
    offset += uint64_t(h.numel());
    copy_from_host(ctx, h, p->value, name);
  }
}

struct Writer {
  std::string dir;
  std::vector<std::string> entries;

  // Logits of `net` on random input of `shape`, and its two exports.
  void add(Context& ctx, const std::string& name, Layer& net, const Shape& shape) {
    const std::vector<float> x = draw_uniform(1234, 0, shape.numel(), -1.0f, 1.0f);
    const Tensor in = Tensor::from_vector(ctx, shape, x);
    const Tensor logits = net.forward(ctx, in, Mode::Eval);
    add_files(name, x, logits);
    onnx::ExportOptions fold, keep;
    keep.fold_batchnorm = false;
    onnx::export_model_file(net, shape, dir + "/" + name + ".onnx", fold);
    onnx::export_model_file(net, shape, dir + "/" + name + ".nofold.onnx", keep);
    entries.push_back("{\"name\": \"" + name + "\", \"models\": [\"" + name + ".onnx\", \"" + name +
                      ".nofold.onnx\"], \"input\": " + shape_json(shape) +
                      ", \"logits\": " + shape_json(logits.shape()) + "}");
  }

  void add_files(const std::string& name, const std::vector<float>& x, const Tensor& logits) {
    write_floats(dir + "/" + name + ".input.bin", x);
    write_floats(dir + "/" + name + ".logits.bin", logits.to_vector());
  }

  void finish() {
    std::string j = "[\n";
    for (size_t i = 0; i < entries.size(); ++i)
      j += "  " + entries[i] + (i + 1 < entries.size() ? ",\n" : "\n");
    write_file_atomic(dir + "/cases.json", j + "]\n");
  }
};

// A graph of every exportable basic layer: biased, grouped, dilated and asymmetric
// convolutions, BatchNorm after a pooling (not folded), a convolution read twice (not
// folded), Zero of stride 2, FactorizedReduce, sum and concatenation, Flatten and Linear.
std::unique_ptr<Layer> layer_zoo(Context& ctx) {
  auto g = std::make_unique<Graph>("zoo");
  g->emplace<Conv2d>("input", ctx, "c0", 2, 8, 3, Conv2dParams::make(1, 1), true);
  g->emplace<Conv2d>("c0", ctx, "grouped", 8, 8, KernelSize{1, 3},
                     Conv2dParams{1, 1, 0, 2, 1, 2, 4}, false);
  g->emplace<BatchNorm2d>("grouped", ctx, "bn_g", 8, true);
  g->emplace<ReLU>("c0", "relu_c0");
  g->emplace<BatchNorm2d>("c0", ctx, "bn0", 8, true);  // c0 is read twice: bn0 stays
  g->add_sum("s1", {"bn_g", "relu_c0", "bn0"});
  auto pool = std::make_unique<Sequential>("pool");
  pool->emplace<MaxPool2d>("max", 3, 1, 1);
  pool->emplace<BatchNorm2d>(ctx, "bn", 8, false);  // affine-free, after a pooling
  pool->emplace<AvgPool2d>("avg", 3, 1, 1);
  g->add(std::move(pool), "s1");
  g->emplace<darts::FactorizedReduce>("pool", ctx, "fr", 8, 8, true);
  g->emplace<Zero>("s1", "zero", 2);
  g->emplace<AvgPool2d>("s1", "down", 2, 2, 0);
  g->add_sum("s2", {"fr", "zero", "down"});
  g->emplace<Conv2d>("s2", ctx, "dil", 8, 8, 3, Conv2dParams::make(2, 2, 2, 8), false);
  g->emplace<BatchNorm2d>("dil", ctx, "bn_dil", 8, true);
  g->emplace<darts::DropPath>("bn_dil", "drop");
  g->emplace<Identity>("drop", "id");
  g->add_concat("cat", {"id", "bn_dil"});
  auto head = std::make_unique<Sequential>("head");
  head->emplace<Flatten>("flat");
  head->emplace<Linear>(ctx, "fc", 16 * 3 * 3, 5, true);
  g->add(std::move(head), "cat");
  g->set_output("head");
  return g;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2) {
      std::fprintf(stderr, "usage: export_cases OUT_DIR [--run DIR --onnx FILE --side S]\n");
      return 2;
    }
    Context ctx(Device::cpu(), ContextOptions{7});
    Writer w{argv[1], {}};
    if (argc == 8 && std::string(argv[2]) == "--run" && std::string(argv[4]) == "--onnx" &&
        std::string(argv[6]) == "--side") {
      // A darts_train folder: cudarts's logits of random images of the run's input size, for
      // the model darts_train exported.
      const std::string run = argv[3], model = argv[5];
      darts::Classifier c(ctx, run, 1, 10);  // Fashion-MNIST: 1 channel, 10 classes
      const int64_t side = std::stoll(argv[7]);
      const Shape shape{3, 1, side, side};
      const std::vector<float> x = draw_uniform(99, 0, shape.numel(), -1.0f, 1.0f);
      const Tensor logits = c.logits(ctx, Tensor::from_vector(ctx, shape, x));
      w.add_files("run", x, logits);
      w.entries.push_back("{\"name\": \"run\", \"models\": [\"" + model + "\"], \"input\": " +
                          shape_json(shape) + ", \"logits\": " + shape_json(logits.shape()) + "}");
      w.finish();
      return 0;
    }
    if (argc != 2) {
      std::fprintf(stderr, "usage: export_cases OUT_DIR [--run DIR --onnx FILE --side S]\n");
      return 2;
    }
    {
      auto zoo = layer_zoo(ctx);
      randomise(ctx, *zoo, 11);
      w.add(ctx, "layers", *zoo, Shape{3, 2, 12, 12});
    }
    {
      const darts::Genotype v2 = darts::Genotype::from_python(
          "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
          "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
          "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
          "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
          "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
          "reduce_concat=[2, 3, 4, 5])");
      darts::EvalConfig cfg;
      cfg.channels = 8;
      cfg.cells = 5;
      cfg.in_channels = 3;
      cfg.auxiliary = true;  // present in the network, absent from the export
      darts::EvalNetwork net(ctx, "net", v2, cfg);
      randomise(ctx, net, 12);
      w.add(ctx, "darts_v2", net, Shape{2, 3, 32, 32});
    }
    {
      darts::Genotype frc = darts::Genotype::from_json(
          R"({"normal": [["sep_conv_5x5", 0], ["dil_conv_5x5", 1], ["avg_pool_3x3", 0],
              ["sep_conv_3x3", 2], ["dil_conv_3x3", 1], ["skip_connect", 3],
              ["max_pool_3x3", 2], ["sep_conv_3x3", 4]],
              "normal_concat": [2, 3, 4, 5], "reduce": [], "reduce_concat": [],
              "reduce_cell": "gdas_frc"})");
      darts::EvalConfig cfg;
      cfg.channels = 8;
      cfg.cells = 4;
      cfg.in_channels = 1;
      cfg.auxiliary = false;
      darts::EvalNetwork net(ctx, "net", frc, cfg);
      randomise(ctx, net, 13);
      w.add(ctx, "gdas_frc", net, Shape{2, 1, 16, 16});
    }
    {
      nb201::Config cfg;
      cfg.channels = 8;
      cfg.cells_per_stage = 1;
      cfg.in_channels = 3;
      cfg.num_classes = 10;
      const nb201::Arch arch = nb201::Arch::parse(
          "|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|");
      nb201::Network net(ctx, "nb201", cfg, &arch);
      randomise(ctx, net, 14);
      w.add(ctx, "nb201", net, Shape{3, 3, 16, 16});
    }
    w.finish();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "export_cases: %s\n", e.what());
    return 1;
  }
}
