// The DARTS retraining run: the discrete network of a genotype (drop-path, auxiliary head,
// cutout) trained with SGD as a TrainingTask of the one training loop (training_loop.h), its
// step the retraining step; test accuracy per epoch.
#include <filesystem>

#include "cudarts/darts.h"
#include "cudarts/nb201.h"
#include "cudarts/onnx.h"
#include "training_loop.h"

namespace cudarts::darts {

namespace {

// One retraining step: augment (crop, flip, cutout), forward with the auxiliary head, the
// weighted auxiliary loss, backward, SGD.
class RetrainStep {
 public:
  RetrainStep(const TrainOptions& o, RetrainNetwork& net, SGD& opt) : o_(o), net_(net), opt_(opt) {
    aug_.pad = 4;
    aug_.flip = true;
    aug_.cutout = o.cutout;
  }
  void run(Context& ctx, const Tensor& images_in, const Tensor& labels, StepRunner& runner) {
    opt_.zero_grad(ctx);
    Tensor images = augmented(ctx, images_in, aug_);
    auto [logits, aux] = net_.forward_train(ctx, images);
    Xent x(ctx, logits, labels);
    Tensor daux;
    if (aux.defined()) {
      Xent xa(ctx, aux, labels, o_.auxiliary_weight);
      daux = std::move(xa.dlogits);
    }
    net_.backward_train(ctx, x.dlogits, daux);
    opt_.step(ctx);
    runner.keep(x.loss, x.hits);
  }

 private:
  const TrainOptions& o_;
  RetrainNetwork& net_;
  SGD& opt_;
  AugmentParams aug_;
};

class RetrainTask final : public TrainingTask {
 public:
  RetrainTask(Context& ctx, const TrainOptions& o, Dataset train, Dataset test, RetrainNetwork& net,
              json config, std::string genotype)
      : o_(o),
        train_(std::move(train)),
        test_(std::move(test)),
        net_(net),
        opt_(ctx, net.parameters(), SgdParams{o.lr, o.momentum, o.weight_decay, false}),
        schedule_(o.lr, 0.0f, o.epochs),
        config_(std::move(config)),
        genotype_(std::move(genotype)),
        step_(o, net, opt_) {
    opt_.set_grad_clip(o.grad_clip);
  }
  const char* program() const override { return "darts_train"; }
  const Dataset& data() const override { return train_; }
  int64_t steps_per_epoch() const override { return train_.n / o_.batch; }
  int batch() const override { return o_.batch; }
  std::vector<std::string> watched_names() const override {
    return {"training loss", "gradient norm"};
  }
  Layer& network() override { return net_; }
  NamedOptimizers optimizers() override { return {{"opt/", &opt_}}; }
  json config() const override { return config_; }
  void begin_run(Context& ctx, bool fresh) override {
    // Written once the run is known to start or to continue a valid checkpoint.
    if (is_lead(ctx)) write_file_atomic(path_in(o_.run, "genotype.json"), genotype_ + "\n");
    opt_.set_skip_nonfinite(true);
    if (fresh && !o_.run.quiet && is_lead(ctx))
      std::printf("darts_train: %s (%lld images), %d cells of %lld channels, %d epochs on %s\n",
                  train_.name.c_str(), (long long)train_.n, o_.net.cells,
                  (long long)o_.net.channels, o_.epochs, ctx.device().str().c_str());
  }
  void begin_epoch(Context&, int epoch) override {
    opt_.set_lr(schedule_.lr(epoch));
    net_.set_drop_path_prob(o_.drop_path * float(epoch) / float(o_.epochs));
  }
  float lr(int epoch) const override { return schedule_.lr(epoch); }
  std::vector<std::vector<std::vector<int64_t>>> batches(int epoch, int64_t first) override {
    const int64_t steps = steps_per_epoch();
    const std::vector<int64_t> order = shuffled_indices(train_.n, o_.run.seed, uint64_t(epoch));
    return {make_batches(order, first, steps - first, o_.batch, 0)};
  }
  std::vector<const Tensor*> step(Context& ctx, const std::vector<const Tensor*>& in, int,
                                  StepRunner& runner) override {
    step_.run(ctx, *in[0], *in[1], runner);
    return {&runner.loss, &opt_.last_grad_norm()};
  }
  EvalResult evaluate(Context& ctx, int) override {
    return darts::evaluate(ctx, test_, range(0, test_.n), o_.batch, o_.run.cuda_graph,
                           [&](const Tensor& x) { return net_.forward(ctx, x, Mode::Eval); });
  }
  const char* eval_name() const override { return "test loss"; }
  void end_epoch(Context&, int, json&) override {}

 private:
  const TrainOptions& o_;
  Dataset train_, test_;
  RetrainNetwork& net_;
  SGD opt_;
  CosineSchedule schedule_;
  json config_;
  std::string genotype_;
  RetrainStep step_;
};

}  // namespace

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
  CUDARTS_CONFIG_CHECK(o.space == "darts" || o.space == "nb201", "darts_train: space '", o.space,
                       "', expected darts or nb201");
  const bool nb = o.space == "nb201";
  CUDARTS_CONFIG_CHECK(!nb || (!o.net.auxiliary && o.drop_path == 0.0f), "darts_train: ",
                       "NAS-Bench-201 networks have no auxiliary head and train without ",
                       "drop-path (auxiliary ", o.net.auxiliary, ", drop_path ", o.drop_path, ")");
  std::ifstream gf(o.genotype_path);
  CUDARTS_INPUT_CHECK(gf.good(), "darts_train: cannot open genotype '", o.genotype_path, "'");
  std::stringstream gs;
  gs << gf.rdbuf();
  // The architecture, validated before anything is written: a DARTS genotype (JSON or the
  // reference's Python notation), or a NAS-Bench-201 string (bare or as {"nb201": "..."}).
  Genotype genotype;
  nb201::Arch arch;
  std::string genotype_json;
  try {
    if (nb) {
      std::string text = gs.str();
      const size_t first = text.find_first_not_of(" \t\r\n");
      if (first != std::string::npos && text[first] == '{') {
        json j;
        try {
          j = json::parse(text);
        } catch (const std::exception& e) {
          CUDARTS_INPUT_FAIL("not valid JSON: ", e.what());
        }
        CUDARTS_INPUT_CHECK(j.is_object() && j.contains("nb201") && j["nb201"].is_string(),
                            "expected {\"nb201\": \"|op~0|+...|\"}");
        text = j["nb201"].get<std::string>();
      }
      arch = nb201::Arch::parse(text);
      genotype_json = json{{"nb201", arch.str()}}.dump(2);
    } else {
      genotype = Genotype::parse(gs.str(), o.genotype_name);
      genotype_json = genotype.to_json();
    }
  } catch (const InputError& e) {
    throw InputError(detail::cat("darts_train: '", o.genotype_path, "': ", e.what()));
  }
  if (!o.export_onnx.empty()) {
    const auto parent = std::filesystem::absolute(o.export_onnx).parent_path();
    CUDARTS_CONFIG_CHECK(std::filesystem::is_directory(parent), "darts_train: export_onnx '",
                         o.export_onnx, "': folder '", parent.string(), "' does not exist");
  }
  prepare_out_dir(o.run, "darts_train");
  Context ctx(pick_device(o.run.device), ContextOptions{o.run.seed});
  join_job(ctx, "darts_train", o.batch);
  ctx.communicator().barrier();  // the folder is checked by every rank before rank 0 writes
  // The auxiliary head (DARTS) expects 8x8 maps at 2/3 depth: 32x32 inputs.
  auto [train, test] = load_data(o.data, o.net.auxiliary ? 32 : 0);
  const int64_t steps = train.n / o.batch;
  CUDARTS_CONFIG_CHECK(steps >= 1, "darts_train: ", train.n,
                       " training images, fewer than one batch of ", o.batch);
  EvalConfig cfg = o.net;
  cfg.in_channels = train.c;
  cfg.num_classes = train.num_classes;
  std::unique_ptr<RetrainNetwork> net;
  if (nb) {
    nb201::Config nc;
    nc.channels = cfg.channels;
    nc.cells_per_stage = cfg.cells;
    nc.in_channels = cfg.in_channels;
    nc.num_classes = cfg.num_classes;
    net = std::make_unique<nb201::Network>(ctx, "net", nc, &arch);
  } else {
    net = std::make_unique<EvalNetwork>(ctx, "net", genotype, cfg);
  }
  json config = {{"dataset", o.data.dataset},
                 {"subset", o.data.subset},
                 {"train_images", train.n},
                 {"genotype", json::parse(genotype_json)},
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
  if (nb) config["space"] = o.space;  // (absent for darts: earlier checkpoints still resume)

  const Shape input{1, train.c, train.h, train.w};
  RetrainTask task(ctx, o, std::move(train), std::move(test), *net, config, genotype_json);
  RunResult result = run_loop(ctx, o.run, o.epochs, task);
  if (!o.export_onnx.empty() && is_lead(ctx)) {
    onnx::ExportOptions eo;
    eo.doc = detail::cat("cudarts darts_train: ", o.space, " network, ", input[1], "x", input[2],
                         "x", input[3], " normalised images (", o.data.dataset, ")");
    eo.metadata["cudarts.architecture"] = genotype_json;
    eo.metadata["cudarts.input"] =
        detail::cat("[N, ", input[1], ", ", input[2], ", ", input[3], "]");
    onnx::export_model_file(*net, input, o.export_onnx, eo);
  }
  return result;
}

}  // namespace cudarts::darts
