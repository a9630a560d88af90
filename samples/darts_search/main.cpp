// darts_search: DARTS architecture search (or any of the five MixedOp types) on Fashion-MNIST
// or CIFAR-10, writing log.jsonl, summary.txt, genotype.json and checkpoints into --out.
#include <cstdio>

#include "../darts_cli.h"
#include "cudarts/hardware.h"

using namespace cudarts;

int main(int argc, char** argv) {
  darts::SearchOptions o;
  std::string mixed_op = "continuous";
  bool joint = false, no_augment = false, which_device = false;
  CLI::App app{"darts_search: differentiable architecture search over the DARTS cell space"};
  darts::add_common_options(app, o.data, o.run, o.epochs, o.batch);
  app.add_option("--mixed-op", mixed_op,
                 "continuous (DARTS), binary, masked, proxyless, moving-average, gdas")
      ->check(CLI::IsMember(darts::mixed_op_method_names()));
  app.add_option("--num-on", o.net.mixed.num_on, "k_on: ops kept per edge")
      ->check(CLI::Range(1, 8));
  app.add_option("--num-eval", o.net.mixed.num_eval,
                 "k_eval of masked, proxyless and moving-average (default 2)")
      ->check(CLI::Range(1, 8));
  app.add_option("--ma-lr", o.net.mixed.ma_lr, "moving-average learning rate in (0, 1]");
  app.add_option("--tau-max", o.net.mixed.tau_max,
                 "gdas: Gumbel-softmax temperature at the first epoch (annealed linearly)")
      ->check(CLI::PositiveNumber);
  app.add_option("--tau-min", o.net.mixed.tau_min, "gdas: temperature at the last epoch")
      ->check(CLI::PositiveNumber);
  app.add_option("--channels", o.net.channels, "initial channels C")->check(CLI::Range(2, 4096));
  app.add_option("--cells", o.net.cells, "cells in the search network")->check(CLI::Range(1, 64));
  app.add_flag("--joint", joint, "one batch updates weights and alphas (the seed's style)");
  app.add_flag("--second-order", o.second_order,
               "second-order DARTS architecture gradient (bilevel, continuous MixedOps)");
  app.add_option("--warmup-epochs", o.warmup_epochs, "epochs with frozen alphas")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lr", o.lr, "weight learning rate (cosine to --lr-min)")
      ->check(CLI::PositiveNumber);
  app.add_option("--lr-min", o.lr_min, "final weight learning rate")->check(CLI::NonNegativeNumber);
  app.add_option("--arch-lr", o.arch_lr, "architecture (Adam) learning rate")
      ->check(CLI::PositiveNumber);
  app.add_option("--partial-channels", o.net.partial_channels,
                 "PC-DARTS: 1/K of each edge's channels go through its MixedOp (1: off)")
      ->check(CLI::Range(1, 64));
  app.add_flag("--edge-normalization", o.net.edge_normalization,
               "PC-DARTS: per node a softmax over its edges' beta weights the edges; the genotype "
               "is chosen by alpha times it");
  app.add_flag("--fixed-reduction", o.net.fixed_reduction,
               "GDAS-FRC: the reduction cells are GDAS's fixed reduction cell (not searched; "
               "the genotype says reduce_cell gdas_frc); needs channels such that 2 C is a "
               "multiple of 8");
  auto& reg = o.regularizers;
  app.add_option("--beta-decay", reg.beta_decay,
                 "beta-DARTS: regularise the architecture loss by L mean_e logsumexp(alpha_e) "
                 "with L growing linearly from 0 (L e / epochs; 25 is the reference's schedule "
                 "at 50 epochs; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--auxiliary-skip", reg.auxiliary_skip,
                 "DARTS-: an auxiliary skip connection on every edge with this initial weight, "
                 "decaying to 0 over the search (1 in DARTS-; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--auxiliary-skip-decay", reg.auxiliary_skip_decay,
                 "the auxiliary skip's decay: linear (default) or cosine")
      ->check(CLI::IsMember({"linear", "cosine"}));
  app.add_option("--max-skips", reg.max_skips,
                 "derive cells with at most this many skip connections (P-DARTS: 2; -1: no cap)")
      ->check(CLI::Range(-1, 64));
  app.add_option("--hessian-every", o.hessian.every,
                 "R-DARTS: every N epochs log the dominant eigenvalue of the validation loss's "
                 "Hessian with respect to alpha (hessian_eigenvalue; continuous MixedOps; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--hessian-batches", o.hessian.batches,
                 "validation batches the eigenvalue is computed on (default 2)")
      ->check(CLI::PositiveNumber);
  app.add_option("--hessian-stop", o.hessian.stop_factor,
                 "stop the search after an epoch whose eigenvalue exceeds this factor (>= 1) "
                 "times its minimum so far (DARTS-ES; 0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--space", o.space,
                 "darts (the DARTS cells) or nb201 (NAS-Bench-201: a 4-node cell of 6 edges, "
                 "--cells then counts cells per stage, default 5; writes arch.txt)")
      ->check(CLI::IsMember({"darts", "nb201"}));
  app.add_option("--cost-weight", o.cost.weight,
                 "hardware-aware search: add this weight times the expected cost E[c] of the "
                 "architecture (sum over edges of p_i c_i) to the architecture loss (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cost-metric", o.cost.metric,
                 "latency (inference ms, default), train_latency (training-step ms), flops "
                 "(MFLOP), params (k)")
      ->check(CLI::IsMember({"latency", "train_latency", "flops", "params"}));
  app.add_option("--cost-budget", o.cost.budget,
                 "penalise only the expected cost above this budget (0: all of it)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--cost-table", o.cost.table,
                 "a cost table from --write-cost-table (default: measure at the start)");
  std::string write_table;
  app.add_option("--write-cost-table", write_table,
                 "measure every candidate of every edge on --device for this network and "
                 "batch (latency, FLOPs, parameters), write the JSON table and exit");
  bool pc_darts = false;
  app.add_flag("--pc-darts", pc_darts,
               "PC-DARTS with its defaults: --partial-channels 4 --edge-normalization "
               "--batch-size 256 --warmup-epochs 15 --lr 0.1 --lr-min 0 --arch-lr 6e-4 (each "
               "given explicitly wins)");
  app.add_flag("--no-augment", no_augment, "no random crop and flip");
  bool all_gradients = false, proxyless_reference = false;
  app.add_flag("--proxyless-reference", proxyless_reference,
               "proxyless: the seed's architecture update (every alpha entry moves with Adam's "
               "momentum and weight decay) instead of the exact one (only the evaluated ops)");
  app.add_flag("--all-gradients", all_gradients,
               "compute every gradient in every pass, also those the step discards (same "
               "numbers, slower; for checking)");
  app.add_flag("--which-device", which_device,
               "print the device --device auto would use (cpu or cuda) and exit");
  for (CLI::Option* opt : app.get_options())
    if (opt->get_name() == "--out") opt->required(false);
  CUDARTS_PARSE(app, argc, argv);
  if (which_device) {
    std::printf("%s\n", Context::cuda_available() ? "cuda" : "cpu");
    return 0;
  }
  if (o.run.out_dir.empty() && write_table.empty()) {
    std::fprintf(stderr, "darts_search: --out is required\n%s", app.help().c_str());
    return 2;
  }
  if (pc_darts) {  // the PC-DARTS defaults (Xu et al., ICLR 2020), under explicit options
    auto unset = [&](const char* flag) { return app.count(flag) == 0; };
    if (unset("--partial-channels")) o.net.partial_channels = 4;
    o.net.edge_normalization = true;
    if (unset("--batch-size")) o.batch = 256;
    if (unset("--warmup-epochs")) o.warmup_epochs = 15;
    if (unset("--lr")) o.lr = 0.1f;
    if (unset("--lr-min")) o.lr_min = 0.0f;
    if (unset("--arch-lr")) o.arch_lr = 6e-4f;
  }
  if (o.space == "nb201" && app.count("--cells") == 0) o.net.cells = 5;  // per stage
  o.net.mixed.method = mixed_op;
  if (o.net.mixed.num_eval == 0) o.net.mixed.num_eval = std::max(2, o.net.mixed.num_on);
  if (!write_table.empty())
    return program::run("darts_search", [&] {
      write_file_atomic(write_table, darts::measure_search_costs(o).to_json() + "\n");
      if (!o.run.quiet) std::printf("darts_search: wrote %s\n", write_table.c_str());
      return 0;
    });
  return program::run("darts_search", [&] {
    o.bilevel = !joint;
    o.augment = !no_augment;
    o.skip_unused_gradients = !all_gradients;
    if (proxyless_reference) o.proxyless_update = ProxylessUpdate::Reference;
    const darts::RunResult r = darts::run_search(o);
    if (!o.run.quiet)
      std::printf(
          "\ngenotype (%s/genotype.json):\n%s\nvalidation accuracy %.4f after %d epochs; "
          "plots: python3 scripts/plot_search.py %s\n",
          o.run.out_dir.c_str(), r.genotype_json.c_str(), r.final_valid_acc, r.epochs_done,
          o.run.out_dir.c_str());
    return 0;
  });
}
