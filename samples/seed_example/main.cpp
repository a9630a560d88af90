// seed_example: the TensorFlow-DARTS CIFAR-10 example, in cudarts.
// A sequential network of MixedOps (three conv-stack widths, two poolings, twice; four dense
// stacks), then a classifier. Phase 1 searches with the chosen MixedOp type (weights and alphas
// on the same batch, each with its own optimizer); phase 2 fine-tunes the derived
// (deterministic) architecture. Prints the architecture before and after, test accuracy and
// peak allocator memory of each phase. Fashion-MNIST by default; CIFAR-10 with --data DIR.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "../darts_cli.h"
#include "cudarts/cudarts.h"

using namespace cudarts;

namespace {

struct Options {
  std::string mixed_op = "continuous";
  std::string dataset = "fashion-mnist";
  std::string data;
  std::string device = "auto";
  int search_epochs = 1;
  int finetune_epochs = 1;
  int batch = 64;
  int64_t subset = 0;
  int64_t test_subset = 0;
  uint64_t seed = 0;
  int num_eval = 2;
  float ma_lr = 0.01f;
  float lr = 0.05f;
  float arch_lr = 3e-3f;
};

// Conv stack option: conv3x3 (width) - BN - ReLU - 1x1 projection to `out` - BN - ReLU.
std::unique_ptr<Layer> conv_stack(Context& ctx, const std::string& name, int64_t in, int64_t width,
                                  int64_t out) {
  auto s = std::make_unique<Sequential>(name);
  s->emplace<Conv2d>(ctx, "conv", in, width, 3, Conv2dParams::make(1, 1), false);
  s->emplace<BatchNorm2d>(ctx, "bn1", width);
  s->emplace<ReLU>("relu1");
  s->emplace<Conv2d>(ctx, "project", width, out, 1, Conv2dParams{}, false);
  s->emplace<BatchNorm2d>(ctx, "bn2", out);
  s->emplace<ReLU>("relu2");
  return s;
}

// Dense stack option: Linear-ReLU layers through `widths`, ending at `out`.
std::unique_ptr<Layer> dense_stack(Context& ctx, const std::string& name, int64_t in,
                                   std::vector<int64_t> widths, int64_t out) {
  auto s = std::make_unique<Sequential>(name);
  widths.push_back(out);
  int64_t prev = in;
  for (size_t i = 0; i < widths.size(); ++i) {
    s->emplace<Linear>(ctx, "fc" + std::to_string(i), prev, widths[i]);
    s->emplace<ReLU>("relu" + std::to_string(i));
    prev = widths[i];
  }
  return s;
}

std::unique_ptr<MixedOp> mixed(Context& ctx, const Options& o, const std::string& name,
                               std::vector<std::unique_ptr<Layer>> cands) {
  MixedOpConfig cfg;
  cfg.method = o.mixed_op;
  cfg.num_on = 1;
  cfg.num_eval = std::min<int>(o.num_eval, int(cands.size()));
  cfg.ma_lr = o.ma_lr;
  return make_mixed_op(ctx, name, std::move(cands), cfg);
}

std::unique_ptr<Sequential> build_network(Context& ctx, const Options& o, const Dataset& d) {
  auto net = std::make_unique<Sequential>("net");
  auto convs = [&](const std::string& name, int64_t in, std::vector<int64_t> widths, int64_t out) {
    std::vector<std::unique_ptr<Layer>> c;
    for (int64_t w : widths) c.push_back(conv_stack(ctx, "conv" + std::to_string(w), in, w, out));
    net->add(mixed(ctx, o, name, std::move(c)));
  };
  auto pools = [&](const std::string& name) {
    std::vector<std::unique_ptr<Layer>> c;
    c.push_back(std::make_unique<MaxPool2d>("max", 2, 2));
    c.push_back(std::make_unique<AvgPool2d>("avg", 2, 2));
    net->add(mixed(ctx, o, name, std::move(c)));
  };
  convs("conv_block1", d.c, {16, 32, 64}, 32);
  pools("pool1");
  convs("conv_block2", 32, {32, 64, 96}, 64);
  pools("pool2");
  net->emplace<Flatten>("flatten");
  const int64_t features = 64 * (d.h / 4) * (d.w / 4);
  std::vector<std::unique_ptr<Layer>> dense;
  dense.push_back(dense_stack(ctx, "dense_1x128", features, {}, 128));
  dense.push_back(dense_stack(ctx, "dense_2x256", features, {256}, 128));
  dense.push_back(dense_stack(ctx, "dense_2x64", features, {64}, 128));
  dense.push_back(dense_stack(ctx, "dense_3x128", features, {128, 128}, 128));
  net->add(mixed(ctx, o, "dense_block", std::move(dense)));
  net->emplace<Linear>(ctx, "classifier", 128, d.num_classes);
  return net;
}

struct EpochResult {
  double loss = 0, acc = 0, seconds = 0, images_per_s = 0;
};

// One pass over `train`; the architecture optimizer is null in fine-tuning.
EpochResult train_epoch(Context& ctx, SearchModel& model, const Dataset& train, int batch,
                        Sampling sampling, Optimizer& weights, Optimizer* arch, uint64_t epoch) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<int64_t> order = shuffled_indices(train.n, ctx.seed(), 1000 + epoch);
  Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
  double loss_sum = 0, hit_sum = 0;
  int64_t seen = 0;
  const int64_t steps = train.n / batch;
  for (int64_t s = 0; s < steps; ++s) {
    std::vector<int64_t> idx(order.begin() + s * batch, order.begin() + (s + 1) * batch);
    Batch b = make_batch(ctx, train, idx);
    weights.zero_grad(ctx);
    if (arch) arch->zero_grad(ctx);
    Tensor logits = model.forward(ctx, b.images, Mode::Train, sampling);
    Tensor dlogits = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, b.labels, loss, dlogits, hits);
    model.backward(ctx, dlogits);
    weights.step(ctx);
    if (arch) arch->step(ctx);
    const float l = loss.item();  // this sample reads the loss every step anyway
    if (!std::isfinite(l))
      throw DivergenceError(detail::cat("seed_example: the training loss is ", l, " at step ",
                                        s + 1, " of epoch ", epoch + 1,
                                        "; stopped (lower --lr or --arch-lr)"));
    loss_sum += l * batch;
    hit_sum += hits.item();
    seen += batch;
    if ((s + 1) % 100 == 0 || s + 1 == steps)
      std::printf("  step %lld/%lld  loss %.4f  acc %.4f\n", (long long)(s + 1), (long long)steps,
                  loss_sum / double(seen), hit_sum / double(seen));
  }
  EpochResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.loss = seen ? loss_sum / double(seen) : 0.0;
  r.acc = seen ? hit_sum / double(seen) : 0.0;
  r.images_per_s = double(seen) / r.seconds;
  return r;
}

double evaluate(Context& ctx, SearchModel& model, const Dataset& test, int batch, Sampling s) {
  Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
  double correct = 0;
  for (int64_t begin = 0; begin < test.n; begin += batch) {
    const int64_t end = std::min<int64_t>(test.n, begin + batch);
    std::vector<int64_t> idx;
    for (int64_t i = begin; i < end; ++i) idx.push_back(i);
    Batch b = make_batch(ctx, test, idx);
    Tensor logits = model.forward(ctx, b.images, Mode::Eval, s);
    Tensor dl = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, b.labels, loss, dl, hits);
    correct += hits.item();
  }
  return correct / double(test.n);
}

int run(const Options& o) {
  const bool use_cuda = o.device == "cuda" || (o.device == "auto" && Context::cuda_available());
  Context ctx(use_cuda ? Device::cuda(0) : Device::cpu(), ContextOptions{o.seed});
  Dataset train = load_dataset(o.dataset, o.data, true);
  Dataset test = load_dataset(o.dataset, o.data, false);
  if (o.subset > 0 && o.subset < train.n) train = train.subset(0, o.subset);
  if (o.test_subset > 0 && o.test_subset < test.n) test = test.subset(0, o.test_subset);
  std::printf("seed_example: %s on %s (%lld training, %lld test images), device %s\n",
              o.mixed_op.c_str(), train.name.c_str(), (long long)train.n, (long long)test.n,
              ctx.device().str().c_str());

  SearchModel model(ctx, build_network(ctx, o, train));
  std::printf("\nBefore search:\n%s", model.architecture_summary().c_str());

  // Phase 1: search. Weights: SGD with momentum and a cosine schedule; alphas: Adam.
  SGD w_opt(ctx, model.operational_parameters(), SgdParams{o.lr, 0.9f, 3e-4f, false});
  w_opt.set_grad_clip(5.0f);
  Adam a_opt(ctx, model.architecture_parameters(),
             AdamParams{o.arch_lr, 0.5f, 0.999f, 1e-8f, 1e-3f, false, 1});
  model.attach_architecture_optimizer(a_opt);
  ctx.allocator().reset_peak();
  double search_seconds = 0;
  for (int e = 0; e < o.search_epochs; ++e) {
    CosineSchedule sched(o.lr, 0.001f, int64_t(o.search_epochs));
    w_opt.set_lr(sched.lr(e));
    std::printf("\nsearch epoch %d/%d\n", e + 1, o.search_epochs);
    const EpochResult r =
        train_epoch(ctx, model, train, o.batch, Sampling::Stochastic, w_opt, &a_opt, uint64_t(e));
    search_seconds += r.seconds;
    std::printf("  train loss %.4f acc %.4f, %.1f s, %.0f images/s\n", r.loss, r.acc, r.seconds,
                r.images_per_s);
  }
  const size_t search_peak = ctx.allocator().stats().peak_bytes;
  const double search_acc = evaluate(ctx, model, test, o.batch, Sampling::Deterministic);
  std::printf("\nAfter search:\n%s", model.architecture_summary().c_str());

  // Phase 2: fine-tune the derived architecture (alphas frozen).
  SGD f_opt(ctx, model.operational_parameters(), SgdParams{o.lr, 0.9f, 3e-4f, false});
  ctx.allocator().reset_peak();
  double finetune_seconds = 0;
  for (int e = 0; e < o.finetune_epochs; ++e) {
    CosineSchedule sched(o.lr, 0.0f, int64_t(o.finetune_epochs));
    f_opt.set_lr(sched.lr(e));
    std::printf("\nfine-tune epoch %d/%d\n", e + 1, o.finetune_epochs);
    const EpochResult r = train_epoch(ctx, model, train, o.batch, Sampling::Deterministic, f_opt,
                                      nullptr, uint64_t(100 + e));
    finetune_seconds += r.seconds;
    std::printf("  train loss %.4f acc %.4f, %.1f s, %.0f images/s\n", r.loss, r.acc, r.seconds,
                r.images_per_s);
  }
  const size_t finetune_peak = ctx.allocator().stats().peak_bytes;
  const double final_acc = evaluate(ctx, model, test, o.batch, Sampling::Deterministic);

  std::printf("\n%-10s %-18s %10s %12s %14s\n", "phase", "type", "seconds", "test acc", "peak MiB");
  std::printf("%-10s %-18s %10.1f %12.4f %14.1f\n", "search", o.mixed_op.c_str(), search_seconds,
              search_acc, double(search_peak) / (1 << 20));
  std::printf("%-10s %-18s %10.1f %12.4f %14.1f\n", "fine-tune", o.mixed_op.c_str(),
              finetune_seconds, final_acc, double(finetune_peak) / (1 << 20));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"seed_example: search a MixedOp network, then fine-tune the derived one"};
  app.add_option("--mixed-op", o.mixed_op, "continuous|binary|masked|proxyless|moving-average")
      ->check(CLI::IsMember(darts::mixed_op_method_names()));
  app.add_option("--dataset", o.dataset, "fashion-mnist|cifar10")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10"}));
  app.add_option("--data", o.data,
                 "dataset folder (CIFAR-10 binary version; default for "
                 "Fashion-MNIST: Debian's package)");
  app.add_option("--device", o.device, "cpu|cuda|auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--search-epochs", o.search_epochs)->check(CLI::Range(0, 10000));
  app.add_option("--finetune-epochs", o.finetune_epochs)->check(CLI::Range(0, 10000));
  app.add_option("--batch-size", o.batch)->check(CLI::Range(2, 1 << 16));
  app.add_option("--subset", o.subset, "use only the first N training images")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--test-subset", o.test_subset, "evaluate on the first N test images only")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.seed);
  app.add_option("--num-eval", o.num_eval, "k_eval of masked/proxyless/moving-average")
      ->check(CLI::Range(1, 64));
  app.add_option("--ma-lr", o.ma_lr, "moving-average learning rate, in (0, 1]");
  app.add_option("--lr", o.lr, "weight learning rate")->check(CLI::PositiveNumber);
  app.add_option("--arch-lr", o.arch_lr, "architecture learning rate")->check(CLI::PositiveNumber);
  CUDARTS_PARSE(app, argc, argv);
  if (o.mixed_op == "proxyless" && o.num_eval < 2) o.num_eval = 2;
  return program::run("seed_example", [&] { return run(o); });
}
