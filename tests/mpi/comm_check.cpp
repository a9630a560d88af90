// Multi-process checks of the collectives and of data-parallel steps (cudarts/comm.h), run by
// tests/mpi/run.sh under mpirun on the CPU backend. Every rank checks, and rank 0 prints one
// line per check; the exit status is non-zero when any rank saw a failure.
//   comm_check collectives   sums, means, broadcasts, flat buffers, host values by hand; the
//                            same bits on every rank; a collective inside a CPU StepGraph
//   comm_check steps         SGD steps on a network without BatchNorm, batch split over the
//                            ranks: after every step every rank holds bit-identical weights,
//                            and they equal a one-process run on the whole batch to rounding
//   comm_check stall         rank 1 stops answering: rank 0's collective must end in a
//                            CommError within CUDARTS_COMM_TIMEOUT (the job is then aborted)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <cudarts/cudarts.h>

using namespace cudarts;

namespace {

int failures = 0;

std::string sci(double v) {
  std::ostringstream s;
  s.precision(2);
  s << std::scientific << v;
  return s.str();
}

void expect(Communicator& comm, bool ok, const std::string& what) {
  std::vector<double> bad{ok ? 0.0 : 1.0};
  comm.all_reduce_host(bad);
  if (!ok) std::printf("rank %d: FAIL %s\n", comm.rank(), what.c_str());
  if (comm.rank() == 0) std::printf("%s %s\n", bad[0] == 0.0 ? "ok  " : "FAIL", what.c_str());
  failures += bad[0] != 0.0;
  std::fflush(stdout);
}

bool same_on_all_ranks(Communicator& comm, const std::vector<const Tensor*>& ts) {
  const std::vector<uint64_t> crcs = comm.all_gather_host(tensors_crc32(ts));
  for (uint64_t c : crcs)
    if (c != crcs[0]) return false;
  return true;
}

int collectives(Context& ctx, Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  // x_i on rank r = (r + 1) * (i + 1) / 3 (not exact in binary): sum = n (n + 1) / 2 (i + 1) / 3.
  std::vector<float> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(r + 1) * float(i + 1) / 3.0f;
  Tensor sum = Tensor::from_vector(ctx, Shape{10, 100}, v);
  Tensor mean = Tensor::from_vector(ctx, Shape{1000}, v);
  comm.all_reduce(ctx, sum, ReduceOp::Sum);
  comm.all_reduce(ctx, mean, ReduceOp::Mean);
  const std::vector<float> s = sum.to_vector(), m = mean.to_vector();
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    const double want = double(n) * (n + 1) / 2.0 * double(i + 1) / 3.0;
    worst = std::max(worst, std::abs(s[i] - want) / want);
    worst = std::max(worst, std::abs(m[i] - want / n) / (want / n));
  }
  expect(comm, worst < 1e-6,
         "all_reduce sum and mean against n(n+1)/2 x by hand (" + std::to_string(n) +
             " ranks, relative error " + sci(worst) + ")");
  expect(comm, same_on_all_ranks(comm, {&sum, &mean}), "all_reduce: the same bits on every rank");

  Tensor b = Tensor::full(ctx, Shape{7}, float(r * 10 + 3));
  const int root = n - 1;
  comm.broadcast(ctx, b, root);
  bool ok = true;
  for (float x : b.to_vector()) ok = ok && x == float(root * 10 + 3);
  expect(comm, ok, "broadcast from the last rank");

  Tensor a1 = Tensor::full(ctx, Shape{3}, float(r)), a2 = Tensor::full(ctx, Shape{2, 2}, 1.0f);
  Tensor scratch;
  comm.all_reduce_many(ctx, {&a1, &a2}, ReduceOp::Sum, scratch);
  ok = scratch.numel() == 7;
  for (float x : a1.to_vector()) ok = ok && x == float(n * (n - 1) / 2);
  for (float x : a2.to_vector()) ok = ok && x == float(n);
  expect(comm, ok, "all_reduce_many: two tensors through one flat buffer");

  std::vector<double> h{double(r), 0.5};
  comm.all_reduce_host(h);
  const std::vector<uint64_t> g = comm.all_gather_host(uint64_t(100 + r));
  ok = h[0] == n * (n - 1) / 2.0 && h[1] == 0.5 * n && int(g.size()) == n;
  for (int k = 0; k < int(g.size()); ++k) ok = ok && g[size_t(k)] == uint64_t(100 + k);
  expect(comm, ok, "host all_reduce and all_gather");

  // Inside a CPU StepGraph the collective is recorded and runs at every replay.
  Tensor c = Tensor::full(ctx, Shape{4}, 1.0f);
  StepGraph graph(ctx);
  graph.capture([&] { comm.all_reduce(ctx, c, ReduceOp::Sum); });
  const float after_capture = c.to_vector()[0];
  graph.replay();
  graph.replay();
  expect(comm, after_capture == 1.0f && c.to_vector()[0] == float(n * n),
         "a captured all_reduce runs at every replay (1 -> n -> n^2)");
  return failures;
}

// conv - [synchronised BatchNorm] - ReLU - pool - linear: without BatchNorm, or with it
// synchronised, the ranks' averaged gradient is the whole batch's gradient (up to summation
// order).
std::unique_ptr<Sequential> small_net(Context& ctx, bool sync_bn) {
  auto s = std::make_unique<Sequential>("net");
  s->emplace<Conv2d>(ctx, "conv", 2, 4, 3, Conv2dParams::make(1, 1), true);
  if (sync_bn) s->emplace<BatchNorm2d>(ctx, "bn", 4, true).set_synchronized(true);
  s->emplace<ReLU>("relu");
  s->emplace<GlobalAvgPool>("gap");
  s->emplace<Linear>(ctx, "fc", 4, 3, true);
  return s;
}

float train_steps(Context& ctx, Sequential& net, const Tensor& x, const Tensor& y, int steps,
                  Communicator* check) {
  SgdParams p;
  p.lr = 0.1f;
  p.momentum = 0.9f;
  p.weight_decay = 1e-3f;
  SGD opt(ctx, net.parameters(), p);
  opt.set_grad_clip(1.0f);
  float last = 0;
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad(ctx);
    Tensor logits = net.forward(ctx, x, Mode::Train);
    Tensor loss = Tensor::empty(ctx, Shape{1}), hits = Tensor::empty(ctx, Shape{1});
    Tensor dlogits = Tensor::empty(ctx, logits.shape());
    ops::softmax_xent(ctx, logits, y, loss, dlogits, hits);
    net.backward(ctx, dlogits);
    opt.step(ctx);
    last = loss.item();
    if (check) {
      std::vector<const Tensor*> w;
      for (Parameter* q : net.parameters()) w.push_back(&q->value);
      expect(*check, same_on_all_ranks(*check, w),
             "step " + std::to_string(s + 1) + ": bit-identical weights on every rank");
    }
  }
  return last;
}

int steps(Communicator& comm, bool sync_bn) {
  const int n = comm.size(), r = comm.rank();
  const std::string what = sync_bn ? " (synchronised BatchNorm)" : " (no BatchNorm)";
  const int64_t batch = 4 * n;
  const std::vector<float> xs = draw_uniform(5, 0, batch * 2 * 6 * 6, -1.0f, 1.0f);
  std::vector<int32_t> ys;
  for (int64_t i = 0; i < batch; ++i) ys.push_back(int32_t(i % 3));
  const int64_t per = batch / n, img = 2 * 6 * 6;
  // This rank's share of the batch.
  Context ctx(Device::cpu(), ContextOptions{3});
  ctx.set_communicator(world_communicator());
  auto net = small_net(ctx, sync_bn);
  const Tensor x = Tensor::from_vector(
      ctx, Shape{per, 2, 6, 6},
      std::vector<float>(xs.begin() + r * per * img, xs.begin() + (r + 1) * per * img));
  const Tensor y = Tensor::from_vector_i32(
      ctx, Shape{per}, std::vector<int32_t>(ys.begin() + r * per, ys.begin() + (r + 1) * per));
  train_steps(ctx, *net, x, y, 5, &comm);
  // One process, the whole batch (same seed: the same initial weights).
  Context solo(Device::cpu(), ContextOptions{3});
  auto ref = small_net(solo, sync_bn);
  train_steps(solo, *ref, Tensor::from_vector(solo, Shape{batch, 2, 6, 6}, xs),
              Tensor::from_vector_i32(solo, Shape{batch}, ys), 5, nullptr);
  double worst = 0;
  const auto a = net->parameters(), b = ref->parameters();
  for (size_t k = 0; k < a.size(); ++k) {
    const std::vector<float> va = a[k]->value.to_vector(), vb = b[k]->value.to_vector();
    for (size_t i = 0; i < va.size(); ++i)
      worst = std::max(worst, double(std::abs(va[i] - vb[i])) / (std::abs(vb[i]) + 1e-3));
  }
  const auto ba = net->named_buffers(), bb = ref->named_buffers();  // running statistics
  for (size_t k = 0; k < ba.size() && k < bb.size(); ++k) {
    const std::vector<float> va = ba[k].second->to_vector(), vb = bb[k].second->to_vector();
    for (size_t i = 0; i < va.size(); ++i)
      worst = std::max(worst, double(std::abs(va[i] - vb[i])) / (std::abs(vb[i]) + 1e-3));
  }
  expect(comm, worst < 1e-5,
         "5 SGD steps (momentum, weight decay, clipping) on " + std::to_string(n) +
             " ranks of batch " + std::to_string(per) + " equal one process on batch " +
             std::to_string(batch) + what + " (worst relative difference " + sci(worst) + ")");
  return failures;
}

int stall(Context& ctx, Communicator& comm) {
  Tensor t = Tensor::full(ctx, Shape{8}, 1.0f);
  if (comm.rank() == 1) {  // a rank that stops answering
    std::this_thread::sleep_for(std::chrono::seconds(60));
    return 0;
  }
  const auto t0 = std::chrono::steady_clock::now();
  try {
    comm.all_reduce(ctx, t, ReduceOp::Sum);
    std::printf("FAIL: the all_reduce with a silent rank returned\n");
  } catch (const CommError& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rank 0: CommError after %.1f s: %s\n", s, e.what());
  }
  std::fflush(stdout);
  finish_job(5);  // what the programs do: the job ends, the silent rank with it
  return 5;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    std::shared_ptr<Communicator> comm = world_communicator();
    Context ctx(Device::cpu(), ContextOptions{1});
    ctx.set_communicator(comm);
    if (comm->rank() == 0)
      std::printf("comm_check %s: %d ranks, backend %s\n", mode.c_str(), comm->size(),
                  comm->backend());
    if (mode == "collectives") return collectives(ctx, *comm) ? 1 : 0;
    if (mode == "steps") return steps(*comm, false) || steps(*comm, true) ? 1 : 0;
    if (mode == "stall") return stall(ctx, *comm);
    std::fprintf(stderr, "usage: comm_check collectives|steps|stall\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "comm_check: %s\n", e.what());
    finish_job(1);
    return 1;
  }
}
