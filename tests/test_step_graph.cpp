// StepGraph: capture a training step once and replay it. The reference is the same training
// run stepped eagerly: N replays must give what N eager steps give (bit for bit on the CPU
// backend, whose replay has CUDA-graph semantics; within 1e-5 on a GPU). Also: the graph's
// private memory pool, capture errors that name the problem, and the per-step host values
// (learning rate schedule, Adam bias corrections, RNG offsets) that must change per replay.
#include "test_util.h"

namespace cudarts {
namespace {

using darts::DropPath;

// A mini-batch source: batch s is a deterministic function of s.
struct Batches {
  Shape x_shape;
  int classes;
  std::vector<float> x(int s) const {
    return test::random_vector(size_t(x_shape.numel()), 100 + s);
  }
  std::vector<int32_t> y(int s) const {
    std::vector<int32_t> v(static_cast<size_t>(x_shape[0]));
    for (size_t i = 0; i < v.size(); ++i) v[i] = int32_t((i * 7 + size_t(s) * 3) % size_t(classes));
    return v;
  }
};

// Static input tensors of a captured step; load() writes batch s into them (outside capture).
struct StaticInputs {
  Tensor x, y;
  StaticInputs(Context& ctx, const Batches& b)
      : x(Tensor::zeros(ctx, b.x_shape)), y(Tensor::zeros(ctx, Shape{b.x_shape[0]}, DType::I32)) {}
  void load(Context& ctx, const Batches& b, int s) {
    Tensor xs = Tensor::from_vector(ctx, x.shape(), b.x(s));
    Tensor ys = Tensor::from_vector_i32(ctx, y.shape(), b.y(s));
    ops::copy(ctx, xs, x);
    ops::copy(ctx, ys, y);
  }
};

// forward, cross-entropy, backward, optimizer step: the training step of minimal_train.
struct Trainer {
  Layer& net;
  Optimizer& opt;
  Tensor loss, hits;
  Trainer(Context& ctx, Layer& n, Optimizer& o)
      : net(n), opt(o), loss(Tensor::zeros(ctx, Shape{1})), hits(Tensor::zeros(ctx, Shape{1})) {}
  void step(Context& ctx, const Tensor& x, const Tensor& y) {
    opt.zero_grad(ctx);
    Tensor logits = net.forward(ctx, x, Mode::Train);
    Tensor dl = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, y, loss, dl, hits);
    net.backward(ctx, dl);
    opt.step(ctx);
  }
};

std::unique_ptr<Sequential> small_net(Context& ctx, float drop_prob) {
  auto net = std::make_unique<Sequential>("net");
  net->emplace<Conv2d>(ctx, "conv1", 1, 8, 3, Conv2dParams::make(1, 1), false);
  net->emplace<BatchNorm2d>(ctx, "bn1", 8);
  net->emplace<ReLU>("relu1");
  if (drop_prob > 0.0f) net->emplace<DropPath>("drop").set_drop_prob(drop_prob);
  net->emplace<MaxPool2d>("pool1", 2, 2);
  net->emplace<Flatten>("flatten");
  net->emplace<Linear>(ctx, "fc", 8 * 6 * 6, 10);
  return net;
}

std::map<std::string, std::vector<float>> state_of(Layer& net) {
  std::map<std::string, std::vector<float>> s;
  for (auto& [name, p] : net.named_parameters()) s[name] = p->value.to_vector();
  for (auto& [name, b] : net.named_buffers()) s[name] = b->to_vector();
  return s;
}

void expect_same_state(Layer& a, Layer& b, double tol) {
  const auto sa = state_of(a), sb = state_of(b);
  ASSERT_EQ(sa.size(), sb.size());
  for (auto& [name, v] : sa) {
    if (tol == 0.0)
      EXPECT_EQ(v, sb.at(name)) << name;
    else
      EXPECT_LE(test::normalized_error(v, sb.at(name)), tol) << name;
  }
}

enum class Opt { Sgd, Adam };

std::unique_ptr<Optimizer> make_opt(Context& ctx, Layer& net, Opt which) {
  if (which == Opt::Sgd) {
    auto o = std::make_unique<SGD>(ctx, net.parameters(), SgdParams{0.05f, 0.9f, 5e-4f, true});
    o->set_grad_clip(1.0f);
    return o;
  }
  return std::make_unique<Adam>(ctx, net.parameters(), adamw_params(3e-3f, 1e-2f));
}

// Trains `steps` steps eagerly and by graph replay (eager warm-up step, capture, replays),
// with a learning rate that changes every step, and compares the runs step by step.
void replay_matches_eager(Device device, Opt which, float drop_prob, double tol) {
  const Batches b{Shape{6, 1, 12, 12}, 10};
  const int steps = 5;
  CosineSchedule schedule(0.05f, 0.001f, steps, 1);
  Context ea(device, ContextOptions{31}), gr(device, ContextOptions{31});
  auto net_e = small_net(ea, drop_prob), net_g = small_net(gr, drop_prob);
  auto opt_e = make_opt(ea, *net_e, which), opt_g = make_opt(gr, *net_g, which);
  Trainer te(ea, *net_e, *opt_e), tg(gr, *net_g, *opt_g);
  StaticInputs in_e(ea, b), in_g(gr, b);
  StepGraph graph(gr);
  std::vector<Tensor> bystanders;  // allocated after capture: must never alias the graph
  for (int s = 0; s < steps; ++s) {
    opt_e->set_lr(schedule.lr(s));
    in_e.load(ea, b, s);
    te.step(ea, in_e.x, in_e.y);

    opt_g->set_lr(schedule.lr(s));
    in_g.load(gr, b, s);
    if (s == 0) {
      tg.step(gr, in_g.x, in_g.y);  // warm-up, eagerly
      graph.capture([&] { tg.step(gr, in_g.x, in_g.y); });
      ASSERT_TRUE(graph.captured());
      EXPECT_GT(graph.num_nodes(), 12);  // a whole step: forward, backward, update
      // The step's activations were freed during capture (backward releases them): their
      // blocks, which every replay writes, must stay in the graph's pool, away from these.
      const Shape shapes[] = {{6, 8, 12, 12}, {6, 8, 6, 6}, {6, 10}, {8}};  // activation sizes
      for (int k = 0; k < 64; ++k)
        bystanders.push_back(Tensor::full(gr, shapes[k % 4], float(k + 1)));
    } else {
      graph.replay();
    }
    const float le = te.loss.item(), lg = tg.loss.item();
    if (tol == 0.0)
      EXPECT_EQ(le, lg) << "step " << s;
    else
      EXPECT_NEAR(le, lg, tol * std::abs(le) + 1e-6) << "step " << s;
  }
  EXPECT_EQ(graph.num_replays(), steps - 1);
  EXPECT_EQ(opt_g->step_count(), opt_e->step_count());
  EXPECT_EQ(gr.rng_offset(), ea.rng_offset());
  expect_same_state(*net_e, *net_g, tol);
  for (size_t k = 0; k < bystanders.size(); ++k) {
    const auto v = bystanders[k].to_vector();
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), [&](float x) { return x == float(k + 1); }))
        << "a tensor allocated after capture was overwritten by a replay (bystander " << k << ")";
  }
}

TEST(StepGraph, SgdReplaysEqualEagerSteps) {
  replay_matches_eager(Device::cpu(), Opt::Sgd, 0.0f, 0.0);
}

TEST(StepGraph, AdamWithDropPathReplaysEqualEagerSteps) {
  // Adam's bias corrections and DropPath's random masks change every step.
  replay_matches_eager(Device::cpu(), Opt::Adam, 0.3f, 0.0);
}

TEST(StepGraph, GpuSgdReplaysEqualEagerSteps) {
  CUDARTS_REQUIRE_GPU();
  replay_matches_eager(Device::cuda(0), Opt::Sgd, 0.0f, 1e-5);
}

TEST(StepGraph, GpuAdamWithDropPathReplaysEqualEagerSteps) {
  CUDARTS_REQUIRE_GPU();
  replay_matches_eager(Device::cuda(0), Opt::Adam, 0.3f, 1e-5);
}

// First-order DARTS (Continuous MixedOps): an architecture step on the validation batch and
// a weight step on the training batch, both in one graph.
void darts_replay_matches_eager(Device device, double tol) {
  darts::SearchConfig cfg;
  cfg.channels = 4;
  cfg.cells = 3;
  cfg.in_channels = 1;
  const Batches train{Shape{4, 1, 8, 8}, 10}, valid{Shape{4, 1, 8, 8}, 10};
  struct Run {
    std::unique_ptr<SearchModel> model;
    std::unique_ptr<Adam> arch;
    std::unique_ptr<SGD> weights;
    std::unique_ptr<Trainer> ta, tw;
    Tensor loss() const { return tw->loss.share(); }
  };
  auto build = [&](Context& ctx) {
    Run r;
    r.model =
        std::make_unique<SearchModel>(ctx, std::make_unique<darts::SearchNetwork>(ctx, "net", cfg));
    r.arch = std::make_unique<Adam>(ctx, r.model->architecture_parameters(), AdamParams{3e-2f});
    r.weights = std::make_unique<SGD>(ctx, r.model->operational_parameters(),
                                      SgdParams{0.05f, 0.9f, 3e-4f, false});
    r.weights->set_grad_clip(5.0f);
    r.ta = std::make_unique<Trainer>(ctx, r.model->network(), *r.arch);
    r.tw = std::make_unique<Trainer>(ctx, r.model->network(), *r.weights);
    return r;
  };
  Context ea(device, ContextOptions{41}), gr(device, ContextOptions{41});
  Run re = build(ea), rg = build(gr);
  StaticInputs tr_e(ea, train), va_e(ea, valid), tr_g(gr, train), va_g(gr, valid);
  auto step = [](Context& ctx, Run& r, StaticInputs& tr, StaticInputs& va) {
    r.ta->step(ctx, va.x, va.y);  // zero_grad of alphas, forward/backward, alpha update
    r.tw->step(ctx, tr.x, tr.y);
  };
  StepGraph graph(gr);
  for (int s = 0; s < 4; ++s) {
    tr_e.load(ea, train, 2 * s);
    va_e.load(ea, valid, 2 * s + 1);
    step(ea, re, tr_e, va_e);
    tr_g.load(gr, train, 2 * s);
    va_g.load(gr, valid, 2 * s + 1);
    if (s == 0) {
      step(gr, rg, tr_g, va_g);
      graph.capture([&] { step(gr, rg, tr_g, va_g); });
    } else {
      graph.replay();
    }
    if (tol == 0.0)
      EXPECT_EQ(re.loss().item(), rg.loss().item()) << "step " << s;
    else
      EXPECT_NEAR(re.loss().item(), rg.loss().item(), tol) << "step " << s;
  }
  const auto ae = re.model->alphas().to_vector(), ag = rg.model->alphas().to_vector();
  if (tol == 0.0)
    EXPECT_EQ(ae, ag);
  else
    EXPECT_LE(test::normalized_error(ag, ae), tol);
  expect_same_state(re.model->network(), rg.model->network(), tol);
}

TEST(StepGraph, ContinuousDartsSearchStepReplaysEqualEagerSteps) {
  darts_replay_matches_eager(Device::cpu(), 0.0);
}

TEST(StepGraph, GpuContinuousDartsSearchStepReplaysEqualEagerSteps) {
  CUDARTS_REQUIRE_GPU();
  darts_replay_matches_eager(Device::cuda(0), 1e-4);
}

TEST(StepGraph, CaptureRecordsWithoutRunningAndReplayRuns) {
  Context ctx;
  Tensor t = Tensor::full(ctx, Shape{4}, 1.0f);
  StepGraph g(ctx);
  g.capture([&] { ops::fill(ctx, t, 7.0f); });
  EXPECT_EQ(t.to_vector(), std::vector<float>(4, 1.0f)) << "capture must not run the work";
  EXPECT_EQ(g.num_nodes(), 1);
  g.replay();
  EXPECT_EQ(t.to_vector(), std::vector<float>(4, 7.0f));
}

TEST(StepGraph, HostReadDuringCaptureIsRefusedByName) {
  Context ctx;
  Tensor t = Tensor::full(ctx, Shape{3}, 2.0f);
  StepGraph g(ctx);
  try {
    g.capture([&] {
      ops::scale(ctx, t, 2.0f, t);
      (void)t.to_vector();
    });
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("Tensor::to_vector"), std::string::npos) << m;
    EXPECT_NE(m.find("f32[3]"), std::string::npos) << m;
    EXPECT_NE(m.find("capturing"), std::string::npos) << m;
  }
  EXPECT_FALSE(ctx.capturing());
  EXPECT_FALSE(ctx.allocator().capturing());
  EXPECT_FALSE(g.captured());
  EXPECT_THROW(g.replay(), Error);
  EXPECT_EQ(t.to_vector(), std::vector<float>(3, 2.0f)) << "the failed capture ran nothing";
  EXPECT_THROW(g.capture([&] { Tensor u = Tensor::from_vector(ctx, Shape{1}, {1.0f}); }), Error);
  EXPECT_THROW(g.capture([&] { ctx.synchronize(); }), Error);
  ops::scale(ctx, t, 2.0f, t);  // eager work still runs
  EXPECT_EQ(t.to_vector(), std::vector<float>(3, 4.0f));
}

TEST(StepGraph, SampledMixedOpCannotBeCaptured) {
  Context ctx(Device::cpu(), ContextOptions{5});
  darts::SearchConfig cfg;
  cfg.channels = 2;
  cfg.cells = 3;
  cfg.in_channels = 1;
  cfg.mixed.method = std::string("binary");
  SearchModel model(ctx, std::make_unique<darts::SearchNetwork>(ctx, "net", cfg));
  StepGraph g(ctx);
  // Sampling reads the rankings to the host, which a graph cannot do.
  EXPECT_THROW(g.capture([&] { model.sample(ctx); }), Error);
  EXPECT_FALSE(ctx.capturing());
}

TEST(StepGraph, OneStepPerOptimizerPerCapture) {
  Context ctx;
  Parameter p;
  p.value = Tensor::full(ctx, Shape{2}, 1.0f);
  p.grad = Tensor::full(ctx, Shape{2}, 1.0f);
  SGD opt(ctx, {&p}, SgdParams{0.5f});
  StepGraph g(ctx);
  EXPECT_THROW(g.capture([&] {
    opt.step(ctx);
    opt.step(ctx);
  }),
               Error);
  g.capture([&] { opt.step(ctx); });  // a new capture may step it again
  EXPECT_EQ(opt.step_count(), 0) << "capture runs no step";
  g.replay();
  g.replay();
  EXPECT_EQ(opt.step_count(), 2);
  EXPECT_EQ(p.value.to_vector(), std::vector<float>(2, 0.0f));  // 1 - 0.5 - 0.5
}

TEST(StepGraph, ChangedSeedRequiresANewCapture) {
  Context ctx(Device::cpu(), ContextOptions{3});
  Tensor t = Tensor::zeros(ctx, Shape{8});
  StepGraph g(ctx);
  g.capture([&] { ops::random_uniform(ctx, t, ctx.seed(), ctx.reserve_rng(8), 0.0f, 1.0f); });
  g.replay();
  const auto first = t.to_vector();
  g.replay();
  EXPECT_NE(t.to_vector(), first) << "each replay draws fresh numbers";
  ctx.set_rng_state(4, 0);
  EXPECT_THROW(g.replay(), Error);
}

TEST(AllocatorPool, GraphBlocksStayWithTheirPool) {
  CpuAllocator a;
  void* before = a.allocate(1000);  // in use before the pool exists
  const uint64_t pool = a.begin_pool();
  EXPECT_TRUE(a.capturing());
  void* p = a.allocate(1000);
  a.deallocate(p, 1000);
  void* again = a.allocate(1000);
  EXPECT_EQ(again, p) << "a pool reuses its own free blocks during capture";
  a.deallocate(before, 1000);  // freed during capture: the graph may still read it
  a.end_pool();
  EXPECT_FALSE(a.capturing());
  a.deallocate(again, 1000);  // freed after capture: back to the pool, not the cache
  EXPECT_EQ(a.pool_cached_bytes(pool), 2 * Allocator::round_size(1000));
  void* outside = a.allocate(1000);
  EXPECT_NE(outside, p);
  EXPECT_NE(outside, before);
  a.release_pool(pool);
  EXPECT_EQ(a.pool_cached_bytes(pool), 0u);
  void* x = a.allocate(1000);
  void* y = a.allocate(1000);
  EXPECT_TRUE((x == p || x == before) && (y == p || y == before) && x != y)
      << "released pool blocks return to the general cache";
  const auto st = a.stats();
  EXPECT_EQ(st.num_allocations, 3u);
  a.deallocate(x, 1000);
  a.deallocate(y, 1000);
  a.deallocate(outside, 1000);
  EXPECT_EQ(a.stats().current_bytes, 0u);
}

TEST(AllocatorPool, BlockUsedByTwoGraphsIsReservedUntilBothAreReleased) {
  CpuAllocator a;
  const uint64_t first = a.begin_pool();
  void* b = a.allocate(5000);  // made in the first capture, still held afterwards
  a.end_pool();
  const uint64_t second = a.begin_pool();
  a.deallocate(b, 5000);  // freed in the second capture: both graphs may use it
  void* c = a.allocate(5000);
  EXPECT_NE(c, b) << "a block two graphs may use is reused by neither";
  a.deallocate(c, 5000);
  a.end_pool();
  a.release_pool(first);
  void* d = a.allocate(5000);
  EXPECT_NE(d, b) << "the second graph still uses it";
  EXPECT_EQ(a.pool_cached_bytes(second), 2 * Allocator::round_size(5000))
      << "it now belongs to the second pool alone (with c)";
  a.release_pool(second);
  void* e = a.allocate(5000);
  void* f = a.allocate(5000);
  EXPECT_TRUE((e == b || f == b) && e != f) << "both graphs gone: back in the general cache";
  for (void* p : {d, e, f}) a.deallocate(p, 5000);
  EXPECT_FALSE(a.has_pools());
  EXPECT_EQ(a.stats().current_bytes, 0u);
}

TEST(AllocatorPool, CapturesDoNotNest) {
  CpuAllocator a;
  a.begin_pool();
  EXPECT_THROW(a.begin_pool(), Error);
  a.end_pool();
}

}  // namespace
}  // namespace cudarts
