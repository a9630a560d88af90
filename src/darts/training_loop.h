// The pieces every training run of the pipeline shares (internal): data and output folders,
// the device-side epoch metrics, the cross-entropy step helper, the StepRunner (eager steps or
// StepGraph replays), the divergence guard of a run, progress lines, checkpoints (save,
// verify, validate before a resume), evaluation, and the one training loop (run_loop) that
// drives a TrainingTask: the search and the retraining are tasks (search_run.cpp,
// train_run.cpp), each step algorithm a SearchStep.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cudarts/checkpoint.h"
#include "cudarts/comm.h"
#include "cudarts/darts_run.h"
#include "cudarts/data.h"
#include "cudarts/error.h"
#include "cudarts/guard.h"
#include "cudarts/layers.h"
#include "cudarts/ops.h"
#include "cudarts/optim.h"
#include "cudarts/step_graph.h"
#include "run_files.h"

namespace cudarts::darts {

namespace fs = std::filesystem;
using json = nlohmann::json;

using Clock = std::chrono::steady_clock;

// The GPU of this process: under an MPI launcher one per rank of the node (its local rank),
// else GPU 0.
inline int local_gpu() {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (!local) local = std::getenv("MPI_LOCALRANKID");
  return local ? std::atoi(local) : 0;
}

inline Device pick_device(const std::string& d) {
  if (d == "cpu") return Device::cpu();
  if (d == "cuda") return Device::cuda(local_gpu());
  CUDARTS_CONFIG_CHECK(d == "auto", "unknown device '", d, "'; expected cpu, cuda or auto");
  return Context::cuda_available() ? Device::cuda(local_gpu()) : Device::cpu();
}

// Joins the job this process was launched in (cudarts/comm.h; one process: nothing changes):
// the communicator goes onto the context (NCCL for a CUDA context where built with it, else
// MPI), and the batch must split evenly over the ranks.
inline void join_job(Context& ctx, const char* program, int batch) {
  std::shared_ptr<Communicator> comm = world_communicator();
  CUDARTS_CONFIG_CHECK(batch % comm->size() == 0, program, ": batch ", batch,
                       " does not split evenly over ", comm->size(),
                       " ranks (use a multiple of the number of ranks)");
  if (launched_by_mpi() && !ctx.device().is_cpu() && built_with_nccl())
    comm = nccl_communicator(ctx);
  ctx.set_communicator(std::move(comm));
}

// Training and test sets, padded to a multiple of 4 (two reductions halve the size twice and
// FactorizedReduce needs even sizes) and to at least min_side, subsets applied.
inline std::pair<Dataset, Dataset> load_data(const DataOptions& o, int64_t min_side = 0) {
  Dataset train = load_dataset(o.dataset, o.dir, true);
  Dataset test = load_dataset(o.dataset, o.dir, false);
  if (o.subset > 0 && o.subset < train.n) train = train.subset(0, o.subset);
  if (o.test_subset > 0 && o.test_subset < test.n) test = test.subset(0, o.test_subset);
  const int64_t side = std::max<int64_t>(min_side, (std::max(train.h, train.w) + 3) / 4 * 4);
  return {train.padded(side, train.background), test.padded(side, test.background)};
}

inline void prepare_out_dir(const RunOptions& run, const char* program) {
  CUDARTS_CONFIG_CHECK(!run.out_dir.empty(), program, ": an output folder (--out) is required");
  std::error_code ec;
  fs::create_directories(run.out_dir, ec);
  CUDARTS_CHECK(fs::is_directory(run.out_dir), program, ": cannot create the output folder '",
                run.out_dir, "'", ec ? ": " + ec.message() : "");
  const bool has_run = fs::exists(fs::path(run.out_dir) / "log.jsonl") ||
                       fs::exists(fs::path(run.out_dir) / "checkpoint.safetensors");
  CUDARTS_CONFIG_CHECK(
      run.resume || !has_run, program, ": '", run.out_dir,
      "' already holds a run (log.jsonl or checkpoint.safetensors); pass --resume to "
      "continue it or choose another --out (nothing was overwritten)");
}

inline std::string path_in(const RunOptions& run, const char* name) {
  return (fs::path(run.out_dir) / name).string();
}

// Keeps the first `lines` lines of log.jsonl (a killed run may have logged an epoch whose
// checkpoint was never written).
inline void truncate_log(const RunOptions& run, int lines) {
  const std::string path = path_in(run, "log.jsonl");
  std::ifstream in(path);
  std::string kept, line;
  for (int i = 0; i < lines && std::getline(in, line); ++i) kept += line + "\n";
  write_file_atomic(path, kept);
}

// Adds a line by rewriting the (small) file atomically: a run killed at any moment leaves the
// log with whole lines only.
inline void append_log(const RunOptions& run, const json& line) {
  const std::string path = path_in(run, "log.jsonl");
  std::string text;
  {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  write_file_atomic(path, text + line.dump() + "\n");
}

// Running sums of one epoch, kept on the device (ops::metrics_add): batch-weighted loss, hits,
// samples, and steps whose loss was not finite (left out of the sums).
struct Metrics {
  Tensor sums;
  explicit Metrics(Context& ctx) : sums(Tensor::zeros(ctx, Shape{4})) {}
  void add(Context& ctx, const Tensor& loss, const Tensor& hits, int64_t batch) {
    ops::metrics_add(ctx, loss, hits, float(batch), sums);
  }
  struct Values {
    double loss = 0, acc = 0;
    int64_t samples = 0, nonfinite = 0;
  };
  Values read() const {  // one host read
    const std::vector<float> s = sums.to_vector();
    Values v;
    v.samples = int64_t(s[2]);
    v.nonfinite = int64_t(s[3]);
    if (s[2] > 0) v.loss = double(s[0]) / double(s[2]), v.acc = double(s[1]) / double(s[2]);
    return v;
  }
};

// Cross-entropy loss and accuracy of one batch; dlogits scaled by `weight`.
struct Xent {
  Tensor loss, hits, dlogits;
  Xent(Context& ctx, const Tensor& logits, const Tensor& labels, float weight = 1.0f)
      : loss(Tensor::empty(ctx, Shape{1})),
        hits(Tensor::empty(ctx, Shape{1})),
        dlogits(Tensor::empty(ctx, logits.shape())) {
    ops::softmax_xent(ctx, logits, labels, loss, dlogits, hits);
    if (weight != 1.0f) ops::scale(ctx, dlogits, weight, dlogits);
  }
};

// Runs the training step eagerly, or (run.cuda_graph) by replaying a StepGraph captured from
// it: each batch is copied into static tensors that the graph reads, the step writes its
// loss and hits into tensors made before capture, and the graph is captured again after
// restart() (each epoch: the drop-path probability and the warm-up switch are host values
// frozen into a capture). The first step after a restart runs eagerly (the warm-up that a
// capture needs) and is captured right after.
class StepRunner {
 public:
  using Step = std::function<void(const std::vector<const Tensor*>& inputs)>;
  StepRunner(Context& ctx, bool use_graph)
      : ctx_(ctx),
        graph_(use_graph ? std::make_unique<StepGraph>(ctx) : nullptr),
        loss(Tensor::zeros(ctx, Shape{1})),
        hits(Tensor::zeros(ctx, Shape{1})) {}
  void restart() { fresh_ = true; }
  // Inside the step: keep the step's loss and hits (read after run()).
  void keep(const Tensor& step_loss, const Tensor& step_hits) {
    ops::copy(ctx_, step_loss, loss);
    ops::copy(ctx_, step_hits, hits);
  }
  void run(const std::vector<const Tensor*>& inputs, const Step& step) {
    if (!graph_) {
      step(inputs);
      return;
    }
    if (statics_.empty())
      for (const Tensor* t : inputs)
        statics_.push_back(Tensor::empty(ctx_, t->shape(), t->dtype()));
    std::vector<const Tensor*> fixed;
    for (size_t i = 0; i < inputs.size(); ++i) {
      CUDARTS_CHECK(inputs[i]->shape() == statics_[i].shape(), "--cuda-graph: input ", i,
                    " has shape ", inputs[i]->shape(), " but the captured step reads ",
                    statics_[i].shape());
      ops::copy(ctx_, *inputs[i], statics_[i]);
      fixed.push_back(&statics_[i]);
    }
    if (fresh_ || !graph_->captured()) {
      step(fixed);
      graph_->capture([&] { step(fixed); });
      fresh_ = false;
    } else {
      graph_->replay();
    }
  }

 private:
  Context& ctx_;
  std::unique_ptr<StepGraph> graph_;
  std::vector<Tensor> statics_;
  bool fresh_ = true;

 public:
  Tensor loss, hits;  // of the last step
};

// ---------------------------------------------------------------- data parallel
// Rank 0 writes every file and prints; every rank computes.
inline bool is_lead(const Context& ctx) {
  return ctx.communicator().rank() == 0;
}

// This rank's contiguous share of a batch's indices: rank r of R takes [r n / R, (r+1) n / R).
inline std::vector<int64_t> rank_share(const std::vector<int64_t>& idx, const Communicator& c) {
  const size_t n = idx.size(), r = size_t(c.rank()), k = size_t(c.size());
  return std::vector<int64_t>(idx.begin() + int64_t(r * n / k),
                              idx.begin() + int64_t((r + 1) * n / k));
}

// The metric sums of all ranks (after this every rank holds the job's totals).
inline void reduce_metrics(Context& ctx, Tensor& sums) {
  ctx.communicator().all_reduce(ctx, sums, ReduceOp::Sum);
}

inline std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& order,
                                                      int64_t first, int64_t count, int batch,
                                                      int64_t cycle) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t s = first; s < first + count; ++s) {
    const int64_t b = cycle > 0 ? s % cycle : s;
    out.emplace_back(order.begin() + b * batch, order.begin() + (b + 1) * batch);
  }
  return out;
}

// The divergence policy of a run. Every step's losses and gradient norms go to a
// DivergenceGuard (on the device). Stop mode (the default): check() throws a DivergenceError
// naming the first bad step and quantity; the loop calls it before every write (checkpoint,
// log line, genotype) and at progress lines, so nothing from a diverged step reaches a file.
// Skip mode (RunOptions::skip_nonfinite): the optimizers skip steps whose gradient norm is not
// finite (they do in both modes), check() passes, and the epoch logs how many were skipped.
class RunGuard {
 public:
  RunGuard(Context& ctx, const RunOptions& run, std::string program,
           std::vector<std::string> quantities, int64_t steps_per_epoch, int64_t first_step)
      : run_(run),
        program_(std::move(program)),
        guard_(ctx, std::move(quantities)),
        steps_(steps_per_epoch),
        first_(first_step) {}
  void watch(Context& ctx, const std::vector<const Tensor*>& values) { guard_.watch(ctx, values); }
  void check() const {
    if (run_.skip_nonfinite) return;
    guard_.check(
        program_,
        [&](int64_t i) {
          const int64_t g = first_ + i;
          return detail::cat("epoch ", g / steps_ + 1, " step ", g % steps_ + 1);
        },
        detail::cat("stopped; nothing from that step on was written (the last checkpoint and "
                    "log.jsonl in '",
                    run_.out_dir,
                    "' are kept). Resume with --skip-nonfinite to skip such steps, or start "
                    "again with a lower learning rate"));
  }
  int64_t bad_steps() const { return guard_.status().bad_steps; }

 private:
  const RunOptions& run_;
  std::string program_;
  DivergenceGuard guard_;
  int64_t steps_, first_;
};

class ProgressLine {
 public:
  ProgressLine(const RunOptions& run, int64_t total_steps, int64_t done_steps)
      : run_(run), total_(total_steps), start_done_(done_steps), start_(Clock::now()) {}
  void update(int epoch, int epochs, int64_t step, int64_t steps, int64_t global_done,
              const Metrics& m, int batch, const RunGuard& guard) {
    if (run_.quiet || run_.print_every <= 0) return;
    if ((step + 1) % run_.print_every != 0 && step + 1 != steps) return;
    guard.check();  // the device is read here anyway
    const double secs = std::chrono::duration<double>(Clock::now() - start_).count();
    const double rate = double(global_done - start_done_) / std::max(secs, 1e-9);
    const double eta = double(total_ - global_done) / std::max(rate, 1e-9);
    const Metrics::Values v = m.read();
    std::printf("epoch %d/%d step %lld/%lld  loss %.4f acc %.4f  %.0f img/s  ETA %dm%02ds\n",
                epoch + 1, epochs, (long long)(step + 1), (long long)steps, v.loss, v.acc,
                rate * batch, int(eta) / 60, int(eta) % 60);
    std::fflush(stdout);
  }

 private:
  const RunOptions& run_;
  int64_t total_, start_done_;
  Clock::time_point start_;
};

// ---------------------------------------------------------------- checkpoints
struct Checkpoint {
  TensorMap tensors;
  json meta;

  void put(const std::string& name, const Tensor& t) { tensors[name] = to_host(t); }
  void get(Context& ctx, const std::string& name, Tensor& t) const {
    auto it = tensors.find(name);
    CUDARTS_INPUT_CHECK(it != tensors.end(), "checkpoint: tensor '", name, "' missing");
    copy_from_host(ctx, it->second, t, "checkpoint tensor '" + name + "'");
  }
  // Throws DivergenceError when a tensor holds non-finite values (call before writing
  // anything that belongs with this checkpoint).
  void verify(const std::string& program) const {
    check_finite(tensors, detail::cat(program, ": the checkpoint of epoch ", meta.value("epoch", 0),
                                      " step ", meta.value("step", 0),
                                      " (the run diverged; stopped, lower the learning rate)"));
  }
  // Refuses (verify) to write non-finite values; the previous checkpoint stays.
  void save(const RunOptions& run, const std::string& program) const {
    verify(program);
    save_safetensors(path_in(run, "checkpoint.safetensors"), tensors, {{"cudarts", meta.dump()}});
  }
  // Reads and verifies the checkpoint (checksums of every tensor and of the metadata); false
  // when there is none. Nothing is restored here (validate, then get_common).
  static bool load(const RunOptions& run, Checkpoint& out) {
    const std::string path = path_in(run, "checkpoint.safetensors");
    if (!fs::exists(path)) return false;
    std::map<std::string, std::string> md;
    out.tensors = load_safetensors(path, &md, /*require_checksums=*/true);
    CUDARTS_INPUT_CHECK(md.count("cudarts"), "'", path, "' has no cudarts metadata");
    try {
      out.meta = json::parse(md["cudarts"]);
    } catch (const std::exception& e) {
      CUDARTS_INPUT_FAIL("'", path, "': the cudarts metadata is not valid JSON: ", e.what());
    }
    return true;
  }
};

// The lines of log.jsonl (none when it does not exist); see parse_log.
inline std::vector<json> read_log_lines(const RunOptions& run) {
  const std::string path = path_in(run, "log.jsonl");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_log(text.str(), path);
}

inline void validate_checkpoint(const Checkpoint& c, const RunOptions& run, const json& config,
                                const std::vector<std::string>& optimizers, int epochs,
                                int64_t steps_per_epoch) {
  validate_checkpoint_meta(c.meta, path_in(run, "checkpoint.safetensors"), run.out_dir, config,
                           optimizers, epochs, steps_per_epoch, read_log_lines(run).size(),
                           path_in(run, "log.jsonl"));
}

inline void put_model(Checkpoint& c, Layer& net) {
  for (auto& [name, p] : net.named_parameters())
    if (p->kind == ParamKind::Operational) c.put("param/" + name, p->value);
  for (auto& [name, b] : net.named_buffers()) c.put("buffer/" + name, *b);
}

inline void get_model(Context& ctx, const Checkpoint& c, Layer& net) {
  for (auto& [name, p] : net.named_parameters())
    if (p->kind == ParamKind::Operational) c.get(ctx, "param/" + name, p->value);
  for (auto& [name, b] : net.named_buffers()) c.get(ctx, "buffer/" + name, *b);
}

inline void put_optimizer(Checkpoint& c, const std::string& prefix, Optimizer& o) {
  for (auto& [name, t] : o.state()) c.put(prefix + name, *t);
  c.meta[prefix + "steps"] = o.step_count();
}

inline void get_optimizer(Context& ctx, const Checkpoint& c, const std::string& prefix,
                          Optimizer& o) {
  for (auto& [name, t] : o.state()) c.get(ctx, prefix + name, *t);
  o.set_step_count(c.meta.at(prefix + "steps").get<int64_t>());
}

inline void put_metrics(Checkpoint& c, const Metrics& m) {
  c.put("metric/sums", m.sums);
}

inline void get_metrics(Context& ctx, const Checkpoint& c, Metrics& m) {
  c.get(ctx, "metric/sums", m.sums);
}

using NamedOptimizers = std::vector<std::pair<std::string, Optimizer*>>;

// What every run's checkpoint holds: weights and buffers, optimizer states, the partial-epoch
// metrics, the position (epoch, step), the RNG offset and the configuration.
inline void put_common(Checkpoint& c, Context& ctx, Layer& net, const NamedOptimizers& opts,
                       const Metrics& m, int epoch, int64_t step, const json& config) {
  put_model(c, net);
  for (auto& [prefix, o] : opts) put_optimizer(c, prefix, *o);
  put_metrics(c, m);
  c.meta["epoch"] = epoch;
  c.meta["step"] = step;
  c.meta["rng_offset"] = ctx.rng_offset();
  c.meta["config"] = config;
}

// Validates the checkpoint (validate_checkpoint), then restores what put_common saved into
// memory; returns the position to continue from. Files are left alone: the caller drops the
// log lines the checkpoint does not cover (truncate_log) once everything is restored.
inline std::pair<int, int64_t> get_common(Context& ctx, const Checkpoint& c, Layer& net,
                                          const NamedOptimizers& opts, Metrics& m,
                                          const RunOptions& run, const json& config, int epochs,
                                          int64_t steps) {
  std::vector<std::string> prefixes;
  for (auto& [prefix, o] : opts) prefixes.push_back(prefix);
  validate_checkpoint(c, run, config, prefixes, epochs, steps);
  get_model(ctx, c, net);
  for (auto& [prefix, o] : opts) get_optimizer(ctx, c, prefix, *o);
  get_metrics(ctx, c, m);
  ctx.set_rng_state(run.seed, c.meta.at("rng_offset").get<uint64_t>());
  return {c.meta.at("epoch").get<int>(), c.meta.at("step").get<int64_t>()};
}

// ---------------------------------------------------------------- evaluation
struct EvalResult {
  double loss = 0, acc = 0;
  int64_t nonfinite = 0, batches = 0;  // batches whose loss was not finite, of all batches
  // Throws DivergenceError when a batch's loss was not finite (weights or statistics broken).
  void check(const std::string& program, const char* what, int epoch) const {
    if (nonfinite == 0) return;
    throw DivergenceError(detail::cat(program, ": the ", what, " is not finite for ", nonfinite,
                                      " of ", batches, " batches after epoch ", epoch + 1,
                                      "; stopped before writing that epoch's log, genotype "
                                      "and checkpoint"));
  }
};

// Loss and accuracy of `forward` over the indexed images. With use_graph, the full batches
// replay a StepGraph of the forward pass (captured here); a last, smaller batch runs eagerly.
template <class Forward>
EvalResult evaluate(Context& ctx, const Dataset& data, const std::vector<int64_t>& indices,
                    int batch, bool use_graph, Forward forward) {
  Metrics m(ctx);
  std::vector<std::vector<int64_t>> batches;
  // Several ranks: each evaluates its share of every batch (the sums are reduced below).
  // (A share can be empty when a last batch has fewer images than there are ranks.)
  const int share_of_full =
      int(rank_share(std::vector<int64_t>(static_cast<size_t>(batch)), ctx.communicator()).size());
  for (size_t b = 0; b < indices.size(); b += size_t(batch)) {
    std::vector<int64_t> share =
        rank_share(std::vector<int64_t>(
                       indices.begin() + int64_t(b),
                       indices.begin() + int64_t(std::min(indices.size(), b + size_t(batch)))),
                   ctx.communicator());
    if (!share.empty()) batches.push_back(std::move(share));
  }
  batch = share_of_full;  // this rank's share of a full batch (what the graph runner replays)
  BatchPrefetcher pf(ctx, data, batches);
  StepRunner full(ctx, use_graph), partial(ctx, false);
  while (!pf.done()) {
    Batch b = pf.next(ctx);
    StepRunner& r = b.labels.numel() == batch ? full : partial;
    r.run({&b.images, &b.labels}, [&](const std::vector<const Tensor*>& in) {
      Tensor logits = forward(*in[0]);
      Xent x(ctx, logits, *in[1]);
      r.keep(x.loss, x.hits);
    });
    m.add(ctx, r.loss, r.hits, b.labels.numel());
  }
  reduce_metrics(ctx, m.sums);
  const Metrics::Values v = m.read();
  return {v.loss, v.acc, v.nonfinite, int64_t(batches.size())};
}

inline std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

// Eight random words per image. Several ranks: each rank's images are its share of the batch,
// and the draw is the whole batch's, each rank reading its images' words (Philox block
// offset + 2 per image before them), so the augmentation is the one-process run's.
inline Tensor augmented(Context& ctx, const Tensor& images, const AugmentParams& p) {
  Tensor out = Tensor::empty(ctx, images.shape());
  const uint64_t n = uint64_t(images.dim(0)), ranks = uint64_t(ctx.communicator().size());
  const uint64_t base = ctx.reserve_rng(8 * n * ranks);
  ops::augment(ctx, images, out, p, ctx.seed(), base + 2 * n * uint64_t(ctx.communicator().rank()));
  return out;
}

// The options every run shares, checked before anything is written.
inline void check_common(const char* program, const DataOptions& d, const RunOptions& r, float lr,
                         float momentum, float weight_decay, float grad_clip) {
  CUDARTS_CONFIG_CHECK(std::isfinite(lr) && lr > 0.0f, program, ": lr ", lr,
                       " must be finite and > 0");
  CUDARTS_CONFIG_CHECK(momentum >= 0.0f && momentum < 1.0f, program, ": momentum ", momentum,
                       " must be in [0, 1)");
  CUDARTS_CONFIG_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0f, program,
                       ": weight_decay ", weight_decay, " must be finite and >= 0");
  CUDARTS_CONFIG_CHECK(std::isfinite(grad_clip) && grad_clip >= 0.0f, program, ": grad_clip ",
                       grad_clip, " must be finite and >= 0 (0: no clipping)");
  CUDARTS_CONFIG_CHECK(d.subset >= 0 && d.test_subset >= 0, program, ": subset ", d.subset,
                       " and test_subset ", d.test_subset, " must be >= 0 (0: all)");
  CUDARTS_CONFIG_CHECK(r.checkpoint_every >= 0, program, ": checkpoint_every ", r.checkpoint_every,
                       " must be >= 0 (0: at epoch ends only)");
}

// ---------------------------------------------------------------- the one training loop
// What a run does that the loop does not: its data streams, its step, its evaluation, the
// log line's extra members, the files it writes with each epoch and its own checkpoint
// tensors. The loop does epochs and steps over prefetched batches, metrics, progress, the
// divergence guard, CUDA-graph capture (StepRunner), mid-epoch and epoch-end checkpoints and
// the exact resume, log.jsonl.
class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  virtual const char* program() const = 0;  // "darts_search", for messages
  virtual const Dataset& data() const = 0;  // what the batches index
  virtual int64_t steps_per_epoch() const = 0;
  virtual int batch() const = 0;
  virtual std::vector<std::string> watched_names() const = 0;  // DivergenceGuard quantities
  virtual Layer& network() = 0;              // weights and buffers in the checkpoint
  virtual NamedOptimizers optimizers() = 0;  // their state in the checkpoint, by prefix
  virtual json config() const = 0;           // a resume must match it
  // Host work at the start of an epoch (learning rates, schedules); its lr is logged.
  virtual void begin_epoch(Context& ctx, int epoch) = 0;
  virtual float lr(int epoch) const = 0;
  // The batches of steps [first, steps_per_epoch()) of an epoch, one list per input stream;
  // step s gets (images, labels) of each stream, in stream order. The last stream is the one
  // whose loss and accuracy the epoch's metrics report.
  virtual std::vector<std::vector<std::vector<int64_t>>> batches(int epoch, int64_t first) = 0;
  // One step: keeps its loss and hits (runner.keep) and returns the values to watch (as many
  // as watched_names()). Runs once at capture when the run replays CUDA graphs.
  virtual std::vector<const Tensor*> step(Context& ctx, const std::vector<const Tensor*>& in,
                                          int epoch, StepRunner& runner) = 0;
  virtual EvalResult evaluate(Context& ctx, int epoch) = 0;
  virtual const char* eval_name() const = 0;  // "validation loss"
  // The epoch's extra log members (may throw DivergenceError before anything is written).
  virtual void end_epoch(Context& ctx, int epoch, json& line) = 0;
  // Files written with an epoch's log line, before its checkpoint.
  virtual void write_epoch_files(int /*epoch*/) {}
  // The task's own checkpoint tensors (beyond weights, buffers, optimizers, metrics).
  virtual void put(Checkpoint&) {}
  virtual void get(Context&, const Checkpoint&) {}
  // After the resume (or its absence), before the first epoch: fresh = nothing resumed.
  virtual void begin_run(Context&, bool /*fresh*/) {}
  // True once the task has ended the run early (an early stop decided in end_epoch, restored
  // by get() on a resume); checked before every epoch.
  virtual bool stopped() const { return false; }
};

// Runs (or resumes) the task to its last epoch into run.out_dir; returns what was done.
RunResult run_loop(Context& ctx, const RunOptions& run, int epochs, TrainingTask& task);

}  // namespace cudarts::darts
