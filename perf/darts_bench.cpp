// darts_bench: times one first-order DARTS search iteration (alpha step on a validation batch,
// weight step with clipping on a training batch) with the DARTS defaults, on the CPU or the GPU.
// Validates before timing (finite loss), then reports the median iteration time, the allocator
// peak, and how many underlying allocations happened after the warm-up iterations (the
// steady state must not allocate). With continuous MixedOps it then captures the same
// iteration in a StepGraph and times its replays in the same run (graph_median_ms and the
// ratio eager / graph). Prints one JSON object.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

#include "../samples/program.h"
#include "cudarts/cudarts.h"

using namespace cudarts;

namespace {

// The cost model of what `profiler` recorded, per op class, to stderr: calls, launches, MB
// moved, GFLOP, the modelled time on an H100 and an H200 (eager and as a graph replay) and
// the measured time (device time on a GPU; host time of the CPU reference otherwise, which the
// model does not describe). Returns the totals as JSON members (", \"model\": {...}").
std::string cost_model_report(OpProfiler& profiler, bool on_gpu, bool tf32) {
  const DeviceModel h100 = DeviceModel::h100_sxm(), h200 = DeviceModel::h200();
  const std::vector<OpProfiler::Row> rows = profiler.report();
  std::fprintf(stderr,
               "cost model of one iteration (%s; modelled ms = per call max(launches x launch "
               "cost, bytes / bandwidth, FLOPs / rate))\n",
               tf32 ? "TF32 allowed" : "strict FP32");
  std::fprintf(stderr, "%-34s %7s %8s %10s %9s %9s %9s %9s %9s %10s\n", "op [class]", "calls",
               "launches", "MB", "GFLOP", "H100 eag", "H100 gra", "H200 eag", "H200 gra",
               on_gpu ? "measured" : "cpu ms");
  OpCost total;
  int64_t calls = 0;
  double model[4] = {0, 0, 0, 0}, measured = 0;
  for (const OpProfiler::Row& r : rows) {
    const double m[4] = {1e3 * h100.seconds(r.cost, r.calls, false, tf32),
                         1e3 * h100.seconds(r.cost, r.calls, true, tf32),
                         1e3 * h200.seconds(r.cost, r.calls, false, tf32),
                         1e3 * h200.seconds(r.cost, r.calls, true, tf32)};
    for (int i = 0; i < 4; ++i) model[i] += m[i];
    measured += r.total_ms;
    total += r.cost;
    calls += r.calls;
    std::fprintf(stderr, "%-34s %7lld %8lld %10.2f %9.3f %9.3f %9.3f %9.3f %9.3f %10.3f\n",
                 r.label().c_str(), (long long)r.calls, (long long)r.cost.launches,
                 (r.cost.bytes_read + r.cost.bytes_written) / 1e6, r.cost.flops / 1e9, m[0], m[1],
                 m[2], m[3], r.total_ms);
  }
  const double gb = (total.bytes_read + total.bytes_written) / 1e9;
  std::fprintf(stderr, "%-34s %7lld %8lld %10.2f %9.3f %9.3f %9.3f %9.3f %9.3f %10.3f\n", "total",
               (long long)calls, (long long)total.launches, gb * 1e3, total.flops / 1e9, model[0],
               model[1], model[2], model[3], measured);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                ", \"model\": {\"op_calls\": %lld, \"launches\": %lld, \"gbytes\": %.4f, "
                "\"gflop\": %.3f, \"h100_eager_ms\": %.3f, \"h100_graph_ms\": %.3f, "
                "\"h200_eager_ms\": %.3f, \"h200_graph_ms\": %.3f, \"measured_op_ms\": %.3f, "
                "\"tf32\": %s}",
                (long long)calls, (long long)total.launches, gb, total.flops / 1e9, model[0],
                model[1], model[2], model[3], measured, tf32 ? "true" : "false");
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string device = "auto", mixed_op = "continuous";
  int64_t channels = 16, batch = 64, size = 32;
  int cells = 8, iters = 10, warmup = 3;
  const ContextOptions defaults;  // the own-kernel switches start as the library's defaults
  bool graph = true, all_gradients = false, own_depthwise = defaults.own_depthwise_kernels,
       own_pointwise = defaults.own_pointwise_kernels, own_pool = defaults.own_pool_kernels,
       own_norm = defaults.own_norm_kernels, fuse_relu = true, fuse_norm = true, fuse_lead = true;
  size_t op_times = 0;
  bool model_table = false;
  CLI::App app{"Time a first-order DARTS search iteration"};
  app.add_option("--device", device)->check(CLI::IsMember({"cpu", "cuda", "auto"}));
  app.add_option("--mixed-op", mixed_op);
  app.add_option("--channels", channels);
  app.add_option("--cells", cells);
  app.add_option("--batch-size", batch);
  app.add_option("--size", size);
  app.add_option("--iters", iters);
  app.add_option("--warmup", warmup);
  app.add_option("--graph", graph, "also time StepGraph replays (continuous MixedOps only)");
  app.add_flag("--all-gradients", all_gradients,
               "compute every gradient in both passes (the weight gradients of the alpha step "
               "and the alpha gradients of the weight step, which the step discards)");
  app.add_flag("--model", model_table,
               "print the cost model of one eager iteration per op class (launches, bytes, "
               "FLOPs, modelled H100/H200 times, and the measured time beside them) to stderr "
               "and its totals in the JSON");
  app.add_option("--own-depthwise", own_depthwise,
                 "CUDA: depthwise convolutions on cudarts' own kernels (false: cuDNN)");
  app.add_option("--own-pointwise", own_pointwise,
                 "CUDA: 1x1 convolutions on cudarts' own kernels (false: cuDNN)");
  app.add_option("--own-pool", own_pool, "CUDA: pooling on cudarts' own kernels (false: cuDNN)");
  app.add_option("--own-norm", own_norm,
                 "CUDA: affine-free BatchNorm on cudarts' own kernels (default false: cuDNN)");
  app.add_option("--fuse-relu", fuse_relu,
                 "the ReLU before each depthwise convolution fused into it (false: separate "
                 "ReLU layers, the same numbers)");
  app.add_option("--fuse-norm", fuse_norm,
                 "the candidates' trailing affine-free BatchNorms inside each edge's mix (false: "
                 "each candidate runs its own, the same numbers)");
  app.add_option("--fuse-lead", fuse_lead,
                 "each edge's leading depthwise convolutions as one group (input read once, "
                 "input gradient in one pass; false: one by one, the same numbers)");
  app.add_option("--op-times", op_times,
                 "after timing, profile one eager iteration op by op and print the N most "
                 "expensive ops to stderr");
  CUDARTS_PARSE(app, argc, argv);
  return program::run("darts_bench", [&] {
    const bool cuda = device == "cuda" || (device == "auto" && Context::cuda_available());
    ContextOptions options;
    options.seed = 1;
    options.own_depthwise_kernels = own_depthwise;
    options.own_pointwise_kernels = own_pointwise;
    options.own_pool_kernels = own_pool;
    options.own_norm_kernels = own_norm;
    Context ctx(cuda ? Device::cuda(0) : Device::cpu(), options);
    darts::SearchConfig cfg;
    cfg.channels = channels;
    cfg.cells = cells;
    cfg.mixed.method = mixed_op;
    cfg.mixed.num_eval = 2;
    cfg.fuse_relu = fuse_relu;
    cfg.mixed.fuse_norm = fuse_norm;
    cfg.mixed.fuse_lead = fuse_lead;
    SearchModel model(ctx, std::make_unique<darts::SearchNetwork>(ctx, "net", cfg));
    SGD w_opt(ctx, model.operational_parameters(), SgdParams{0.025f, 0.9f, 3e-4f, false});
    w_opt.set_grad_clip(5.0f);
    AdamParams ap;
    ap.lr = 3e-4f;
    ap.beta1 = 0.5f;
    ap.weight_decay = 1e-3f;
    Adam a_opt(ctx, model.architecture_parameters(), ap);
    model.attach_architecture_optimizer(a_opt);

    std::mt19937 gen(3);
    std::normal_distribution<float> normal;
    auto batch_of = [&](Tensor& x, Tensor& y) {
      std::vector<float> v(size_t(batch * 3 * size * size));
      for (float& f : v) f = normal(gen);
      std::vector<int32_t> l(static_cast<size_t>(batch));
      for (auto& k : l) k = int32_t(gen() % 10u);
      x = Tensor::from_vector(ctx, Shape{batch, 3, size, size}, v);
      y = Tensor::from_vector_i32(ctx, Shape{batch}, l);
    };
    Tensor xt, yt, xv, yv;
    batch_of(xt, yt);
    batch_of(xv, yv);
    Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
    auto step = [&] {
      model.set_gradients(all_gradients ? Gradients::All : Gradients::Architecture);
      a_opt.zero_grad(ctx);
      Tensor lv = model.forward(ctx, xv, Mode::Train);
      Tensor dv = Tensor::empty(ctx, lv.shape());
      ops::softmax_xent(ctx, lv, yv, loss, dv, hits);
      model.backward(ctx, dv);
      a_opt.step(ctx);
      model.set_gradients(all_gradients ? Gradients::All : Gradients::Operational);
      w_opt.zero_grad(ctx);
      Tensor lt = model.forward(ctx, xt, Mode::Train);
      Tensor dt = Tensor::empty(ctx, lt.shape());
      ops::softmax_xent(ctx, lt, yt, loss, dt, hits);
      model.backward(ctx, dt);
      w_opt.step(ctx);
    };
    for (int i = 0; i < warmup; ++i) step();
    const float l0 = loss.item();
    if (!std::isfinite(l0)) {
      std::fprintf(stderr, "darts_bench: loss is %f after the warm-up\n", l0);
      return 1;
    }
    auto time_iters = [&](const std::function<void()>& fn, uint64_t* allocations) {
      ctx.synchronize();
      const uint64_t before = ctx.allocator().stats().num_allocations;
      std::vector<double> ms;
      for (int i = 0; i < iters; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        ctx.synchronize();
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      *allocations = ctx.allocator().stats().num_allocations - before;
      std::sort(ms.begin(), ms.end());
      return ms;
    };
    uint64_t eager_allocs = 0, graph_allocs = 0;
    const std::vector<double> ms = time_iters(step, &eager_allocs);
    if (op_times > 0) {
      OpProfiler profiler(ctx);
      step();
      std::fprintf(stderr, "%s", profiler.table(op_times).c_str());
    }
    std::string model_json;
    if (model_table) {
      OpProfiler profiler(ctx);
      step();
      model_json = cost_model_report(profiler, ctx.device().is_cuda(), ctx.allow_tf32());
    }
    std::vector<double> gms;
    int64_t nodes = 0;
    bool graphable = graph;
    for (auto& [name, m] : model.mixed_ops()) graphable = graphable && m->capturable();
    if (graphable) {
      StepGraph g(ctx);
      g.capture(step);
      nodes = g.num_nodes();
      g.replay();  // the first launch uploads the graph
      gms = time_iters([&] { g.replay(); }, &graph_allocs);
      const float lg = loss.item();
      if (!std::isfinite(lg)) {
        std::fprintf(stderr, "darts_bench: loss is %f after the graph replays\n", lg);
        return 1;
      }
    }
    const AllocatorStats after = ctx.allocator().stats();
    std::printf(
        "{\"device\": \"%s\", \"mixed_op\": \"%s\", \"channels\": %lld, \"cells\": %d, "
        "\"batch\": %lld, \"size\": %lld, \"iters\": %d, \"median_ms\": %.3f, "
        "\"min_ms\": %.3f, \"peak_bytes\": %zu, \"steady_state_allocations\": %llu, "
        "\"loss\": %.5f, \"own_depthwise_kernels\": %s, \"own_pointwise_kernels\": %s, "
        "\"own_pool_kernels\": %s, \"own_norm_kernels\": %s, \"fused_relu\": %s, \"fused_norm\": "
        "%s, \"fused_lead\": %s",
        ctx.device().str().c_str(), mixed_op.c_str(), (long long)channels, cells, (long long)batch,
        (long long)size, iters, ms[ms.size() / 2], ms.front(), after.peak_bytes,
        (unsigned long long)eager_allocs, loss.item(), own_depthwise ? "true" : "false",
        own_pointwise ? "true" : "false", own_pool ? "true" : "false", own_norm ? "true" : "false",
        fuse_relu ? "true" : "false", fuse_norm ? "true" : "false", fuse_lead ? "true" : "false");
    std::printf("%s", model_json.c_str());
    if (graphable)
      std::printf(
          ", \"graph_nodes\": %lld, \"graph_median_ms\": %.3f, \"graph_min_ms\": %.3f, "
          "\"eager_over_graph\": %.3f, \"graph_steady_state_allocations\": %llu",
          (long long)nodes, gms[gms.size() / 2], gms.front(),
          ms[ms.size() / 2] / gms[gms.size() / 2], (unsigned long long)graph_allocs);
    std::printf("}\n");
    return eager_allocs == 0 && graph_allocs == 0 ? 0 : 5;  // 5: the steady state allocated
  });
}
