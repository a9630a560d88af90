// The NCCL communicator (include/cudarts/comm.h): one GPU per rank, the unique id broadcast
// over the MPI world, collectives on the context's stream (so they order with the step's
// kernels and are captured into CUDA graphs). An asynchronous error NCCL reports aborts the
// communicator (ncclCommAbort) and throws a CommError.
// Status: compiles; not yet run on a GPU (perf/DEVICE_LOG.md).
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include "cudarts/comm.h"
#include "cudarts/context.h"

namespace cudarts {

namespace {

#define CUDARTS_NCCL(call)                                                                \
  do {                                                                                    \
    const ncclResult_t r_ = (call);                                                       \
    if (r_ != ncclSuccess)                                                                \
      throw CommError(detail::cat("NCCL: ", #call, " failed: ", ncclGetErrorString(r_))); \
  } while (0)

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Context& ctx) : device_(ctx.device()) {
    std::shared_ptr<Communicator> world = world_communicator();  // initialises MPI
    rank_ = world->rank();
    size_ = world->size();
    world_ = std::move(world);
    ncclUniqueId id;
    if (rank_ == 0) CUDARTS_NCCL(ncclGetUniqueId(&id));
    MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
    cudaSetDevice(device_.index);
    CUDARTS_NCCL(ncclCommInitRank(&comm_, size_, id, rank_));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  void barrier() override { world_->barrier(); }
  void all_reduce_host(std::vector<double>& v) override { world_->all_reduce_host(v); }
  std::vector<uint64_t> all_gather_host(uint64_t v) override { return world_->all_gather_host(v); }

 protected:
  void all_reduce_now(Context& ctx, Tensor& t, ReduceOp op) override {
    CUDARTS_CHECK(ctx.device() == device_, "NCCL all_reduce: the context is on ",
                  ctx.device().str(), " but the communicator on ", device_.str());
    auto stream = static_cast<cudaStream_t>(ctx.stream());
    CUDARTS_NCCL(ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()), ncclFloat,
                               op == ReduceOp::Mean ? ncclAvg : ncclSum, comm_, stream));
    if (!ctx.capturing()) check_async();
  }
  void broadcast_now(Context& ctx, Tensor& t, int root) override {
    auto stream = static_cast<cudaStream_t>(ctx.stream());
    CUDARTS_NCCL(
        ncclBroadcast(t.raw(), t.raw(), size_t(t.numel()), ncclFloat, root, comm_, stream));
    if (!ctx.capturing()) check_async();
  }
  bool capturable(const Context& ctx) const override { return !ctx.device().is_cpu(); }

 private:
  // A peer's failure that NCCL has noticed (no host synchronisation here: the step stays
  // asynchronous). A peer that hangs without an error is not detected on the GPU path yet
  // (a watchdog thread is the open part, docs/DESIGN.md section 13).
  void check_async() {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async == ncclSuccess || async == ncclInProgress) return;
    ncclCommAbort(comm_);
    comm_ = nullptr;
    throw CommError(detail::cat("rank ", rank_, " of ", size_, ": NCCL reports ",
                                ncclGetErrorString(async), " (another rank died?)"));
  }

  Device device_;
  std::shared_ptr<Communicator> world_;
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool built_with_nccl() {
  return true;
}

std::shared_ptr<Communicator> nccl_communicator(Context& ctx) {
  CUDARTS_CHECK(!ctx.device().is_cpu(), "nccl_communicator: the context is on the CPU");
  return std::make_shared<NcclCommunicator>(ctx);
}

}  // namespace cudarts
