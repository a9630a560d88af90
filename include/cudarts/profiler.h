// OpProfiler: where a context's time goes, op by op, without Nsight. While attached, every op
// the context runs is timed: with CUDA events around it on a GPU (device time, queued work
// included), with the host clock on the CPU. report() waits for the device and returns the
// time per op name. Attaching costs two events per op: detach (destroy) for timing runs. Ops
// queued while a StepGraph captures are not timed.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudarts/context.h"

namespace cudarts {

class OpProfiler {
 public:
  explicit OpProfiler(Context& ctx);  // attaches to ctx (one profiler per context)
  ~OpProfiler();                      // detaches
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  struct Row {
    std::string op;
    int64_t calls = 0;
    double total_ms = 0.0;
  };
  // Per op name, most total time first. Synchronises the context.
  std::vector<Row> report();
  // report() as aligned text: op, calls, total ms, share of the total; the `top` largest rows.
  std::string table(size_t top = 30);
  // Forgets what was recorded so far.
  void reset();

  // Internal (the op front door): brackets one op call; begin returns a token for end.
  int64_t begin(const char* op);
  void end(int64_t token);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudarts
