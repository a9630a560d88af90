// The DARTS pipeline as library calls: a search run (bilevel or joint) and a retraining run of
// a genotype, each writing log.jsonl, checkpoints and results into an output folder and able to
// resume from its last checkpoint. The darts_search and darts_train programs are thin wrappers.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "cudarts/darts.h"

namespace cudarts::darts {

struct DataOptions {
  std::string dataset = "fashion-mnist";  // or "cifar10"
  std::string dir;                        // empty: Debian's Fashion-MNIST package
  int64_t subset = 0;                     // use only the first N training images (0: all)
  int64_t test_subset = 0;                // evaluate on the first N test images (0: all)
};

struct RunOptions {
  std::string out_dir;
  std::string device = "auto";  // cpu | cuda | auto
  uint64_t seed = 0;
  bool resume = false;
  int checkpoint_every = 0;  // also checkpoint every N steps (0: at epoch ends only)
  int64_t max_steps = -1;    // stop after this many steps in this process (tests: a kill)
  int print_every = 50;      // progress lines
  bool quiet = false;
  // Capture the training step and the evaluation pass in CUDA graphs (StepGraph) once per
  // epoch and replay them: one launch per batch instead of hundreds. Needs Continuous MixedOps in a
  // search (sampled types choose their ops on the host every step). Results equal the eager run's.
  bool cuda_graph = false;
  // A step with a non-finite loss or gradient norm: false (default) stops the run with a
  // DivergenceError before anything from that step is written; true skips the step (the
  // optimizers leave weights and state as they were) and logs the count per epoch
  // ("skipped_steps"). Either way no non-finite value is ever written to a checkpoint, log or
  // genotype.
  bool skip_nonfinite = false;
  // Data parallel (mpirun): every BatchNorm normalises with the statistics of the whole batch
  // over all ranks (BatchNorm2d::set_synchronized) instead of its rank's share. A single
  // process without MPI ignores it.
  bool sync_batchnorm = false;
};

struct SearchOptions {
  DataOptions data;
  RunOptions run;
  // "darts" (the DARTS space: SearchNetwork) or "nb201" (NAS-Bench-201: nb201::Network with
  // net.channels and net.cells cells per stage; the DARTS-only options must stay off).
  std::string space = "darts";
  SearchConfig net;  // channels, cells, MixedOp type and k's
  int epochs = 50;
  int batch = 64;
  bool bilevel = true;  // false: joint (weights and alphas on one batch, the seed's style)
  // Bilevel only: the architecture gradient through one virtual weight step (second-order
  // DARTS, unrolled_architecture_gradient with xi = the current weight lr). 4 passes per
  // architecture step instead of 1; continuous MixedOps; not with --cuda-graph.
  bool second_order = false;
  int warmup_epochs = 0;  // epochs with frozen alphas
  float lr = 0.025f, lr_min = 0.001f, momentum = 0.9f, weight_decay = 3e-4f, grad_clip = 5.0f;
  float arch_lr = 3e-4f, arch_beta1 = 0.5f, arch_beta2 = 0.999f, arch_weight_decay = 1e-3f;
  bool augment = true;  // random crop (pad 4) and flip on the weight-step batches
  // Each pass computes only the gradients that its step uses (SearchModel::set_gradients):
  // no weight gradients in the architecture passes, no scores or alpha gradients in bilevel
  // weight passes. false (--all-gradients) computes every gradient in every pass; the
  // numbers are the same bit for bit, it is only slower.
  bool skip_unused_gradients = true;
  // ProxylessNAS MixedOps: the exact update (default; SearchModel's ProxylessUpdate::Exact) or
  // the seed's reference update (--proxyless-reference).
  ProxylessUpdate proxyless_update = ProxylessUpdate::Exact;
  // Anti-collapse regularisers (beta-decay, DARTS-'s auxiliary skip, a skip cap at
  // derivation); all off by default. docs/DESIGN.md section 9.
  RegularizerOptions regularizers;
  // R-DARTS's monitor: every `every` epochs (0: never) the dominant eigenvalue of the
  // validation-loss Hessian with respect to alpha on the first `batches` validation batches
  // (alpha_hessian_eigenvalue), logged as hessian_eigenvalue; with stop_factor >= 1 the search
  // ends after an epoch whose eigenvalue exceeds stop_factor times the smallest so far, in
  // magnitude (DARTS-ES; 0: no early stop). Continuous MixedOps.
  struct {
    int every = 0;
    int batches = 2;
    float stop_factor = 0.0f;
  } hessian;
  // Hardware-aware search (docs/DESIGN.md section 11; DARTS space): with weight > 0 the
  // architecture loss gets weight * E[c] (budget > 0: weight * max(0, E[c] - budget), the
  // indicator taken at the start of each epoch) for the metric "latency" (inference ms),
  // "train_latency" (training-step ms), "flops" (MFLOP) or "params" (thousands) of the cost table:
  // read from `table` when given, else measured at the start on the run's device (and written to
  // cost_table.json in the run folder, which a resume reads). Each epoch logs expected_cost and
  // derived_cost.
  struct {
    float weight = 0.0f;
    float budget = 0.0f;
    std::string metric = "latency";
    std::string table;
  } cost;
};

struct TrainOptions {
  DataOptions data;
  RunOptions run;
  // genotype.json from darts_search, or the DARTS reference's Python notation: one
  // Genotype(...), or a whole genotypes.py with genotype_name naming one of its assignments.
  std::string genotype_path, genotype_name;
  // "darts" (EvalNetwork of a genotype) or "nb201" (nb201::Network of an architecture: the
  // file holds the benchmark's string or darts_search's {"nb201": "..."}; net.channels and
  // net.cells per stage; no auxiliary head, no drop-path).
  std::string space = "darts";
  EvalConfig net;  // channels 36, 20 cells, auxiliary head
  int epochs = 600;
  int batch = 96;
  float lr = 0.025f, momentum = 0.9f, weight_decay = 3e-4f, grad_clip = 5.0f;
  float auxiliary_weight = 0.4f;
  float drop_path = 0.2f;
  int cutout = 16;  // 0 disables
  // When set: after the last epoch the trained network is written there as an ONNX model
  // (cudarts/onnx.h; input: the normalised images at the size the run trained on, batch
  // symbolic), with the architecture in its metadata. The folder must exist.
  std::string export_onnx;
};

struct RunResult {
  int epochs_done = 0;
  bool stopped_early = false;  // the task ended the run before its last epoch (early stop)
  double final_train_acc = 0, final_valid_acc = 0;  // search: validation split; train: test set
  std::string genotype_json;                        // search only
};

// Writes into options.run.out_dir: log.jsonl (one object per epoch), summary.txt, genotype.json,
// checkpoint.safetensors. With run.resume, continues from the checkpoint there.
RunResult run_search(const SearchOptions& options);
// The cost table (include/cudarts/hardware.h) of the search network these options describe,
// for its input (batch, channels, height, width of the dataset), measured on the run's device.
// Writes nothing.
struct CostTable;
CostTable measure_search_costs(const SearchOptions& options);
RunResult run_train(const TrainOptions& options);

}  // namespace cudarts::darts
