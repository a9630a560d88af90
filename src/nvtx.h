// NVTX ranges (header-only nvtx3 from the CUDA toolkit) so Nsight Systems shows layers and
// ops; a push/pop costs a branch when no profiler is attached. No-op without the toolkit.
#pragma once
#include <cstdint>

#include "cudarts/context.h"
#include "cudarts/profiler.h"
#if defined(CUDARTS_HAVE_NVTX)
#include <nvtx3/nvToolsExt.h>
#endif

namespace cudarts {

class NvtxRange {
 public:
#if defined(CUDARTS_HAVE_NVTX)
  explicit NvtxRange(const char* label) {
    nvtxRangePushA(label);
  }
  ~NvtxRange() {
    nvtxRangePop();
  }
#else
  explicit NvtxRange(const char*) {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

// One op of the op table: an NVTX range, and a timed call when an OpProfiler is attached to
// the context (not while a StepGraph captures).
class OpRange {
 public:
  OpRange(Context& ctx, const char* op) : nvtx_(op) {
    ctx.set_current_op(op);
    OpProfiler* p = ctx.op_profiler();
    if (p && !ctx.capturing()) {
      profiler_ = p;
      token_ = p->begin(op);
    }
  }
  ~OpRange() {
    if (profiler_) profiler_->end(token_);
  }
  // True when a profiler records this call (costs are worth computing).
  bool recording() const { return profiler_ != nullptr; }
  // The call's class within its op (a string literal), e.g. "depthwise".
  void set_class(const char* cls) {
    if (profiler_) profiler_->set_class(token_, cls);
  }
  // The call's cost, replacing the default that dispatch derives from the operands. Pass a
  // callable so nothing is computed without a profiler.
  template <class F>
  void set_cost(F&& cost) {
    if (profiler_) profiler_->set_cost(token_, cost(), true);
  }
  OpRange(const OpRange&) = delete;
  OpRange& operator=(const OpRange&) = delete;

 private:
  NvtxRange nvtx_;
  OpProfiler* profiler_ = nullptr;
  int64_t token_ = 0;
};

}  // namespace cudarts
