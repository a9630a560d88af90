// Command-line options shared by darts_search and darts_train (CLI11).
#pragma once
#include <CLI/CLI.hpp>

#include "program.h"

#include "cudarts/cudarts.h"

namespace cudarts::darts {

// The registered MixedOp methods' CLI names (for --mixed-op).
inline std::vector<std::string> mixed_op_method_names() {
  std::vector<std::string> names;
  for (const MixedOpMethod& m : mixed_op_methods()) names.push_back(m.name);
  return names;
}

inline void add_common_options(CLI::App& app, DataOptions& data, RunOptions& run, int& epochs,
                               int& batch) {
  app.failure_message(CLI::FailureMessage::help);  // a bad flag prints the usage
  app.add_option("--dataset", data.dataset, "fashion-mnist (default, Debian's package) or cifar10")
      ->check(CLI::IsMember({"fashion-mnist", "cifar10"}));
  app.add_option("--data", data.dir, "dataset folder (CIFAR-10 binary version)");
  app.add_option("--subset", data.subset, "use only the first N training images")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--test-subset", data.test_subset, "evaluate on the first N test images")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--epochs", epochs, "training epochs")->check(CLI::Range(1, 1000000));
  app.add_option("--batch-size", batch, "batch size")->check(CLI::Range(2, 1 << 16));
  app.add_option("--device", run.device, "cpu, cuda or auto")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--seed", run.seed, "random seed (CPU runs are bit-reproducible)");
  app.add_option("--out", run.out_dir, "output folder (log.jsonl, genotype.json, checkpoints)")
      ->required();
  app.add_flag("--resume", run.resume, "continue the run in --out from its last checkpoint");
  app.add_option("--checkpoint-every", run.checkpoint_every,
                 "also checkpoint every N steps (0: epoch ends only)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--max-steps", run.max_steps,
                 "stop after N steps without a final checkpoint (simulates a kill)");
  app.add_option("--print-every", run.print_every, "progress line every N steps");
  app.add_flag("--quiet", run.quiet, "no progress output");
  app.add_flag("--skip-nonfinite", run.skip_nonfinite,
               "skip training steps with a non-finite loss or gradient norm (counted in "
               "log.jsonl) instead of stopping the run");
  app.add_flag("--sync-bn", run.sync_batchnorm,
               "several ranks (mpirun): BatchNorm statistics over the whole batch of all ranks");
  app.add_flag("--cuda-graph", run.cuda_graph,
               "capture the training step in a CUDA graph and replay it (continuous MixedOps)");
}

}  // namespace cudarts::darts
