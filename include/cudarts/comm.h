// Collectives for data-parallel training (issue 12; docs/DESIGN.md section 13): all-reduce,
// broadcast and barrier over the ranks of a job, on a Context's stream. Backends: "local" (one
// process; every call is a no-op), "mpi" (Open MPI or any MPI; host memory, CUDA tensors staged
// through the host) and "nccl" (CUDA tensors on the context's stream; set up from an
// MPI-broadcast unique id). Every rank receives the same bits: the MPI backend reduces to rank
// 0 and broadcasts the result, NCCL's ring and tree algorithms do the same per chunk.
//
// A collective that does not complete within the timeout (CUDARTS_COMM_TIMEOUT seconds, default
// 600: a rank died or hangs) throws a CommError naming the operation, the rank and the wait;
// the job is then aborted at exit (MPI_Abort), so no rank hangs.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudarts/error.h"
#include "cudarts/tensor.h"

namespace cudarts {

class Context;

enum class ReduceOp { Sum, Mean };

class Communicator {
 public:
  virtual ~Communicator();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "local", "mpi" or "nccl"
  // False for the local communicator only: the collectives of the others really run, even on
  // a job of one rank (so a 1-rank MPI or NCCL job exercises the whole path).
  virtual bool distributed() const { return true; }

  // In place on float32 tensors of ctx's device, ordered on ctx's stream. Inside a StepGraph
  // capture the collective is part of the graph (CPU: recorded and run at every replay; NCCL:
  // captured on the stream; MPI with CUDA tensors: refused, it needs host staging).
  void all_reduce(Context& ctx, Tensor& t, ReduceOp op);
  void broadcast(Context& ctx, Tensor& t, int root);
  // Many tensors in one flat buffer (one collective; `scratch` is resized to fit and reused).
  void all_reduce_many(Context& ctx, const std::vector<Tensor*>& ts, ReduceOp op, Tensor& scratch);

  // Host values (metrics, checksums, decisions). Not capturable.
  virtual void barrier() = 0;
  virtual void all_reduce_host(std::vector<double>& values) = 0;  // sum, same bits everywhere
  virtual std::vector<uint64_t> all_gather_host(uint64_t value) = 0;

 protected:
  // The collective on raw memory (host for the CPU, device for CUDA), run now.
  virtual void all_reduce_now(Context& ctx, Tensor& t, ReduceOp op) = 0;
  virtual void broadcast_now(Context& ctx, Tensor& t, int root) = 0;
  virtual bool capturable(const Context& ctx) const = 0;
};

// One process: rank 0 of 1.
std::shared_ptr<Communicator> local_communicator();

// The job this process belongs to: under an MPI launcher (mpirun, srun: OMPI_COMM_WORLD_SIZE,
// PMI_SIZE or PMIX_RANK in the environment) the MPI world (MPI initialised on first use and
// finalised at exit), otherwise local_communicator(). ConfigError when launched by MPI but
// built without it (CUDARTS_MPI).
std::shared_ptr<Communicator> world_communicator();
bool built_with_mpi();
bool launched_by_mpi();
// Called by a program on its way out with its exit status: a failing rank of a multi-process
// MPI job aborts the whole job (the others may be waiting in a collective) instead of
// returning. Does nothing for status 0 or a single process.
void finish_job(int status);

// CUDA contexts under MPI: a NCCL communicator over the MPI world (one GPU per rank, the
// context's device). NotSupported when built without NCCL.
std::shared_ptr<Communicator> nccl_communicator(Context& ctx);
bool built_with_nccl();

// The seconds a collective may wait (CUDARTS_COMM_TIMEOUT, default 600).
double comm_timeout_seconds();

// CRC-32 of the tensors' bytes (read to the host): what ranks compare to prove they hold the
// same weights.
uint32_t tensors_crc32(const std::vector<const Tensor*>& ts);

}  // namespace cudarts
