// minimal_train: trains a small CNN on Fashion-MNIST with cudarts (Sequential, SGD,
// softmax_xent) and reports test accuracy, epoch time, throughput and peak memory.
// The shortest complete training program; copy it as a starting point.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <cudarts/cudarts.h>

namespace {

struct Options {
  std::string device = "auto";  // cpu | cuda | auto
  std::string data_dir = cudarts::default_fashion_mnist_dir();
  int epochs = 1;
  int64_t batch_size = 64;
  float lr = 0.02f;  // peak of the cosine schedule (0.05 trains too, less stably)
  uint64_t seed = 0;
  int64_t limit = 0;  // 0: the whole training set
  bool cuda_graph = false;
};

// A bad command line: main prints the message and the usage, and exits with code 2.
struct UsageError {
  std::string message;
};

void print_usage(std::FILE* out, const char* program) {
  std::fprintf(out,
               "usage: %s [options]\n"
               "Trains a small CNN on Fashion-MNIST and reports the test accuracy.\n\n"
               "  --device cpu|cuda|auto  where to run (auto: cuda when available; default auto)\n"
               "  --data DIR              Fashion-MNIST IDX .gz files (default %s)\n"
               "  --epochs N              training epochs (default 1)\n"
               "  --batch-size N          examples per step (default 64)\n"
               "  --lr X                  SGD learning rate, cosine-decayed (default 0.02)\n"
               "  --seed N                seed of the weights and the shuffling (default 0)\n"
               "  --limit N               use only the first N training images (smoke tests)\n"
               "  --cuda-graph            capture the training step once, replay it per batch\n"
               "  --help                  this text\n",
               program, cudarts::default_fashion_mnist_dir().c_str());
}

int64_t parse_int(const std::string& flag, const std::string& text, int64_t min_value) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < min_value)
    throw UsageError{flag + " expects an integer >= " + std::to_string(min_value) + ", got '" +
                     text + "'"};
  return v;
}

float parse_positive_float(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const float v = std::strtof(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0 || !(v > 0.0f))
    throw UsageError{flag + " expects a positive number, got '" + text + "'"};
  return v;
}

// Accepts "--flag value" and "--flag=value".
Options parse_args(int argc, char** argv, bool* help) {
  Options o;
  *help = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i], value;
    bool has_value = false;
    const size_t eq = flag.find('=');
    if (flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--help" || flag == "-h") {
      *help = true;
      return o;
    }
    if (flag == "--cuda-graph") {
      if (has_value) throw UsageError{"--cuda-graph takes no value"};
      o.cuda_graph = true;
      continue;
    }
    const bool known = flag == "--device" || flag == "--data" || flag == "--epochs" ||
                       flag == "--batch-size" || flag == "--lr" || flag == "--seed" ||
                       flag == "--limit";
    if (!known) throw UsageError{"unknown option '" + flag + "'"};
    if (!has_value) {
      if (i + 1 >= argc) throw UsageError{flag + " needs a value"};
      value = argv[++i];
    }
    if (flag == "--device") {
      if (value != "cpu" && value != "cuda" && value != "auto")
        throw UsageError{"--device expects cpu, cuda or auto, got '" + value + "'"};
      o.device = value;
    } else if (flag == "--data") {
      o.data_dir = value;
    } else if (flag == "--epochs") {
      o.epochs = static_cast<int>(parse_int(flag, value, 1));
    } else if (flag == "--batch-size") {
      o.batch_size = parse_int(flag, value, 1);
    } else if (flag == "--lr") {
      o.lr = parse_positive_float(flag, value);
    } else if (flag == "--seed") {
      o.seed = static_cast<uint64_t>(parse_int(flag, value, 0));
    } else {
      o.limit = parse_int(flag, value, 1);
    }
  }
  return o;
}

cudarts::Device pick_device(const std::string& name) {
  if (name == "cpu") return cudarts::Device::cpu();
  if (name == "cuda") return cudarts::Device::cuda(0);
  if (cudarts::Context::cuda_available()) return cudarts::Device::cuda(0);
  std::printf("device auto: using the CPU (%s)\n",
              cudarts::Context::cuda_unavailable_reason().c_str());
  return cudarts::Device::cpu();
}

// conv3x3(1->16)-BN-ReLU-MaxPool2 -> conv3x3(16->32)-BN-ReLU-MaxPool2 -> Flatten -> Linear.
// Input (N, 1, 28, 28), output logits (N, 10).
void build_net(cudarts::Context& ctx, cudarts::Sequential& net) {
  using namespace cudarts;
  const Conv2dParams same = Conv2dParams::make(/*stride=*/1, /*pad=*/1);
  net.emplace<Conv2d>(ctx, "conv1", 1, 16, 3, same, /*bias=*/false);
  net.emplace<BatchNorm2d>(ctx, "bn1", 16);
  net.emplace<ReLU>("relu1");
  net.emplace<MaxPool2d>("pool1", 2, 2);
  net.emplace<Conv2d>(ctx, "conv2", 16, 32, 3, same, /*bias=*/false);
  net.emplace<BatchNorm2d>(ctx, "bn2", 32);
  net.emplace<ReLU>("relu2");
  net.emplace<MaxPool2d>("pool2", 2, 2);
  net.emplace<Flatten>("flatten");
  net.emplace<Linear>(ctx, "fc", 32 * 7 * 7, 10);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Accuracy of `net` in Mode::Eval over the whole of `data`.
double evaluate(cudarts::Context& ctx, cudarts::Sequential& net, const cudarts::Dataset& data) {
  using namespace cudarts;
  constexpr int64_t kEvalBatch = 500;
  Tensor loss = Tensor::empty(ctx, Shape{1});
  Tensor correct = Tensor::empty(ctx, Shape{1});
  double hits = 0.0;
  for (int64_t begin = 0; begin < data.n; begin += kEvalBatch) {
    const int64_t end = std::min(data.n, begin + kEvalBatch);
    std::vector<int64_t> indices(static_cast<size_t>(end - begin));
    for (int64_t i = begin; i < end; ++i) indices[i - begin] = i;
    Batch batch = make_batch(ctx, data, indices);
    Tensor logits = net.forward(ctx, batch.images, Mode::Eval);
    Tensor dlogits = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, batch.labels, loss, dlogits, correct);
    hits += correct.item();
  }
  return hits / static_cast<double>(data.n);
}

int run(const Options& opt) {
  using namespace cudarts;
  const Device device = pick_device(opt.device);
  Context ctx(device, ContextOptions{opt.seed});

  std::printf("loading Fashion-MNIST from %s\n", opt.data_dir.c_str());
  Dataset train = load_fashion_mnist(opt.data_dir, /*train=*/true);
  const Dataset test = load_fashion_mnist(opt.data_dir, /*train=*/false);
  if (opt.limit > 0 && opt.limit < train.n) train = train.subset(0, opt.limit);

  Sequential net("net");
  build_net(ctx, net);
  SGD sgd(ctx, net.parameters(),
          SgdParams{opt.lr, /*momentum=*/0.9f, /*weight_decay=*/5e-4f, /*nesterov=*/false});
  int64_t num_weights = 0;
  for (Parameter* p : net.parameters()) num_weights += p->value.numel();

  const int64_t steps_per_epoch = (train.n + opt.batch_size - 1) / opt.batch_size;
  std::printf(
      "device %s, %lld training images, %lld test images, %lld weights, batch %lld, "
      "%lld steps per epoch\n",
      device.str().c_str(), static_cast<long long>(train.n), static_cast<long long>(test.n),
      static_cast<long long>(num_weights), static_cast<long long>(opt.batch_size),
      static_cast<long long>(steps_per_epoch));

  Tensor loss = Tensor::empty(ctx, Shape{1});
  Tensor correct = Tensor::empty(ctx, Shape{1});
  // Sums over the steps since the last progress line, kept on the device: reading them to
  // the host only every kReportEvery steps keeps a GPU from waiting on every step.
  Tensor loss_sum = Tensor::zeros(ctx, Shape{1});
  Tensor correct_sum = Tensor::zeros(ctx, Shape{1});
  constexpr int64_t kReportEvery = 100;
  constexpr double kPi = 3.14159265358979323846;
  // Divergence: a step with a non-finite gradient norm changes nothing (the optimizer skips
  // it), and the guard, read with the progress sums, stops the run naming the first such step.
  sgd.set_skip_nonfinite(true);
  DivergenceGuard guard(ctx, {"training loss", "gradient norm"});

  // One training step; the loss and hit sums stay on the device.
  auto train_step = [&](const Tensor& images, const Tensor& labels) {
    sgd.zero_grad(ctx);
    Tensor logits = net.forward(ctx, images, Mode::Train);
    Tensor dlogits = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, labels, loss, dlogits, correct);
    net.backward(ctx, dlogits);
    sgd.step(ctx);
    guard.watch(ctx, {&loss, &sgd.last_grad_norm()});
    ops::axpy(ctx, 1.0f, loss, loss_sum);
    ops::axpy(ctx, 1.0f, correct, correct_sum);
  };
  // --cuda-graph: each full batch is copied into these static tensors and the step is a
  // replay of a StepGraph captured after the first (eager) step; the learning rate set before
  // a replay is what that replay uses. A final partial batch runs eagerly (other shapes).
  Tensor static_images = Tensor::zeros(ctx, Shape{opt.batch_size, 1, 28, 28});
  Tensor static_labels = Tensor::zeros(ctx, Shape{opt.batch_size}, DType::I32);
  StepGraph graph(ctx);

  double train_seconds = 0.0;
  int64_t images_seen = 0;
  for (int epoch = 0; epoch < opt.epochs; ++epoch) {
    // Each epoch shuffles with its own, non-overlapping part of the Philox stream.
    const uint64_t offset = static_cast<uint64_t>(epoch) * philox_blocks(2 * uint64_t(train.n));
    const std::vector<int64_t> order = shuffled_indices(train.n, opt.seed, offset);
    const auto t_epoch = std::chrono::steady_clock::now();
    auto t_window = t_epoch;
    int64_t window_images = 0, window_steps = 0;
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      const int64_t begin = step * opt.batch_size;
      const int64_t end = std::min(train.n, begin + opt.batch_size);
      const std::vector<int64_t> indices(order.begin() + begin, order.begin() + end);
      Batch batch = make_batch(ctx, train, indices);

      // Cosine decay from lr to 0 over the whole run: the last steps average out the noise.
      const double progress = static_cast<double>(epoch * steps_per_epoch + step) /
                              static_cast<double>(opt.epochs * steps_per_epoch);
      sgd.set_lr(static_cast<float>(opt.lr * 0.5 * (1.0 + std::cos(kPi * progress))));
      if (opt.cuda_graph && end - begin == opt.batch_size) {
        ops::copy(ctx, batch.images, static_images);
        ops::copy(ctx, batch.labels, static_labels);
        if (graph.captured()) {
          graph.replay();
        } else {
          train_step(static_images, static_labels);  // warm-up, then capture
          graph.capture([&] { train_step(static_images, static_labels); });
        }
      } else {
        train_step(batch.images, batch.labels);
      }
      window_images += end - begin;
      ++window_steps;
      if (window_steps == kReportEvery || step + 1 == steps_per_epoch) {
        guard.check(
            "minimal_train",
            [&](int64_t i) {
              return cudarts::detail::cat("epoch ", i / steps_per_epoch + 1, " step ",
                                          i % steps_per_epoch + 1);
            },
            "stopped (lower --lr)");
        const double mean_loss = loss_sum.item() / static_cast<double>(window_steps);
        const double accuracy = correct_sum.item() / static_cast<double>(window_images);
        const double rate = static_cast<double>(window_images) / seconds_since(t_window);
        std::printf("epoch %d step %5lld/%lld  loss %.4f  train acc %5.1f%%  %7.0f images/s\n",
                    epoch + 1, static_cast<long long>(step + 1),
                    static_cast<long long>(steps_per_epoch), mean_loss, 100.0 * accuracy, rate);
        std::fflush(stdout);
        ops::fill(ctx, loss_sum, 0.0f);
        ops::fill(ctx, correct_sum, 0.0f);
        window_images = window_steps = 0;
        t_window = std::chrono::steady_clock::now();
      }
    }
    ctx.synchronize();
    const double epoch_seconds = seconds_since(t_epoch);
    train_seconds += epoch_seconds;
    images_seen += train.n;
    std::printf("epoch %d: %.1f s, %.0f images/s\n", epoch + 1, epoch_seconds,
                static_cast<double>(train.n) / epoch_seconds);
  }

  const auto t_eval = std::chrono::steady_clock::now();
  const double test_accuracy = evaluate(ctx, net, test);
  const double eval_seconds = seconds_since(t_eval);
  const AllocatorStats stats = ctx.allocator().stats();
  std::printf("test accuracy %.2f%% (%lld images, %.1f s)\n", 100.0 * test_accuracy,
              static_cast<long long>(test.n), eval_seconds);
  std::printf("training: %d epoch(s), %.1f s, %.0f images/s on %s%s\n", opt.epochs, train_seconds,
              static_cast<double>(images_seen) / train_seconds, device.str().c_str(),
              opt.cuda_graph ? " (CUDA graph replays)" : "");
  std::printf("peak allocator bytes %zu (%.1f MiB), reserved %zu\n", stats.peak_bytes,
              static_cast<double>(stats.peak_bytes) / (1 << 20), stats.peak_reserved_bytes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    bool help = false;
    opt = parse_args(argc, argv, &help);
    if (help) {
      print_usage(stdout, argv[0]);
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n\n", argv[0], e.message.c_str());
    print_usage(stderr, argv[0]);
    return 2;
  }
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", argv[0], e.what());
    return cudarts::exit_status_of(e);
  } catch (...) {
    std::fprintf(stderr, "%s: error: an unknown exception\n", argv[0]);
    return 1;
  }
}
