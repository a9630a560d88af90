// Collectives (include/cudarts/comm.h): the shared front door (capture, flat buffers), the
// local communicator and the MPI one. Deterministic: MPI reduces to rank 0 in one call and
// broadcasts, so every rank receives the same bits whatever algorithm MPI picks. Waits poll
// non-blocking requests against a deadline, so a dead or stuck rank gives a CommError, not a
// hang.
#include "cudarts/comm.h"

#include <zlib.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "capture.h"
#include "cudarts/context.h"
#include "cudarts/ops.h"

#ifdef CUDARTS_HAVE_MPI
#include <mpi.h>
#endif

namespace cudarts {

Communicator::~Communicator() = default;

namespace {
void check_tensor(const Context& ctx, const Tensor& t, const char* what) {
  CUDARTS_CHECK(t.defined() && t.dtype() == DType::F32, what, ": expected a float32 tensor, got ",
                t.defined() ? t.describe() : std::string("an undefined tensor"));
  CUDARTS_CHECK(t.device() == ctx.device(), what, ": tensor is ", t.describe(),
                " but the context is on ", ctx.device().str());
}
}  // namespace

void Communicator::all_reduce(Context& ctx, Tensor& t, ReduceOp op) {
  check_tensor(ctx, t, "all_reduce");
  if (!distributed()) return;
  if (ctx.capturing()) {
    CUDARTS_CHECK(capturable(ctx), "all_reduce: the ", backend(),
                  " backend cannot run inside a CUDA-graph capture of a ", ctx.device().str(),
                  " context (it stages through the host); use NCCL or "
                  "eager steps");
    if (auto* rec = ctx.capture_state()->recording) {  // CPU: part of every replay
      auto b = std::make_shared<Tensor>(t.borrow());
      rec->push_back([this, &ctx, b, op](Backend&) { all_reduce_now(ctx, *b, op); });
      return;
    }
  }
  all_reduce_now(ctx, t, op);
}

void Communicator::broadcast(Context& ctx, Tensor& t, int root) {
  check_tensor(ctx, t, "broadcast");
  CUDARTS_CHECK(root >= 0 && root < size(), "broadcast: root ", root, " outside the ", size(),
                " ranks");
  if (!distributed()) return;
  if (ctx.capturing()) {
    CUDARTS_CHECK(capturable(ctx), "broadcast: the ", backend(),
                  " backend cannot run inside a CUDA-graph capture of a ", ctx.device().str(),
                  " context");
    if (auto* rec = ctx.capture_state()->recording) {
      auto b = std::make_shared<Tensor>(t.borrow());
      rec->push_back([this, &ctx, b, root](Backend&) { broadcast_now(ctx, *b, root); });
      return;
    }
  }
  broadcast_now(ctx, t, root);
}

void Communicator::all_reduce_many(Context& ctx, const std::vector<Tensor*>& ts, ReduceOp op,
                                   Tensor& scratch) {
  if (!distributed() || ts.empty()) return;
  int64_t total = 0;
  for (Tensor* t : ts) {
    check_tensor(ctx, *t, "all_reduce_many");
    total += t->numel();
  }
  if (!scratch.defined() || scratch.numel() != total) scratch = Tensor::empty(ctx, Shape{total});
  // Pack, one collective, unpack: few large calls instead of one per tensor.
  int64_t off = 0;
  for (Tensor* t : ts) {
    Tensor part = scratch.slice(off, off + t->numel()).reshape(t->shape());
    ops::copy(ctx, *t, part);
    off += t->numel();
  }
  all_reduce(ctx, scratch, op);
  off = 0;
  for (Tensor* t : ts) {
    const Tensor part = scratch.slice(off, off + t->numel()).reshape(t->shape());
    ops::copy(ctx, part, *t);
    off += t->numel();
  }
}

double comm_timeout_seconds() {
  const char* env = std::getenv("CUDARTS_COMM_TIMEOUT");
  if (!env || !*env) return 600.0;
  char* end = nullptr;
  const double v = std::strtod(env, &end);
  CUDARTS_CONFIG_CHECK(end && *end == '\0' && v > 0.0, "CUDARTS_COMM_TIMEOUT '", env,
                       "': expected a positive number of seconds");
  return v;
}

uint32_t tensors_crc32(const std::vector<const Tensor*>& ts) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const Tensor* t : ts) {
    const std::vector<float> v = t->to_vector();
    crc = crc32(crc, reinterpret_cast<const Bytef*>(v.data()), uInt(v.size() * sizeof(float)));
  }
  return uint32_t(crc);
}

// ---------------------------------------------------------------- local
namespace {
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  bool distributed() const override { return false; }
  void barrier() override {}
  void all_reduce_host(std::vector<double>&) override {}
  std::vector<uint64_t> all_gather_host(uint64_t v) override { return {v}; }

 protected:
  void all_reduce_now(Context&, Tensor&, ReduceOp) override {}
  void broadcast_now(Context&, Tensor&, int) override {}
  bool capturable(const Context&) const override { return true; }
};
}  // namespace

std::shared_ptr<Communicator> local_communicator() {
  static const std::shared_ptr<Communicator> local = std::make_shared<LocalCommunicator>();
  return local;
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

// ---------------------------------------------------------------- MPI
#ifdef CUDARTS_HAVE_MPI
namespace {

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_ = true;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    timeout_ = comm_timeout_seconds();
  }
  ~MpiCommunicator() override {
    if (failed_) {
      // A collective failed: the others may be waiting in one; finalising could hang.
      MPI_Abort(MPI_COMM_WORLD, 5);
    }
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
    if (owns_ && !finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  void abort(int status) {
    failed_ = true;
    MPI_Abort(MPI_COMM_WORLD, status);
  }

  void barrier() override {
    MPI_Request r;
    MPI_Ibarrier(comm_, &r);
    wait(r, "barrier");
  }
  void all_reduce_host(std::vector<double>& v) override {
    if (v.empty()) return;
    std::vector<double> out(v.size());
    MPI_Request r;
    MPI_Ireduce(v.data(), rank_ == 0 ? out.data() : nullptr, int(v.size()), MPI_DOUBLE, MPI_SUM, 0,
                comm_, &r);
    wait(r, "all_reduce (host values): reduce");
    if (rank_ == 0) v = out;
    MPI_Ibcast(v.data(), int(v.size()), MPI_DOUBLE, 0, comm_, &r);
    wait(r, "all_reduce (host values): broadcast");
  }
  std::vector<uint64_t> all_gather_host(uint64_t value) override {
    std::vector<uint64_t> out(static_cast<size_t>(size_));
    MPI_Request r;
    MPI_Iallgather(&value, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_, &r);
    wait(r, "all_gather");
    return out;
  }

 protected:
  void all_reduce_now(Context& ctx, Tensor& t, ReduceOp op) override {
    std::vector<float> host = t.to_vector();  // waits for a CUDA context's queued work
    std::vector<float> sum(rank_ == 0 ? host.size() : 0);
    MPI_Request r;
    MPI_Ireduce(host.data(), rank_ == 0 ? sum.data() : nullptr, int(host.size()), MPI_FLOAT,
                MPI_SUM, 0, comm_, &r);
    wait(r, "all_reduce: reduce to rank 0");
    if (rank_ == 0) host.swap(sum);
    MPI_Ibcast(host.data(), int(host.size()), MPI_FLOAT, 0, comm_, &r);
    wait(r, "all_reduce: broadcast from rank 0");
    if (op == ReduceOp::Mean) {
      const float inv = 1.0f / float(size_);
      for (float& x : host) x *= inv;
    }
    upload(ctx, host, t);
  }
  void broadcast_now(Context& ctx, Tensor& t, int root) override {
    std::vector<float> host = t.to_vector();
    MPI_Request r;
    MPI_Ibcast(host.data(), int(host.size()), MPI_FLOAT, root, comm_, &r);
    wait(r, "broadcast");
    upload(ctx, host, t);
  }
  bool capturable(const Context& ctx) const override { return ctx.device().is_cpu(); }

 private:
  static void upload(Context& ctx, const std::vector<float>& host, Tensor& t) {
    if (ctx.device().is_cpu()) {
      std::memcpy(t.data(), host.data(), host.size() * sizeof(float));
      return;
    }
    const Tensor src = Tensor::from_vector(ctx, t.shape(), host);
    ops::copy(ctx, src, t);
    ctx.synchronize();  // `host` goes out of scope; from_vector copied it, the copy is queued
  }
  // Polls the request until it completes or the deadline passes.
  void wait(MPI_Request& r, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      int done = 0;
      MPI_Test(&r, &done, MPI_STATUS_IGNORE);
      if (done) return;
      const double waited =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_) {
        failed_ = true;
        throw CommError(detail::cat("rank ", rank_, " of ", size_, ": ", what,
                                    " did not complete within ", timeout_,
                                    " s (CUDARTS_COMM_TIMEOUT): another rank died or hangs; "
                                    "the job is aborted"));
      }
      std::this_thread::sleep_for(pause);
      if (pause < std::chrono::milliseconds(2)) pause *= 2;
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool owns_ = false, failed_ = false;
  double timeout_ = 600.0;
};

std::mutex world_mutex;
std::shared_ptr<MpiCommunicator> mpi_world;

}  // namespace
#endif

bool built_with_mpi() {
#ifdef CUDARTS_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::shared_ptr<Communicator> world_communicator() {
  if (!launched_by_mpi()) return local_communicator();
#ifdef CUDARTS_HAVE_MPI
  std::lock_guard<std::mutex> lock(world_mutex);
  if (!mpi_world) {
    mpi_world = std::make_shared<MpiCommunicator>();
    // Finalised at exit (after main returns), once nothing uses it any more.
    std::atexit([] { mpi_world.reset(); });
  }
  return mpi_world;
#else
  CUDARTS_CONFIG_CHECK(false,
                       "this process was started by an MPI launcher, but cudarts was built "
                       "without MPI (install libopenmpi-dev and rebuild; CUDARTS_MPI=ON)");
  return nullptr;
#endif
}

#ifndef CUDARTS_HAVE_NCCL
bool built_with_nccl() {
  return false;
}
std::shared_ptr<Communicator> nccl_communicator(Context&) {
  throw NotSupported("nccl_communicator: cudarts was built without NCCL");
}
#endif

void finish_job(int status) {
#ifdef CUDARTS_HAVE_MPI
  if (status != 0 && mpi_world && mpi_world->size() > 1) {
    std::fflush(stdout);
    std::fflush(stderr);
    mpi_world->abort(status);  // the other ranks may be inside a collective: end them too
  }
#else
  (void)status;
#endif
}

}  // namespace cudarts
