// darts_export: one DARTS search step in cudarts, written to a safetensors file for
// perf/torch_darts.py, which rebuilds the same network in PyTorch and compares the loss, the
// logits, every weight gradient, the alpha gradients and the BatchNorm running statistics.
// Continuous MixedOps (the DARTS default) so that no sampling has to be mirrored.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <random>

#include "../samples/program.h"
#include "cudarts/cudarts.h"

using namespace cudarts;

int main(int argc, char** argv) {
  std::string out = "darts_step.safetensors", device = "cpu";
  int64_t channels = 4, batch = 8, size = 16, in_channels = 3;
  int cells = 5, classes = 10;
  uint64_t seed = 0;
  float alpha_std = 0.5f;
  CLI::App app{"Export one DARTS search step for the PyTorch twin (perf/torch_darts.py)"};
  app.add_option("--out", out);
  app.add_option("--device", device)->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--channels", channels);
  app.add_option("--cells", cells);
  app.add_option("--batch-size", batch);
  app.add_option("--size", size, "image height and width");
  app.add_option("--in-channels", in_channels);
  app.add_option("--classes", classes);
  app.add_option("--seed", seed);
  app.add_option("--alpha-std", alpha_std, "spread of the exported alphas");
  CUDARTS_PARSE(app, argc, argv);
  return program::run("darts_export", [&] {
    Context ctx(device == "cuda" ? Device::cuda(0) : Device::cpu(), ContextOptions{seed});
    darts::SearchConfig cfg;
    cfg.channels = channels;
    cfg.cells = cells;
    cfg.in_channels = in_channels;
    cfg.num_classes = classes;
    SearchModel model(ctx, std::make_unique<darts::SearchNetwork>(ctx, "net", cfg));
    for (Parameter* a : model.architecture_parameters())
      init_normal(ctx, a->value, 0.0f, alpha_std);
    auto& net = static_cast<darts::SearchNetwork&>(model.network());

    TensorMap t;
    std::map<std::string, std::string> meta{{"channels", std::to_string(channels)},
                                            {"cells", std::to_string(cells)},
                                            {"in_channels", std::to_string(in_channels)},
                                            {"classes", std::to_string(classes)},
                                            {"device", ctx.device().str()}};
    for (auto& [name, b] : net.named_buffers()) t["buffer/" + name] = to_host(*b);
    std::mt19937 gen(uint32_t(seed) + 1);
    std::normal_distribution<float> normal;
    std::vector<float> x(size_t(batch * in_channels * size * size));
    for (float& v : x) v = normal(gen);
    std::vector<int32_t> labels(static_cast<size_t>(batch));
    for (auto& l : labels) l = int32_t(gen() % uint32_t(classes));
    Tensor xt = Tensor::from_vector(ctx, Shape{batch, in_channels, size, size}, x);
    Tensor lt = Tensor::from_vector_i32(ctx, Shape{batch}, labels);
    auto alpha_matrix = [&](bool reduce) {
      HostTensor h;
      h.shape = {net.num_edges(), int64_t(darts::primitives().size())};
      for (int k = 0; k < net.num_edges(); ++k) {
        auto v = net.edge(reduce, k).alpha().value.to_vector();
        h.f32.insert(h.f32.end(), v.begin(), v.end());
      }
      return h;
    };
    t["alpha/normal"] = alpha_matrix(false);
    t["alpha/reduce"] = alpha_matrix(true);

    model.network().zero_grad(ctx);
    Tensor logits = model.forward(ctx, xt, Mode::Train);
    Tensor loss = Tensor::empty(ctx, Shape{1}), dl = Tensor::empty(ctx, logits.shape()),
           hits = Tensor::empty(ctx, Shape{1});
    ops::softmax_xent(ctx, logits, lt, loss, dl, hits);
    model.backward(ctx, dl);

    t["input"] = to_host(xt);
    t["labels"] = to_host(lt);
    t["logits"] = to_host(logits);
    t["loss"] = to_host(loss);
    for (auto& [name, p] : net.named_parameters()) {
      if (p->kind == ParamKind::Architecture) continue;
      t["param/" + name] = to_host(p->value);
      t["grad/" + name] = to_host(p->grad);
    }
    for (auto& [name, b] : net.named_buffers()) t["buffer_after/" + name] = to_host(*b);
    auto alpha_grad = [&](bool reduce) {
      HostTensor h;
      h.shape = {net.num_edges(), int64_t(darts::primitives().size())};
      for (int k = 0; k < net.num_edges(); ++k) {
        auto v = net.edge(reduce, k).alpha().grad.to_vector();
        h.f32.insert(h.f32.end(), v.begin(), v.end());
      }
      return h;
    };
    t["grad_alpha/normal"] = alpha_grad(false);
    t["grad_alpha/reduce"] = alpha_grad(true);
    save_safetensors(out, t, meta);
    std::printf("darts_export: %s, loss %.6f, %zu tensors -> %s\n", ctx.device().str().c_str(),
                loss.item(), t.size(), out.c_str());
    return 0;
  });
}
