// darts_train: trains the discrete network of a genotype (DARTS retraining: cutout,
// drop-path, auxiliary head) and reports test accuracy each epoch, into --out.
#include <cstdio>

#include "../darts_cli.h"

using namespace cudarts;

int main(int argc, char** argv) {
  darts::TrainOptions o;
  bool no_aux = false;
  CLI::App app{"darts_train: train the network of a DARTS genotype"};
  darts::add_common_options(app, o.data, o.run, o.epochs, o.batch);
  app.add_option("--genotype", o.genotype_path,
                 "genotype.json from darts_search, or the DARTS reference's Python notation "
                 "(one Genotype(...) or a genotypes.py with --genotype-name)")
      ->required();
  app.add_option("--genotype-name", o.genotype_name,
                 "which assignment of a genotypes.py to train (e.g. DARTS_V2, PC_DARTS_cifar)");
  app.add_option("--channels", o.net.channels, "initial channels C")->check(CLI::Range(2, 4096));
  app.add_option("--cells", o.net.cells, "cells")->check(CLI::Range(1, 64));
  app.add_option("--lr", o.lr, "learning rate (cosine to 0)")->check(CLI::PositiveNumber);
  app.add_option("--drop-path", o.drop_path, "final drop-path probability")
      ->check(CLI::Range(0.0, 0.95));
  app.add_option("--cutout", o.cutout, "cutout length (0 disables)")->check(CLI::NonNegativeNumber);
  app.add_option("--export-onnx", o.export_onnx,
                 "after training, write the network as an ONNX model (opset 17) to this file");
  app.add_option("--auxiliary-weight", o.auxiliary_weight, "weight of the auxiliary loss");
  app.add_flag("--no-auxiliary", no_aux, "no auxiliary head");
  app.add_option("--space", o.space,
                 "darts (a DARTS genotype) or nb201 (a NAS-Bench-201 architecture string; "
                 "defaults then: 16 channels, 5 cells per stage, no auxiliary head, no "
                 "drop-path, no cutout, 200 epochs, batch 256, lr 0.1)")
      ->check(CLI::IsMember({"darts", "nb201"}));
  CUDARTS_PARSE(app, argc, argv);
  return program::run("darts_train", [&] {
    o.net.auxiliary = !no_aux;
    if (o.space == "nb201") {  // the benchmark's training, under explicit options
      auto unset = [&](const char* flag) { return app.count(flag) == 0; };
      if (unset("--channels")) o.net.channels = 16;
      if (unset("--cells")) o.net.cells = 5;
      if (unset("--drop-path")) o.drop_path = 0.0f;
      if (unset("--cutout")) o.cutout = 0;
      if (unset("--epochs")) o.epochs = 200;
      if (unset("--batch-size")) o.batch = 256;
      if (unset("--lr")) o.lr = 0.1f;
      o.net.auxiliary = false;
    }
    const darts::RunResult r = darts::run_train(o);
    if (!o.run.quiet)
      std::printf("test accuracy %.4f after %d epochs (%s/log.jsonl)\n", r.final_valid_acc,
                  r.epochs_done, o.run.out_dir.c_str());
    return 0;
  });
}
