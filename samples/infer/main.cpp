// infer: classifies the test images of a dataset with a network retrained by darts_train
// (its --out folder: genotype and weights) and reports the accuracy and images per second.
// The way to ship a found network inside a CUDA application: darts::Classifier on the
// application's Context (and stream), eagerly or replaying a CUDA graph.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <cudarts/cudarts.h>
#include <cudarts/inference.h>

#include "../program.h"

using namespace cudarts;

int main(int argc, char** argv) {
  std::string run_dir, dataset = "fashion-mnist", data_dir, device = "auto";
  int64_t batch = 256, limit = 0;
  bool graph = false;
  CLI::App app{"infer: classify images with a network retrained by darts_train"};
  app.failure_message(CLI::FailureMessage::help);
  app.add_option("--run", run_dir, "a darts_train --out folder")->required();
  app.add_option("--dataset", dataset, "fashion-mnist (default) or cifar10")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10"}));
  app.add_option("--data", data_dir, "dataset folder (default: Debian's Fashion-MNIST)");
  app.add_option("--device", device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--batch-size", batch, "images per forward")->check(CLI::Range(1, 1 << 16));
  app.add_option("--limit", limit, "classify only the first N test images (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--cuda-graph", graph, "replay a captured CUDA graph for every full batch");
  if (const int rc = program::parse(app, argc, argv); rc >= 0) return rc;
  return program::run("infer", [&] {
    const bool cuda = device == "cuda" || (device == "auto" && Context::cuda_available());
    Context ctx(cuda ? Device::cuda() : Device::cpu());
    if (data_dir.empty() && dataset == "fashion-mnist") data_dir = default_fashion_mnist_dir();
    Dataset test = load_dataset(dataset, data_dir, false);
    if (limit > 0 && limit < test.n) test = test.subset(0, limit);
    darts::Classifier classifier(ctx, run_dir, test.c, test.num_classes);
    classifier.set_use_graph(graph);
    test = classifier.prepare(test);
    int64_t correct = 0;
    double seconds = 0;
    for (int64_t b = 0; b < test.n; b += batch) {
      const int64_t n = std::min(batch, test.n - b);
      std::vector<int64_t> idx(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) idx[size_t(i)] = b + i;
      const Batch in = make_batch(ctx, test, idx);
      ctx.synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor logits = classifier.logits(ctx, in.images);
      const std::vector<float> v = logits.to_vector();  // synchronises
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const int64_t k = logits.dim(1);
      for (int64_t i = 0; i < n; ++i) {
        const auto row = v.begin() + i * k;
        correct += std::max_element(row, row + k) - row == test.labels[size_t(b + i)];
      }
    }
    std::printf("infer: %lld images, accuracy %.4f, %.0f images/s on %s%s\n", (long long)test.n,
                double(correct) / double(test.n), double(test.n) / seconds,
                ctx.device().str().c_str(), graph ? " (CUDA graph)" : "");
    return 0;
  });
}
