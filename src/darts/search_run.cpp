// The DARTS search run: the options checked, the network and the two optimizers set up, and a
// TrainingTask for the one training loop (training_loop.h) whose step is one of the search
// step algorithms: first-order bilevel (DARTS's default), second-order bilevel (the unrolled
// architecture gradient) or joint (one batch for weights and alphas, the seed's style).
#include <memory>
#include <numeric>

#include "cudarts/darts.h"
#include "cudarts/hardware.h"
#include "cudarts/nb201.h"
#include "cudarts/search_model.h"
#include "training_loop.h"

namespace cudarts::darts {

namespace {

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
      {"tau", {o.net.mixed.tau_max, o.net.mixed.tau_min}},
      {"partial_channels", o.net.partial_channels},
      {"edge_normalization", o.net.edge_normalization},
      {"fixed_reduction", o.net.fixed_reduction},
      {"space", o.space},
      {"cost",
       {{"weight", o.cost.weight},
        {"budget", o.cost.budget},
        {"metric", o.cost.metric},
        {"table", o.cost.table}}},
      {"regularizers",
       {{"beta_decay", o.regularizers.beta_decay},
        {"auxiliary_skip", o.regularizers.auxiliary_skip},
        {"auxiliary_skip_decay", o.regularizers.auxiliary_skip_decay},
        {"max_skips", o.regularizers.max_skips}}},
      {"hessian",
       {{"every", o.hessian.every},
        {"batches", o.hessian.batches},
        {"stop_factor", o.hessian.stop_factor}}},
      {"seed", o.run.seed}};
}

// One search iteration, given the validation batch (xv, yv) and the (augmented) training batch
// (xt, yt). Each pass computes only the gradients its step uses (SearchModel::set_gradients),
// unless the options ask for all of them. The steps keep the training loss and hits
// (runner.keep) and the architecture pass's loss in arch_loss (0 when there is none).
class SearchStep {
 public:
  SearchStep(const SearchOptions& o, SearchModel& model, SGD& w_opt, Adam& a_opt, Tensor& arch_loss)
      : o_(o), model_(model), w_opt_(w_opt), a_opt_(a_opt), arch_loss_(arch_loss) {}
  virtual ~SearchStep() = default;
  virtual const char* name() const = 0;
  virtual void run(Context& ctx, const Tensor& xv, const Tensor& yv, const Tensor& xt,
                   const Tensor& yt, bool arch_on, StepRunner& runner) = 0;

 protected:
  void want(Gradients g) { model_.set_gradients(o_.skip_unused_gradients ? g : Gradients::All); }
  // The weight pass on the training batch; with `with_alphas` (joint) the alphas' gradients
  // are computed (and zeroed first) too, and their optimizer steps after the weights'.
  void weight_pass(Context& ctx, const Tensor& xt, const Tensor& yt, bool with_alphas,
                   StepRunner& runner) {
    want(with_alphas ? Gradients::All : Gradients::Operational);
    w_opt_.zero_grad(ctx);
    if (joint()) a_opt_.zero_grad(ctx);
    Tensor logits = model_.forward(ctx, xt, Mode::Train);
    Xent x(ctx, logits, yt);
    model_.backward(ctx, x.dlogits);
    w_opt_.step(ctx);
    if (with_alphas) {
      regularize(ctx);
      a_opt_.step(ctx);
    }
    runner.keep(x.loss, x.hits);
  }
  virtual bool joint() const { return false; }
  // Before every architecture optimizer step: the regularisers' gradients on the alphas.
  void regularize(Context& ctx) {
    add_beta_decay_gradient(ctx, model_.alpha_parameters(), beta_decay_);
    if (cost_) cost_->add_gradient(ctx, cost_weight_);
  }

 public:
  void set_beta_decay(float coefficient) { beta_decay_ = coefficient; }
  void set_cost(ExpectedCost* cost, float weight) { cost_ = cost, cost_weight_ = weight; }

 protected:
  float beta_decay_ = 0.0f;
  ExpectedCost* cost_ = nullptr;
  float cost_weight_ = 0.0f;

  const SearchOptions& o_;
  SearchModel& model_;
  SGD& w_opt_;
  Adam& a_opt_;
  Tensor& arch_loss_;
};

// DARTS first order: the alpha step on the validation batch, then the weight step.
class FirstOrderBilevelStep final : public SearchStep {
 public:
  using SearchStep::SearchStep;
  const char* name() const override { return "bilevel"; }
  void run(Context& ctx, const Tensor& xv, const Tensor& yv, const Tensor& xt, const Tensor& yt,
           bool arch_on, StepRunner& runner) override {
    if (arch_on) {
      want(Gradients::Architecture);
      a_opt_.zero_grad(ctx);
      Tensor logits = model_.forward(ctx, xv, Mode::Train);
      Xent x(ctx, logits, yv);
      model_.backward(ctx, x.dlogits);
      regularize(ctx);
      a_opt_.step(ctx);
      ops::copy(ctx, x.loss, arch_loss_);
    }
    weight_pass(ctx, xt, yt, false, runner);
  }
};

// DARTS second order: the architecture gradient through one virtual weight step.
class SecondOrderBilevelStep final : public SearchStep {
 public:
  using SearchStep::SearchStep;
  const char* name() const override { return "bilevel second-order"; }
  void run(Context& ctx, const Tensor& xv, const Tensor& yv, const Tensor& xt, const Tensor& yt,
           bool arch_on, StepRunner& runner) override {
    if (arch_on) {
      unrolled_architecture_gradient(ctx, model_, w_opt_, w_opt_.lr(), xt, yt, xv, yv,
                                     o_.skip_unused_gradients);
      regularize(ctx);
      a_opt_.step(ctx);
    }
    weight_pass(ctx, xt, yt, false, runner);
  }
};

// The seed's style: one batch, one backward for weights and alphas (alphas frozen while
// warming up).
class JointStep final : public SearchStep {
 public:
  using SearchStep::SearchStep;
  const char* name() const override { return "joint"; }
  void run(Context& ctx, const Tensor&, const Tensor&, const Tensor& xt, const Tensor& yt,
           bool arch_on, StepRunner& runner) override {
    weight_pass(ctx, xt, yt, arch_on, runner);
  }
  bool joint() const override { return true; }
};

// What the search task needs of its search space (docs/DESIGN.md section 10): the alphas and
// monitors an epoch logs, the genotype derived from them, the files beside genotype.json.
class SpaceView {
 public:
  virtual ~SpaceView() = default;
  virtual Layer& network() = 0;
  virtual void begin_epoch(float auxiliary_skip_weight) = 0;
  // Adds alphas and monitors to line; returns the genotype (JSON) derived with the skip cap.
  // DivergenceError on non-finite alphas, before anything is written.
  virtual std::string end_epoch(json& line, int epoch, int max_skips) = 0;
  virtual void write_files(const RunOptions& run, const std::string& genotype_json) = 0;

 protected:
  static void check_finite(const std::vector<std::vector<float>>& p, int epoch) {
    for (const auto& edge : p)
      for (float v : edge)
        if (!std::isfinite(v))
          throw DivergenceError(
              detail::cat("darts_search: the architecture parameters are not finite after epoch ",
                          epoch + 1, "; stopped before deriving a genotype or writing anything"));
  }
};

// The DARTS space: normal and reduction cells, edge normalisation (PC-DARTS), a fixed
// reduction cell (GDAS-FRC), the auxiliary skips (DARTS-).
class DartsView final : public SpaceView {
 public:
  DartsView(SearchNetwork& net, int steps) : net_(net), steps_(steps) {}
  Layer& network() override { return net_; }
  void begin_epoch(float w) override {
    if (net_.config().auxiliary_skip) net_.set_auxiliary_skip_weight(w);
  }
  std::string end_epoch(json& line, int epoch, int max_skips) override {
    auto [normal, reduce] = edge_probabilities(net_);
    check_finite(normal, epoch);
    check_finite(reduce, epoch);
    line["alphas"] = {{"normal", normal}, {"reduce", reduce}};
    // Collapse monitors (docs/DESIGN.md section 9): alpha mass on parameter-free ops, the
    // skips of the genotype derived without a cap.
    json free = {{"normal", parameter_free_share(normal)}};
    if (!reduce.empty()) free["reduce"] = parameter_free_share(reduce);
    line["parameter_free"] = free;
    if (net_.config().edge_normalization) {  // PC-DARTS: the genotype from alpha times beta
      const std::vector<float> wn = net_.edge_weights(false), wr = net_.edge_weights(true);
      line["edge_weights"] = {{"normal", wn}, {"reduce", wr}};
      for (size_t e = 0; e < normal.size(); ++e) {
        for (float& p : normal[e]) p *= wn[e];
        if (!reduce.empty())  // empty with fixed reduction cells
          for (float& p : reduce[e]) p *= wr[e];
      }
    }
    const Genotype uncapped = derive_genotype(normal, reduce, steps_);
    json skips = {{"normal", count_skips(uncapped.normal)}};
    if (!reduce.empty()) skips["reduce"] = count_skips(uncapped.reduce);
    line["skips"] = skips;
    return max_skips < 0 ? uncapped.to_json()
                         : derive_genotype(normal, reduce, steps_, max_skips).to_json();
  }
  void write_files(const RunOptions& run, const std::string& genotype_json) override {
    // The same in the DARTS reference's notation, for use with its code (not for a fixed
    // reduction cell, which that notation cannot express).
    const Genotype g = Genotype::from_json(genotype_json);
    if (g.reduce_cell.empty())
      write_file_atomic(path_in(run, "genotype.py"), "genotype = " + g.to_python() + "\n");
  }

 private:
  SearchNetwork& net_;
  int steps_;
};

// NAS-Bench-201: one cell kind, the architecture as the benchmark's string.
class Nb201View final : public SpaceView {
 public:
  explicit Nb201View(nb201::Network& net) : net_(net) {}
  Layer& network() override { return net_; }
  void begin_epoch(float) override {}
  std::string end_epoch(json& line, int epoch, int max_skips) override {
    const std::vector<std::vector<float>> p = net_.probabilities();
    check_finite(p, epoch);
    line["alphas"] = {{"cell", p}};
    line["parameter_free"] = {{"cell", parameter_free_share(p, nb201::primitives())}};
    const nb201::Arch uncapped = nb201::derive(p);
    line["skips"] = {
        {"cell", std::count(uncapped.ops.begin(), uncapped.ops.end(), "skip_connect")}};
    return json{{"nb201", nb201::derive(p, max_skips).str()}}.dump(2);
  }
  void write_files(const RunOptions& run, const std::string& genotype_json) override {
    write_file_atomic(path_in(run, "arch.txt"),
                      json::parse(genotype_json).at("nb201").get<std::string>() + "\n");
  }

 private:
  nb201::Network& net_;
};

std::unique_ptr<SpaceView> make_view(const SearchOptions& o, Layer& net) {
  if (o.space == "nb201") return std::make_unique<Nb201View>(static_cast<nb201::Network&>(net));
  return std::make_unique<DartsView>(static_cast<SearchNetwork&>(net), o.net.steps);
}

class SearchTask final : public TrainingTask {
 public:
  SearchTask(Context& ctx, const SearchOptions& o, Dataset train, SearchModel& model)
      : o_(o),
        train_(std::move(train)),
        half_(train_.n / 2),
        model_(model),
        view_(make_view(o, model.network())),
        w_opt_(ctx, model.operational_parameters(),
               SgdParams{o.lr, o.momentum, o.weight_decay, false}),
        a_opt_(ctx, model.architecture_parameters(),
               [&] {
                 AdamParams ap;
                 ap.lr = o.arch_lr;
                 ap.beta1 = o.arch_beta1;
                 ap.beta2 = o.arch_beta2;
                 ap.weight_decay = o.arch_weight_decay;
                 return ap;
               }()),
        schedule_(o.lr, o.lr_min, o.epochs),
        config_(search_config_json(o, train_)) {
    w_opt_.set_grad_clip(o.grad_clip);
    model.attach_architecture_optimizer(a_opt_, o.proxyless_update);
    if (!o.bilevel)
      step_ = std::make_unique<JointStep>(o, model, w_opt_, a_opt_, arch_loss_);
    else if (o.second_order)
      step_ = std::make_unique<SecondOrderBilevelStep>(o, model, w_opt_, a_opt_, arch_loss_);
    else
      step_ = std::make_unique<FirstOrderBilevelStep>(o, model, w_opt_, a_opt_, arch_loss_);
    aug_.pad = 4;
    aug_.flip = true;
  }

  const char* program() const override { return "darts_search"; }
  const Dataset& data() const override { return train_; }
  int64_t steps_per_epoch() const override { return half_ / o_.batch; }
  int batch() const override { return o_.batch; }
  std::vector<std::string> watched_names() const override {
    return {"training loss", "weight gradient norm", "architecture-step loss",
            "architecture gradient norm"};
  }
  Layer& network() override { return view_->network(); }
  NamedOptimizers optimizers() override { return {{"opt_w/", &w_opt_}, {"opt_a/", &a_opt_}}; }
  json config() const override { return config_; }

  void begin_run(Context& ctx, bool fresh) override {
    // Both optimizers skip a step with a non-finite gradient norm (the guard decides whether
    // the run stops).
    w_opt_.set_skip_nonfinite(true);
    a_opt_.set_skip_nonfinite(true);
    arch_loss_ = Tensor::zeros(ctx, Shape{1});
    if (!hessian_state_.defined()) hessian_state_ = Tensor::zeros(ctx, Shape{3});
    if (fresh && !o_.run.quiet && is_lead(ctx))
      std::printf(
          "darts_search: %s, %lld + %lld images (train / validation split), %s, %s "
          "MixedOps, %d epochs on %s%s\n",
          train_.name.c_str(), (long long)half_, (long long)half_, step_->name(),
          mixed_op_type_name(o_.net.mixed.method), o_.epochs, ctx.device().str().c_str(),
          ctx.communicator().size() > 1 || launched_by_mpi()
              ? detail::cat(" x ", ctx.communicator().size(), " ranks (",
                            ctx.communicator().backend(), ")")
                    .c_str()
              : "");
  }
  void begin_epoch(Context&, int epoch) override {
    w_opt_.set_lr(schedule_.lr(epoch));
    arch_on_ = epoch >= o_.warmup_epochs;
    model_.set_search_progress(o_.epochs > 1 ? double(epoch) / double(o_.epochs - 1) : 1.0);
    const RegularizerOptions& r = o_.regularizers;
    view_->begin_epoch(auxiliary_skip_weight(r, epoch, o_.epochs));
    step_->set_beta_decay(beta_decay_coefficient(r, epoch, o_.epochs));
    if (cost_) {  // with a budget, only an expected cost above it is penalised
      const bool over = o_.cost.budget <= 0.0f || cost_->value() > double(o_.cost.budget);
      step_->set_cost(cost_.get(), over ? o_.cost.weight : 0.0f);
    }
  }
  // Hardware-aware search: the expected cost of the table, added to every architecture step.
  void enable_cost(Context& ctx, CostTable table) {
    table_ = std::move(table);
    cost_ = std::make_unique<ExpectedCost>(
        ctx, model_, static_cast<SearchNetwork&>(view_->network()), table_, o_.cost.metric);
  }
  float lr(int epoch) const override { return schedule_.lr(epoch); }
  // Each epoch its own shuffles of the two halves; the validation batches cycle (the split
  // holds as many batches as the training half).
  std::vector<std::vector<std::vector<int64_t>>> batches(int epoch, int64_t first) override {
    const int64_t steps = steps_per_epoch();
    std::vector<int64_t> order_t = shuffled_indices(half_, o_.run.seed, 2 * uint64_t(epoch));
    std::vector<int64_t> order_v = shuffled_indices(half_, o_.run.seed, 2 * uint64_t(epoch) + 1);
    for (auto& i : order_v) i += half_;
    return {make_batches(order_v, first, steps - first, o_.batch, steps),
            make_batches(order_t, first, steps - first, o_.batch, 0)};
  }
  // in: validation images, labels, training images, labels.
  std::vector<const Tensor*> step(Context& ctx, const std::vector<const Tensor*>& in, int,
                                  StepRunner& runner) override {
    Tensor images = o_.augment ? augmented(ctx, *in[2], aug_) : in[2]->share();
    step_->run(ctx, *in[0], *in[1], images, *in[3], arch_on_, runner);
    return {&runner.loss, &w_opt_.last_grad_norm(), &arch_loss_, &a_opt_.last_grad_norm()};
  }
  EvalResult evaluate(Context& ctx, int) override {
    return darts::evaluate(ctx, train_, range(half_, 2 * half_), o_.batch, o_.run.cuda_graph,
                           [&](const Tensor& x) { return model_.forward(ctx, x, Mode::Eval); });
  }
  const char* eval_name() const override { return "validation loss"; }
  void end_epoch(Context& ctx, int epoch, json& line) override {
    // The space's alphas, monitors and derived genotype (throws DivergenceError on non-finite
    // alphas, before anything is written).
    genotype_ = view_->end_epoch(line, epoch, o_.regularizers.max_skips);
    hessian_monitor(ctx, epoch, line);
    const RegularizerOptions& r = o_.regularizers;
    if (r.beta_decay > 0.0f) {
      std::vector<std::vector<float>> alphas;
      for (Parameter* a : model_.alpha_parameters()) alphas.push_back(a->value.to_vector());
      line["beta_decay"] = {{"coefficient", beta_decay_coefficient(r, epoch, o_.epochs)},
                            {"value", beta_decay_value(alphas)}};
    }
    if (r.auxiliary_skip > 0.0f)
      line["auxiliary_skip_weight"] = auxiliary_skip_weight(r, epoch, o_.epochs);
    if (cost_) {
      line["expected_cost"] = cost_->value();
      line["derived_cost"] = cost_->genotype_cost(Genotype::from_json(genotype_));
    }
  }
  void write_epoch_files(int) override {
    write_file_atomic(path_in(o_.run, "summary.txt"), model_.architecture_summary());
    write_file_atomic(path_in(o_.run, "genotype.json"), genotype_ + "\n");
    view_->write_files(o_.run, genotype_);
  }
  void put(Checkpoint& c) override {
    if (o_.hessian.every > 0) c.put("monitor/hessian", hessian_state_);  // the early stop's
    c.put("arch/alphas", model_.alphas());
    for (auto& [name, p] : model_.other_architecture_parameters()) c.put("arch/" + name, p->value);
    for (auto& [name, m] : model_.mixed_ops())  // the methods' own state ("<key>/<op path>")
      for (auto& [key, t] : m->state())
        if (t->defined()) c.put(key + "/" + name, *t);
  }
  void get(Context& ctx, const Checkpoint& c) override {
    if (o_.hessian.every > 0) {
      hessian_state_ = Tensor::zeros(ctx, Shape{3});
      c.get(ctx, "monitor/hessian", hessian_state_);
      const std::vector<float> s = hessian_state_.to_vector();
      CUDARTS_INPUT_CHECK(s[1] >= 0.0f && s[1] < 1e7f && (s[2] == 0.0f || s[2] == 1.0f),
                          "checkpoint: tensor 'monitor/hessian' holds [", s[0], ", ", s[1], ", ",
                          s[2], "], expected [minimum, count, stopped 0 or 1]");
      hessian_min_ = s[0];
      hessian_count_ = int(s[1]);
      stopped_ = s[2] == 1.0f;
    }
    Tensor alphas = model_.alphas().share();
    c.get(ctx, "arch/alphas", alphas);
    model_.alphas_changed();
    for (auto& [name, p] : model_.other_architecture_parameters())
      c.get(ctx, "arch/" + name, p->value);
    for (auto& [name, m] : model_.mixed_ops())
      for (auto& [key, t] : m->state()) {
        auto it = c.tensors.find(key + "/" + name);
        if (it == c.tensors.end()) continue;
        Tensor v = Tensor::empty(ctx, Shape(it->second.shape));
        copy_from_host(ctx, it->second, v, key + "/" + name);
        m->set_state(key, std::move(v));
      }
  }
  const std::string& genotype() const { return genotype_; }
  bool stopped() const override { return stopped_; }

 private:
  const SearchOptions& o_;
  Dataset train_;
  int64_t half_;
  SearchModel& model_;
  std::unique_ptr<SpaceView> view_;
  CostTable table_;
  std::unique_ptr<ExpectedCost> cost_;
  SGD w_opt_;
  Adam a_opt_;
  CosineSchedule schedule_;
  json config_;
  Tensor arch_loss_;
  std::unique_ptr<SearchStep> step_;
  AugmentParams aug_;
  bool arch_on_ = true;
  std::string genotype_;
  double hessian_min_ = 0.0;  // the smallest |eigenvalue| logged so far (R-DARTS early stop)
  int hessian_count_ = 0;
  bool stopped_ = false;
  Tensor hessian_state_;  // [minimum, count, stopped] for the checkpoint

  // R-DARTS: the alpha-Hessian's dominant eigenvalue on the first validation batches (fixed,
  // unaugmented), every o_.hessian.every epochs; the early stop when it has risen past
  // stop_factor times its minimum.
  void hessian_monitor(Context& ctx, int epoch, json& line) {
    const auto& h = o_.hessian;
    if (h.every == 0 || (epoch + 1) % h.every != 0) return;
    std::vector<std::pair<Tensor, Tensor>> vb;
    for (int b = 0; b < h.batches; ++b) {
      std::vector<int64_t> idx(size_t(o_.batch));
      std::iota(idx.begin(), idx.end(), half_ + int64_t(b) * o_.batch);
      Batch batch = make_batch(ctx, train_, idx);
      vb.emplace_back(std::move(batch.images), std::move(batch.labels));
    }
    const double lambda = alpha_hessian_eigenvalue(ctx, model_, vb);
    line["hessian_eigenvalue"] = lambda;
    // The rule compares magnitudes (the dominant eigenvalue is the largest in magnitude; it
    // is positive near a minimum). The smallest magnitude so far is kept at float precision,
    // as the checkpoint holds it, so that a resumed run decides alike.
    const double size = double(float(std::abs(lambda)));
    if (hessian_count_ == 0 || size < hessian_min_) hessian_min_ = size;
    ++hessian_count_;
    if (h.stop_factor >= 1.0f && hessian_min_ > 0.0 &&
        size > double(h.stop_factor) * hessian_min_) {
      stopped_ = true;
      line["early_stop"] =
          detail::cat("the alpha-Hessian eigenvalue ", lambda, " exceeds ", h.stop_factor,
                      " x its smallest magnitude so far, ", hessian_min_);
    }
    Tensor s = Tensor::from_vector(
        ctx, Shape{3}, {float(hessian_min_), float(hessian_count_), stopped_ ? 1.0f : 0.0f});
    ops::copy(ctx, s, hessian_state_);
  }
};

}  // namespace

CostTable measure_search_costs(const SearchOptions& o) {
  CUDARTS_CONFIG_CHECK(o.space == "darts", "darts_search: cost tables are built for the DARTS ",
                       "space (not ", o.space, ")");
  Context ctx(pick_device(o.run.device), ContextOptions{o.run.seed});
  auto [train, test] = load_data(o.data);
  (void)test;
  SearchConfig cfg = o.net;
  cfg.in_channels = train.c;
  cfg.num_classes = train.num_classes;
  SearchNetwork net(ctx, "net", cfg);
  return measure_cost_table(ctx, net, Shape{o.batch, train.c, train.h, train.w});
}

RunResult run_search(const SearchOptions& o) {
  check_common("darts_search", o.data, o.run, o.lr, o.momentum, o.weight_decay, o.grad_clip);
  check_regularizers(o.regularizers, "darts_search");
  CUDARTS_CONFIG_CHECK(
      o.hessian.every >= 0 && o.hessian.batches >= 1 && std::isfinite(o.hessian.stop_factor) &&
          (o.hessian.stop_factor == 0.0f || o.hessian.stop_factor >= 1.0f),
      "darts_search: hessian every ", o.hessian.every, " must be >= 0, batches ", o.hessian.batches,
      " >= 1 and stop_factor ", o.hessian.stop_factor, " 0 (off) or >= 1");
  CUDARTS_CONFIG_CHECK(o.hessian.stop_factor == 0.0f || o.hessian.every > 0,
                       "darts_search: an early stop on the Hessian (stop_factor ",
                       o.hessian.stop_factor, ") needs it computed (hessian every > 0)");
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
  CUDARTS_CONFIG_CHECK(o.space == "darts" || o.space == "nb201", "darts_search: space '", o.space,
                       "', expected darts or nb201");
  CUDARTS_CONFIG_CHECK(std::isfinite(o.cost.weight) && o.cost.weight >= 0.0f &&
                           std::isfinite(o.cost.budget) && o.cost.budget >= 0.0f &&
                           (o.cost.metric == "latency" || o.cost.metric == "train_latency" ||
                            o.cost.metric == "flops" || o.cost.metric == "params"),
                       "darts_search: cost weight ", o.cost.weight, " and budget ", o.cost.budget,
                       " must be finite and >= 0, metric '", o.cost.metric,
                       "' latency, flops or params");
  CUDARTS_CONFIG_CHECK(o.cost.weight == 0.0f || o.space == "darts", "darts_search: the cost ",
                       "penalty is built for the DARTS space (not ", o.space, ")");
  if (o.space == "darts") {
    CUDARTS_CONFIG_CHECK(
        o.net.cells >= 3, "darts_search: ", o.net.cells,
        " cells; a genotype needs a normal and a reduction cell, so at least 3 cells "
        "(reductions sit at 1/3 and 2/3 of the depth)");
  } else {
    CUDARTS_CONFIG_CHECK(o.net.cells >= 1, "darts_search: ", o.net.cells,
                         " cells per stage (NAS-Bench-201), expected >= 1");
    CUDARTS_CONFIG_CHECK(o.net.partial_channels == 1 && !o.net.edge_normalization &&
                             !o.net.fixed_reduction && o.regularizers.auxiliary_skip == 0.0f,
                         "darts_search: the NAS-Bench-201 space has no partial channels, edge "
                         "normalisation, fixed reduction cell or auxiliary skip (DARTS space "
                         "options)");
  }
  mixed_op_method(o.net.mixed.method);  // a ConfigError naming the methods if unknown
  CUDARTS_CONFIG_CHECK(!o.second_order || (o.bilevel && !o.run.cuda_graph),
                       "darts_search: --second-order needs bilevel updates (not --joint) and no "
                       "--cuda-graph (it reads a norm on the host every step)");
  Context ctx(pick_device(o.run.device), ContextOptions{o.run.seed});
  join_job(ctx, "darts_search", o.batch);
  const int ranks = ctx.communicator().size();
  CUDARTS_CONFIG_CHECK(ranks == 1 || o.hessian.every == 0,
                       "darts_search: --hessian-every runs on one process only (this job has ",
                       ranks, " ranks)");
  CUDARTS_CONFIG_CHECK(ranks == 1 || o.cost.weight == 0.0f || !o.cost.table.empty() ||
                           (o.run.resume && fs::exists(path_in(o.run, "cost_table.json"))),
                       "darts_search: a cost penalty on ", ranks,
                       " ranks needs a cost table "
                       "(measure it on one process with --write-cost-table, pass --cost-table)");
  auto [train_all, test] = load_data(o.data);
  (void)test;
  const int64_t half = train_all.n / 2;
  const int64_t steps = half / o.batch;
  CUDARTS_CONFIG_CHECK(steps >= 1, "darts_search: ", train_all.n, " training images give ", half,
                       " per split, fewer than one batch of ", o.batch);

  SearchConfig cfg = o.net;
  cfg.auxiliary_skip = o.regularizers.auxiliary_skip > 0.0f;
  cfg.in_channels = train_all.c;
  cfg.num_classes = train_all.num_classes;
  std::unique_ptr<Layer> net;
  if (o.space == "nb201") {
    nb201::Config nc;
    nc.channels = o.net.channels;
    nc.cells_per_stage = o.net.cells;
    nc.in_channels = train_all.c;
    nc.num_classes = train_all.num_classes;
    nc.mixed = o.net.mixed;
    net = std::make_unique<nb201::Network>(ctx, "net", nc);
  } else {
    net = std::make_unique<SearchNetwork>(ctx, "net", cfg);
  }
  SearchModel model(ctx, std::move(net));
  // What the method can do, asked of its MixedOps (all of one method) before anything is written.
  for (auto& [name, m] : model.mixed_ops()) {
    CUDARTS_CONFIG_CHECK(!o.run.cuda_graph || m->capturable(), "darts_search: --cuda-graph needs ",
                         "MixedOps whose step can be captured, not ", m->type(),
                         " (it chooses its ops on the host at every step, which a captured graph "
                         "cannot do; continuous MixedOps can)");
    CUDARTS_CONFIG_CHECK(!o.second_order || m->second_order(), "darts_search: --second-order ",
                         "needs MixedOps that run the same ops in every pass (continuous), not ",
                         m->type());
    CUDARTS_CONFIG_CHECK(o.hessian.every == 0 || m->second_order(),
                         "darts_search: --hessian-every needs MixedOps whose loss is a function "
                         "of alpha (continuous), not ",
                         m->type());
  }
  // The cost table: given, or the run's own (a resume reads it back), or measured now, before
  // the run folder is touched.
  CostTable table;
  bool write_table = false;
  if (o.cost.weight > 0.0f) {
    auto read = [](const std::string& path) {
      std::ifstream f(path);
      CUDARTS_INPUT_CHECK(f.good(), "darts_search: cannot open cost table '", path, "'");
      std::stringstream s;
      s << f.rdbuf();
      try {
        return CostTable::from_json(s.str());
      } catch (const InputError& e) {
        throw InputError(detail::cat("darts_search: '", path, "': ", e.what()));
      }
    };
    const std::string own = path_in(o.run, "cost_table.json");
    if (!o.cost.table.empty()) {
      table = read(o.cost.table);
    } else if (o.run.resume && fs::exists(own)) {
      table = read(own);
    } else {
      if (!o.run.quiet)
        std::printf("darts_search: measuring the cost table on %s\n", ctx.device().str().c_str());
      table = measure_cost_table(ctx, static_cast<SearchNetwork&>(model.network()),
                                 Shape{o.batch, train_all.c, train_all.h, train_all.w});
      write_table = true;
    }
  }
  prepare_out_dir(o.run, "darts_search");
  if (write_table) write_file_atomic(path_in(o.run, "cost_table.json"), table.to_json() + "\n");
  ctx.communicator().barrier();  // the folder is checked by every rank before rank 0 writes
  SearchTask task(ctx, o, std::move(train_all), model);
  if (o.cost.weight > 0.0f) task.enable_cost(ctx, std::move(table));
  RunResult result = run_loop(ctx, o.run, o.epochs, task);
  result.genotype_json = task.genotype();
  if (result.genotype_json.empty() && fs::exists(path_in(o.run, "genotype.json"))) {
    std::ifstream g(path_in(o.run, "genotype.json"));
    std::stringstream text;
    text << g.rdbuf();
    result.genotype_json = text.str();
  }
  return result;
}

}  // namespace cudarts::darts
