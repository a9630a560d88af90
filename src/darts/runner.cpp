// The DARTS search and retraining runs: data preparation, the training loops, per-epoch JSON
// logs, atomic checkpoints (weights, alphas, BatchNorm statistics, moving averages, optimizer
// state, RNG state, partial-epoch metrics) and resumption from the last checkpoint.
// Loss and accuracy are accumulated on the device and read once per progress line.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "cudarts/checkpoint.h"
#include "cudarts/darts_run.h"
#include "cudarts/data.h"
#include "cudarts/error.h"
#include "cudarts/guard.h"
#include "cudarts/ops.h"
#include "cudarts/optim.h"
#include "cudarts/search_model.h"
#include "cudarts/step_graph.h"
#include "run_files.h"

namespace cudarts::darts {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

Device pick_device(const std::string& d) {
  if (d == "cpu") return Device::cpu();
  if (d == "cuda") return Device::cuda(0);
  CUDARTS_CONFIG_CHECK(d == "auto", "unknown device '", d, "'; expected cpu, cuda or auto");
  return Context::cuda_available() ? Device::cuda(0) : Device::cpu();
}

// Training and test sets, padded to a multiple of 4 (two reductions halve the size twice and
// FactorizedReduce needs even sizes) and to at least min_side, subsets applied.
std::pair<Dataset, Dataset> load_data(const DataOptions& o, int64_t min_side = 0) {
  Dataset train = load_dataset(o.dataset, o.dir, true);
  Dataset test = load_dataset(o.dataset, o.dir, false);
  if (o.subset > 0 && o.subset < train.n) train = train.subset(0, o.subset);
  if (o.test_subset > 0 && o.test_subset < test.n) test = test.subset(0, o.test_subset);
  const int64_t side = std::max<int64_t>(min_side, (std::max(train.h, train.w) + 3) / 4 * 4);
  return {train.padded(side, train.background), test.padded(side, test.background)};
}

void prepare_out_dir(const RunOptions& run, const char* program) {
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

std::string path_in(const RunOptions& run, const char* name) {
  return (fs::path(run.out_dir) / name).string();
}

// Keeps the first `lines` lines of log.jsonl (a killed run may have logged an epoch whose
// checkpoint was never written).
void truncate_log(const RunOptions& run, int lines) {
  const std::string path = path_in(run, "log.jsonl");
  std::ifstream in(path);
  std::string kept, line;
  for (int i = 0; i < lines && std::getline(in, line); ++i) kept += line + "\n";
  write_file_atomic(path, kept);
}

// Adds a line by rewriting the (small) file atomically: a run killed at any moment leaves the
// log with whole lines only.
void append_log(const RunOptions& run, const json& line) {
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

std::vector<std::vector<int64_t>> make_batches(const std::vector<int64_t>& order, int64_t first,
                                               int64_t count, int batch, int64_t cycle) {
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
std::vector<json> read_log_lines(const RunOptions& run) {
  const std::string path = path_in(run, "log.jsonl");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_log(text.str(), path);
}

void validate_checkpoint(const Checkpoint& c, const RunOptions& run, const json& config,
                         const std::vector<std::string>& optimizers, int epochs,
                         int64_t steps_per_epoch) {
  validate_checkpoint_meta(c.meta, path_in(run, "checkpoint.safetensors"), run.out_dir, config,
                           optimizers, epochs, steps_per_epoch, read_log_lines(run).size(),
                           path_in(run, "log.jsonl"));
}

void put_model(Checkpoint& c, Layer& net) {
  for (auto& [name, p] : net.named_parameters())
    if (p->kind == ParamKind::Operational) c.put("param/" + name, p->value);
  for (auto& [name, b] : net.named_buffers()) c.put("buffer/" + name, *b);
}

void get_model(Context& ctx, const Checkpoint& c, Layer& net) {
  for (auto& [name, p] : net.named_parameters())
    if (p->kind == ParamKind::Operational) c.get(ctx, "param/" + name, p->value);
  for (auto& [name, b] : net.named_buffers()) c.get(ctx, "buffer/" + name, *b);
}

void put_optimizer(Checkpoint& c, const std::string& prefix, Optimizer& o) {
  for (auto& [name, t] : o.state()) c.put(prefix + name, *t);
  c.meta[prefix + "steps"] = o.step_count();
}

void get_optimizer(Context& ctx, const Checkpoint& c, const std::string& prefix, Optimizer& o) {
  for (auto& [name, t] : o.state()) c.get(ctx, prefix + name, *t);
  o.set_step_count(c.meta.at(prefix + "steps").get<int64_t>());
}

void put_metrics(Checkpoint& c, const Metrics& m) {
  c.put("metric/sums", m.sums);
}

void get_metrics(Context& ctx, const Checkpoint& c, Metrics& m) {
  c.get(ctx, "metric/sums", m.sums);
}

using NamedOptimizers = std::vector<std::pair<std::string, Optimizer*>>;

// What every run's checkpoint holds: weights and buffers, optimizer states, the partial-epoch
// metrics, the position (epoch, step), the RNG offset and the configuration.
void put_common(Checkpoint& c, Context& ctx, Layer& net, const NamedOptimizers& opts,
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
std::pair<int, int64_t> get_common(Context& ctx, const Checkpoint& c, Layer& net,
                                   const NamedOptimizers& opts, Metrics& m, const RunOptions& run,
                                   const json& config, int epochs, int64_t steps) {
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
  for (size_t b = 0; b < indices.size(); b += size_t(batch))
    batches.emplace_back(indices.begin() + int64_t(b),
                         indices.begin() + int64_t(std::min(indices.size(), b + size_t(batch))));
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
  const Metrics::Values v = m.read();
  return {v.loss, v.acc, v.nonfinite, int64_t(batches.size())};
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

Tensor augmented(Context& ctx, const Tensor& images, const AugmentParams& p) {
  Tensor out = Tensor::empty(ctx, images.shape());
  ops::augment(ctx, images, out, p, ctx.seed(), ctx.reserve_rng(uint64_t(8 * images.dim(0))));
  return out;
}

json search_config_json(const SearchOptions& o, const Dataset& train) {
  return {
      {"dataset", o.data.dataset},
      {"subset", o.data.subset},
      {"train_images", train.n},
      {"channels", o.net.channels},
      {"cells", o.net.cells},
      {"steps", o.net.steps},
      {"mixed_op", mixed_op_type_name(o.net.mixed.method)},
      {"num_on", o.net.mixed.num_on},
      {"num_eval", o.net.mixed.num_eval},
      {"ma_lr", o.net.mixed.ma_lr},
      {"epochs", o.epochs},
      {"batch", o.batch},
      {"bilevel", o.bilevel},
      {"second_order", o.second_order},
      {"warmup_epochs", o.warmup_epochs},
      {"lr", o.lr},
      {"lr_min", o.lr_min},
      {"momentum", o.momentum},
      {"weight_decay", o.weight_decay},
      {"grad_clip", o.grad_clip},
      {"arch_lr", o.arch_lr},
      {"arch_betas", {o.arch_beta1, o.arch_beta2}},
      {"arch_weight_decay", o.arch_weight_decay},
      {"augment", o.augment},
      {"proxyless_update", o.proxyless_update == ProxylessUpdate::Exact ? "exact" : "reference"},
      {"seed", o.run.seed}};
}

}  // namespace

// ---------------------------------------------------------------- search
// The options every run shares, checked before anything is written.
void check_common(const char* program, const DataOptions& d, const RunOptions& r, float lr,
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

RunResult run_search(const SearchOptions& o) {
  check_common("darts_search", o.data, o.run, o.lr, o.momentum, o.weight_decay, o.grad_clip);
  CUDARTS_CONFIG_CHECK(std::isfinite(o.lr_min) && o.lr_min >= 0.0f && o.lr_min <= o.lr,
                       "darts_search: lr_min ", o.lr_min, " must be in [0, lr = ", o.lr, "]");
  CUDARTS_CONFIG_CHECK(std::isfinite(o.arch_lr) && o.arch_lr > 0.0f, "darts_search: arch_lr ",
                       o.arch_lr, " must be finite and > 0");
  CUDARTS_CONFIG_CHECK(
      o.arch_beta1 >= 0.0f && o.arch_beta1 < 1.0f && o.arch_beta2 >= 0.0f && o.arch_beta2 < 1.0f,
      "darts_search: arch betas (", o.arch_beta1, ", ", o.arch_beta2, ") must be in [0, 1)");
  CUDARTS_CONFIG_CHECK(std::isfinite(o.arch_weight_decay) && o.arch_weight_decay >= 0.0f,
                       "darts_search: arch_weight_decay ", o.arch_weight_decay,
                       " must be finite and >= 0");
  CUDARTS_CONFIG_CHECK(o.warmup_epochs >= 0 && o.warmup_epochs <= o.epochs,
                       "darts_search: warmup_epochs ", o.warmup_epochs,
                       " must be in [0, epochs = ", o.epochs, "]");
  CUDARTS_CONFIG_CHECK(o.net.channels >= 1 && o.net.steps >= 1 && o.net.multiplier >= 1 &&
                           o.net.multiplier <= o.net.steps,
                       "darts_search: channels ", o.net.channels, ", steps ", o.net.steps,
                       " and multiplier ", o.net.multiplier,
                       " must be positive (multiplier <= steps)");
  CUDARTS_CONFIG_CHECK(o.epochs >= 1 && o.batch >= 2, "darts_search: epochs ", o.epochs,
                       " must be >= 1 and batch size ", o.batch, " >= 2");
  CUDARTS_CONFIG_CHECK(
      o.net.cells >= 3, "darts_search: ", o.net.cells,
      " cells; a genotype needs a normal and a reduction cell, so at least 3 cells "
      "(reductions sit at 1/3 and 2/3 of the depth)");
  mixed_op_method(o.net.mixed.method);  // a ConfigError naming the methods if unknown
  CUDARTS_CONFIG_CHECK(!o.second_order || (o.bilevel && !o.run.cuda_graph),
                       "darts_search: --second-order needs bilevel updates (not --joint) and no "
                       "--cuda-graph (it reads a norm on the host every step)");
  Context ctx(pick_device(o.run.device), ContextOptions{o.run.seed});
  auto [train_all, test] = load_data(o.data);
  (void)test;
  const int64_t half = train_all.n / 2;
  const int64_t steps = half / o.batch;
  CUDARTS_CONFIG_CHECK(steps >= 1, "darts_search: ", train_all.n, " training images give ", half,
                       " per split, fewer than one batch of ", o.batch);

  SearchConfig cfg = o.net;
  cfg.in_channels = train_all.c;
  cfg.num_classes = train_all.num_classes;
  SearchModel model(ctx, std::make_unique<SearchNetwork>(ctx, "net", cfg));
  auto& net = static_cast<SearchNetwork&>(model.network());
  // What the method can do, asked of its MixedOps (all of one method) before anything is written.
  for (auto& [name, m] : model.mixed_ops()) {
    CUDARTS_CONFIG_CHECK(!o.run.cuda_graph || m->capturable(), "darts_search: --cuda-graph needs ",
                         "MixedOps whose step can be captured, not ", m->type(),
                         " (it chooses its ops on the host at every step, which a captured graph "
                         "cannot do; continuous MixedOps can)");
    CUDARTS_CONFIG_CHECK(!o.second_order || m->second_order(), "darts_search: --second-order ",
                         "needs MixedOps that run the same ops in every pass (continuous), not ",
                         m->type());
  }
  prepare_out_dir(o.run, "darts_search");
  SGD w_opt(ctx, model.operational_parameters(),
            SgdParams{o.lr, o.momentum, o.weight_decay, false});
  w_opt.set_grad_clip(o.grad_clip);
  AdamParams ap;
  ap.lr = o.arch_lr;
  ap.beta1 = o.arch_beta1;
  ap.beta2 = o.arch_beta2;
  ap.weight_decay = o.arch_weight_decay;
  Adam a_opt(ctx, model.architecture_parameters(), ap);
  model.attach_architecture_optimizer(a_opt, o.proxyless_update);
  const json config = search_config_json(o, train_all);

  int start_epoch = 0;
  int64_t start_step = 0;
  Metrics metrics(ctx);
  Checkpoint ck;
  const NamedOptimizers opts{{"opt_w/", &w_opt}, {"opt_a/", &a_opt}};
  if (o.run.resume && Checkpoint::load(o.run, ck)) {
    std::tie(start_epoch, start_step) =
        get_common(ctx, ck, net, opts, metrics, o.run, config, o.epochs, steps);
    {
      Tensor alphas = model.alphas().share();
      ck.get(ctx, "arch/alphas", alphas);
      model.alphas_changed();
    }
    for (auto& [name, m] : model.mixed_ops())  // the methods' own state ("<key>/<op path>")
      for (auto& [key, t] : m->state()) {
        auto it = ck.tensors.find(key + "/" + name);
        if (it == ck.tensors.end()) continue;
        Tensor v = Tensor::empty(ctx, Shape(it->second.shape));
        copy_from_host(ctx, it->second, v, key + "/" + name);
        m->set_state(key, std::move(v));
      }
    truncate_log(o.run, start_epoch);  // everything restored: now the files may change
    if (!o.run.quiet)
      std::printf("darts_search: resuming at epoch %d step %lld\n", start_epoch + 1,
                  (long long)start_step);
  } else if (o.run.resume && !o.run.quiet) {
    std::printf("darts_search: no checkpoint in '%s', starting fresh\n", o.run.out_dir.c_str());
  }

  auto make_checkpoint = [&](int epoch, int64_t step) {
    Checkpoint c;
    put_common(c, ctx, net, opts, metrics, epoch, step, config);
    c.put("arch/alphas", model.alphas());
    for (auto& [name, m] : model.mixed_ops())
      for (auto& [key, t] : m->state())
        if (t->defined()) c.put(key + "/" + name, *t);
    return c;
  };

  if (!o.run.quiet && start_epoch == 0 && start_step == 0)
    std::printf(
        "darts_search: %s, %lld + %lld images (train / validation split), %s, %s "
        "MixedOps, %d epochs on %s\n",
        train_all.name.c_str(), (long long)half, (long long)half,
        o.bilevel ? (o.second_order ? "bilevel second-order" : "bilevel") : "joint",
        mixed_op_type_name(cfg.mixed.method), o.epochs, ctx.device().str().c_str());
  const int64_t total_steps = int64_t(o.epochs) * steps;
  ProgressLine progress(o.run, total_steps, int64_t(start_epoch) * steps + start_step);
  const CosineSchedule schedule(o.lr, o.lr_min, o.epochs);
  AugmentParams aug;
  aug.pad = 4;
  aug.flip = true;
  int64_t steps_here = 0;
  RunResult result;
  result.epochs_done = start_epoch;
  StepRunner runner(ctx, o.run.cuda_graph);
  // Watched every step: the weight step's loss and gradient norm, the architecture step's
  // loss (first order) and gradient norm. Both optimizers skip a step with a non-finite norm.
  w_opt.set_skip_nonfinite(true);
  a_opt.set_skip_nonfinite(true);
  Tensor arch_loss = Tensor::zeros(ctx, Shape{1});
  RunGuard guard(ctx, o.run, "darts_search",
                 {"training loss", "weight gradient norm", "architecture-step loss",
                  "architecture gradient norm"},
                 steps, int64_t(start_epoch) * steps + start_step);

  for (int epoch = start_epoch; epoch < o.epochs; ++epoch) {
    runner.restart();
    const auto t0 = Clock::now();
    ctx.allocator().reset_peak();
    w_opt.set_lr(schedule.lr(epoch));
    const bool arch_on = epoch >= o.warmup_epochs;
    const int64_t bad_before = guard.bad_steps();
    std::vector<int64_t> order_t = shuffled_indices(half, o.run.seed, 2 * uint64_t(epoch));
    std::vector<int64_t> order_v = shuffled_indices(half, o.run.seed, 2 * uint64_t(epoch) + 1);
    for (auto& i : order_v) i += half;
    const int64_t first = epoch == start_epoch ? start_step : 0;
    BatchPrefetcher train_pf(ctx, train_all,
                             make_batches(order_t, first, steps - first, o.batch, 0));
    BatchPrefetcher valid_pf(ctx, train_all,
                             make_batches(order_v, first, steps - first, o.batch, steps));
    for (int64_t s = first; s < steps; ++s) {
      if (o.run.max_steps >= 0 && steps_here >= o.run.max_steps) return result;  // a "kill"
      Batch vb = valid_pf.next(ctx);
      Batch tb = train_pf.next(ctx);
      // in: validation images, labels, training images, labels
      runner.run({&vb.images, &vb.labels, &tb.images, &tb.labels}, [&](const std::vector<
                                                                       const Tensor*>& in) {
        Tensor images = o.augment ? augmented(ctx, *in[2], aug) : in[2]->share();
        // Each pass computes the gradients its optimizer steps with (the others
        // would be zeroed unread); --all-gradients computes every one.
        auto want = [&](Gradients g) {
          model.set_gradients(o.skip_unused_gradients ? g : Gradients::All);
        };
        if (o.bilevel && arch_on && o.second_order) {
          unrolled_architecture_gradient(ctx, model, w_opt, w_opt.lr(), images, *in[3], *in[0],
                                         *in[1], o.skip_unused_gradients);
          a_opt.step(ctx);
        } else if (o.bilevel && arch_on) {  // first order: on the validation batch
          want(Gradients::Architecture);
          a_opt.zero_grad(ctx);
          Tensor logits = model.forward(ctx, *in[0], Mode::Train);
          Xent x(ctx, logits, *in[1]);
          model.backward(ctx, x.dlogits);
          a_opt.step(ctx);
          ops::copy(ctx, x.loss, arch_loss);
        }
        want(o.bilevel || !arch_on ? Gradients::Operational : Gradients::All);
        w_opt.zero_grad(ctx);
        if (!o.bilevel) a_opt.zero_grad(ctx);
        Tensor logits = model.forward(ctx, images, Mode::Train);
        Xent x(ctx, logits, *in[3]);
        model.backward(ctx, x.dlogits);
        w_opt.step(ctx);
        if (!o.bilevel && arch_on) a_opt.step(ctx);
        runner.keep(x.loss, x.hits);
        guard.watch(ctx, {&x.loss, &w_opt.last_grad_norm(), &arch_loss, &a_opt.last_grad_norm()});
      });
      metrics.add(ctx, runner.loss, runner.hits, tb.labels.numel());
      ++steps_here;
      progress.update(epoch, o.epochs, s, steps, int64_t(epoch) * steps + s + 1, metrics, o.batch,
                      guard);
      if (o.run.checkpoint_every > 0 && (s + 1) % o.run.checkpoint_every == 0 && s + 1 < steps) {
        guard.check();
        make_checkpoint(epoch, s + 1).save(o.run, "darts_search");
      }
    }
    guard.check();
    const Metrics::Values train = metrics.read();
    const double train_loss = train.loss, train_acc = train.acc;
    const EvalResult valid =
        evaluate(ctx, train_all, range(half, 2 * half), o.batch, o.run.cuda_graph,
                 [&](const Tensor& x) { return model.forward(ctx, x, Mode::Eval); });
    valid.check("darts_search", "validation loss", epoch);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    auto [normal, reduce] = edge_probabilities(net);
    for (const auto* cell : {&normal, &reduce})
      for (const auto& edge : *cell)
        for (float p : edge)
          if (!std::isfinite(p))
            throw DivergenceError(
                detail::cat("darts_search: the architecture parameters are not finite after epoch ",
                            epoch + 1, "; stopped before deriving a genotype or writing anything"));
    const Genotype genotype = derive_genotype(normal, reduce, cfg.steps);
    json line = {{"epoch", epoch + 1},
                 {"train_loss", train_loss},
                 {"train_acc", train_acc},
                 {"valid_loss", valid.loss},
                 {"valid_acc", valid.acc},
                 {"seconds", seconds},
                 {"peak_bytes", ctx.allocator().stats().peak_bytes},
                 {"lr", schedule.lr(epoch)},
                 {"skipped_steps", guard.bad_steps() - bad_before},
                 {"alphas", {{"normal", normal}, {"reduce", reduce}}}};
    metrics = Metrics(ctx);
    const Checkpoint ck_end = make_checkpoint(epoch + 1, 0);
    ck_end.verify("darts_search");  // before the log line that belongs with it
    append_log(o.run, line);
    write_file_atomic(path_in(o.run, "summary.txt"), model.architecture_summary());
    write_file_atomic(path_in(o.run, "genotype.json"), genotype.to_json() + "\n");
    ck_end.save(o.run, "darts_search");
    result.epochs_done = epoch + 1;
    result.final_train_acc = train_acc;
    result.final_valid_acc = valid.acc;
    result.genotype_json = genotype.to_json();
    if (!o.run.quiet)
      std::printf(
          "epoch %d/%d: train loss %.4f acc %.4f, valid loss %.4f acc %.4f, %.1f s, peak "
          "%.1f MiB\n",
          epoch + 1, o.epochs, train_loss, train_acc, valid.loss, valid.acc, seconds,
          double(ctx.allocator().stats().peak_bytes) / (1 << 20));
    std::fflush(stdout);
  }
  if (result.genotype_json.empty() && fs::exists(path_in(o.run, "genotype.json"))) {
    std::ifstream g(path_in(o.run, "genotype.json"));
    std::stringstream s;
    s << g.rdbuf();
    result.genotype_json = s.str();
  }
  return result;
}

// ---------------------------------------------------------------- retraining
RunResult run_train(const TrainOptions& o) {
  check_common("darts_train", o.data, o.run, o.lr, o.momentum, o.weight_decay, o.grad_clip);
  CUDARTS_CONFIG_CHECK(o.drop_path >= 0.0f && o.drop_path < 1.0f, "darts_train: drop_path ",
                       o.drop_path, " must be in [0, 1)");
  CUDARTS_CONFIG_CHECK(o.cutout >= 0, "darts_train: cutout ", o.cutout, " must be >= 0");
  CUDARTS_CONFIG_CHECK(std::isfinite(o.auxiliary_weight) && o.auxiliary_weight >= 0.0f,
                       "darts_train: auxiliary_weight ", o.auxiliary_weight,
                       " must be finite and >= 0");
  CUDARTS_CONFIG_CHECK(o.net.channels >= 1 && o.net.cells >= 1, "darts_train: channels ",
                       o.net.channels, " and cells ", o.net.cells, " must be >= 1");
  CUDARTS_CONFIG_CHECK(o.epochs >= 1 && o.batch >= 2, "darts_train: epochs ", o.epochs,
                       " must be >= 1 and batch size ", o.batch, " >= 2");
  CUDARTS_CONFIG_CHECK(!o.genotype_path.empty(),
                       "darts_train: a genotype file (--genotype) is required");
  std::ifstream gf(o.genotype_path);
  CUDARTS_INPUT_CHECK(gf.good(), "darts_train: cannot open genotype '", o.genotype_path, "'");
  std::stringstream gs;
  gs << gf.rdbuf();
  const Genotype genotype = Genotype::from_json(gs.str());
  prepare_out_dir(o.run, "darts_train");
  Context ctx(pick_device(o.run.device), ContextOptions{o.run.seed});
  // The auxiliary head (DARTS) expects 8x8 maps at 2/3 depth: 32x32 inputs.
  auto [train, test] = load_data(o.data, o.net.auxiliary ? 32 : 0);
  const int64_t steps = train.n / o.batch;
  CUDARTS_CONFIG_CHECK(steps >= 1, "darts_train: ", train.n,
                       " training images, fewer than one batch of ", o.batch);
  EvalConfig cfg = o.net;
  cfg.in_channels = train.c;
  cfg.num_classes = train.num_classes;
  EvalNetwork net(ctx, "net", genotype, cfg);
  SGD opt(ctx, net.parameters(), SgdParams{o.lr, o.momentum, o.weight_decay, false});
  opt.set_grad_clip(o.grad_clip);
  const json config = {{"dataset", o.data.dataset},
                       {"subset", o.data.subset},
                       {"train_images", train.n},
                       {"genotype", json::parse(genotype.to_json())},
                       {"channels", cfg.channels},
                       {"cells", cfg.cells},
                       {"auxiliary", cfg.auxiliary},
                       {"auxiliary_weight", o.auxiliary_weight},
                       {"epochs", o.epochs},
                       {"batch", o.batch},
                       {"lr", o.lr},
                       {"momentum", o.momentum},
                       {"weight_decay", o.weight_decay},
                       {"grad_clip", o.grad_clip},
                       {"drop_path", o.drop_path},
                       {"cutout", o.cutout},
                       {"seed", o.run.seed}};

  int start_epoch = 0;
  int64_t start_step = 0;
  Metrics metrics(ctx);
  Checkpoint ck;
  const NamedOptimizers opts{{"opt/", &opt}};
  if (o.run.resume && Checkpoint::load(o.run, ck)) {
    std::tie(start_epoch, start_step) =
        get_common(ctx, ck, net, opts, metrics, o.run, config, o.epochs, steps);
    truncate_log(o.run, start_epoch);
  }
  // Written once the run is known to start or to continue a valid checkpoint.
  write_file_atomic(path_in(o.run, "genotype.json"), genotype.to_json() + "\n");
  auto make_checkpoint = [&](int epoch, int64_t step) {
    Checkpoint c;
    put_common(c, ctx, net, opts, metrics, epoch, step, config);
    return c;
  };
  if (!o.run.quiet && start_epoch == 0 && start_step == 0)
    std::printf("darts_train: %s (%lld images), %d cells of %lld channels, %d epochs on %s\n",
                train.name.c_str(), (long long)train.n, cfg.cells, (long long)cfg.channels,
                o.epochs, ctx.device().str().c_str());
  ProgressLine progress(o.run, int64_t(o.epochs) * steps,
                        int64_t(start_epoch) * steps + start_step);
  const CosineSchedule schedule(o.lr, 0.0f, o.epochs);
  AugmentParams aug;
  aug.pad = 4;
  aug.flip = true;
  aug.cutout = o.cutout;
  int64_t steps_here = 0;
  RunResult result;
  result.epochs_done = start_epoch;
  StepRunner runner(ctx, o.run.cuda_graph);
  opt.set_skip_nonfinite(true);
  RunGuard guard(ctx, o.run, "darts_train", {"training loss", "gradient norm"}, steps,
                 int64_t(start_epoch) * steps + start_step);
  for (int epoch = start_epoch; epoch < o.epochs; ++epoch) {
    runner.restart();
    const auto t0 = Clock::now();
    ctx.allocator().reset_peak();
    opt.set_lr(schedule.lr(epoch));
    const int64_t bad_before = guard.bad_steps();
    net.set_drop_path_prob(o.drop_path * float(epoch) / float(o.epochs));
    const std::vector<int64_t> order = shuffled_indices(train.n, o.run.seed, uint64_t(epoch));
    const int64_t first = epoch == start_epoch ? start_step : 0;
    BatchPrefetcher pf(ctx, train, make_batches(order, first, steps - first, o.batch, 0));
    for (int64_t s = first; s < steps; ++s) {
      if (o.run.max_steps >= 0 && steps_here >= o.run.max_steps) return result;
      Batch b = pf.next(ctx);
      runner.run({&b.images, &b.labels}, [&](const std::vector<const Tensor*>& in) {
        opt.zero_grad(ctx);
        Tensor images = augmented(ctx, *in[0], aug);
        auto [logits, aux] = net.forward_train(ctx, images);
        Xent x(ctx, logits, *in[1]);
        Tensor daux;
        if (aux.defined()) {
          Xent xa(ctx, aux, *in[1], o.auxiliary_weight);
          daux = std::move(xa.dlogits);
        }
        net.backward_train(ctx, x.dlogits, daux);
        opt.step(ctx);
        runner.keep(x.loss, x.hits);
        guard.watch(ctx, {&x.loss, &opt.last_grad_norm()});
      });
      metrics.add(ctx, runner.loss, runner.hits, b.labels.numel());
      ++steps_here;
      progress.update(epoch, o.epochs, s, steps, int64_t(epoch) * steps + s + 1, metrics, o.batch,
                      guard);
      if (o.run.checkpoint_every > 0 && (s + 1) % o.run.checkpoint_every == 0 && s + 1 < steps) {
        guard.check();
        make_checkpoint(epoch, s + 1).save(o.run, "darts_train");
      }
    }
    guard.check();
    const Metrics::Values train = metrics.read();
    const double train_loss = train.loss, train_acc = train.acc;
    const EvalResult eval =
        evaluate(ctx, test, range(0, test.n), o.batch, o.run.cuda_graph,
                 [&](const Tensor& x) { return net.forward(ctx, x, Mode::Eval); });
    eval.check("darts_train", "test loss", epoch);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    metrics = Metrics(ctx);
    const Checkpoint ck_end = make_checkpoint(epoch + 1, 0);
    ck_end.verify("darts_train");  // before the log line that belongs with it
    append_log(o.run, {{"epoch", epoch + 1},
                       {"train_loss", train_loss},
                       {"train_acc", train_acc},
                       {"valid_loss", eval.loss},
                       {"valid_acc", eval.acc},
                       {"seconds", seconds},
                       {"peak_bytes", ctx.allocator().stats().peak_bytes},
                       {"lr", schedule.lr(epoch)},
                       {"skipped_steps", guard.bad_steps() - bad_before}});
    ck_end.save(o.run, "darts_train");
    result.epochs_done = epoch + 1;
    result.final_train_acc = train_acc;
    result.final_valid_acc = eval.acc;
    if (!o.run.quiet)
      std::printf("epoch %d/%d: train loss %.4f acc %.4f, test loss %.4f acc %.4f, %.1f s\n",
                  epoch + 1, o.epochs, train_loss, train_acc, eval.loss, eval.acc, seconds);
    std::fflush(stdout);
  }
  return result;
}

}  // namespace cudarts::darts
