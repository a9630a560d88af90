// OpProfiler: where a context's time goes, op by op, without Nsight, and what each op costs
// by the cost model. While attached, every op the context runs is recorded: its time (CUDA
// events around it on a GPU: device time, queued work included; the host clock on the CPU)
// and its OpCost, computed from the shapes (so the model's launches, bytes and FLOPs of the
// CUDA implementation are known on a machine without a GPU too). report() waits for the
// device and sums per op and class. Attaching costs two events per op on a GPU: detach
// (destroy) for timing runs. Ops queued while a StepGraph captures are not recorded.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudarts/context.h"

namespace cudarts {

// What one op call does, from its shapes, as the CUDA backend implements it (cuda/README.md):
// kernel launches (each cuDNN / cuBLAS call, memcpy and kernel counts one), memory traffic
// (every operand read and every output written once, accumulated outputs read as well, plus
// the extra passes an implementation makes) and floating-point operations (a multiply-add is
// two). Costs add up over calls.
struct OpCost {
  int64_t launches = 0;
  double bytes_read = 0.0, bytes_written = 0.0;
  double flops = 0.0;
  double tensor_core_flops = 0.0;  // the part of flops that TF32 tensor cores can run
  OpCost& operator+=(const OpCost& o);
};

// The throughputs the model divides by (datasheet peaks; perf/README.md says where from) and
// the cost of one launch: eager (a host-side launch, back to back on one stream) and as a
// CUDA-graph node.
struct DeviceModel {
  std::string name;
  double bandwidth = 0.0;         // bytes / s of device memory
  double fp32_flops = 0.0;        // FLOP / s without tensor cores
  double tf32_flops = 0.0;        // FLOP / s on TF32 tensor cores (dense)
  double eager_launch_s = 0.0;    // seconds per eager launch
  double graph_launch_s = 0.0;    // seconds per graph node
  static DeviceModel h100_sxm();  // H100 SXM5 80 GB
  static DeviceModel h200();      // H200 141 GB
  // Seconds the model gives a cost: per call, the larger of its launch time and its roofline
  // time max(bytes / bandwidth, flops / rate) (TF32 rate for tensor_core_flops when tf32).
  // `calls` ops of total cost c are modelled as calls equal ops.
  double seconds(const OpCost& c, int64_t calls, bool graph, bool tf32) const;
};

class OpProfiler {
 public:
  explicit OpProfiler(Context& ctx);  // attaches to ctx (one profiler per context)
  ~OpProfiler();                      // detaches
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  struct Row {
    std::string op;   // the op's name (ops::op_names())
    std::string cls;  // a class within the op ("depthwise", "pointwise", ...), or empty
    int64_t calls = 0;
    double total_ms = 0.0;
    OpCost cost;  // summed over the calls
    std::string label() const { return cls.empty() ? op : op + " [" + cls + "]"; }
  };
  // Per op and class, most total time first. Synchronises the context.
  std::vector<Row> report();
  // The rows of report() merged per op name (classes summed).
  std::vector<Row> report_by_op();
  // report() as aligned text: op [class], calls, total ms, share of the total; the `top`
  // largest rows.
  std::string table(size_t top = 30);
  // The summed cost of everything recorded.
  OpCost total_cost();
  // Forgets what was recorded so far.
  void reset();

  // Internal (the op front door): brackets one op call; begin returns a token for end.
  int64_t begin(const char* op);
  void end(int64_t token);
  void set_class(int64_t token, const char* cls);  // cls: a string literal
  // The call's cost. explicit_cost = false: a default (from the operands, one launch) that an
  // explicit cost of the same call replaces.
  void set_cost(int64_t token, const OpCost& cost, bool explicit_cost);
  // The token of the call begun last (ops do not nest), or -1.
  int64_t current() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudarts
