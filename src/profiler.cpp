// OpProfiler: per-op timing with CUDA events (GPU) or the host clock (CPU).
#include "cudarts/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "cuda_bridge.h"
#include "cudarts/error.h"

namespace cudarts {

struct OpProfiler::Impl {
  explicit Impl(Context& c) : ctx(c), cuda(c.device().is_cuda()) {}
  Context& ctx;
  bool cuda;
  struct Call {
    const char* op;
    void* start = nullptr;  // CUDA events (pooled), or
    void* stop = nullptr;
    double host_ms = 0.0;  // the host duration (CPU)
    std::chrono::steady_clock::time_point t0;
  };
  std::vector<Call> calls;
  std::vector<void*> events;  // every event made, reused after reset()
  size_t next_event = 0;

  void* event() {
    if (next_event == events.size())
      events.push_back(cuda_bridge::timing_event_create(ctx.device().index));
    return events[next_event++];
  }
};

OpProfiler::OpProfiler(Context& ctx) : impl_(std::make_unique<Impl>(ctx)) {
  CUDARTS_CHECK(ctx.op_profiler() == nullptr, "OpProfiler: the context on ", ctx.device().str(),
                " already has a profiler attached");
  ctx.set_op_profiler(this);
}

OpProfiler::~OpProfiler() {
  if (impl_->ctx.op_profiler() == this) impl_->ctx.set_op_profiler(nullptr);
  if (impl_->cuda) {
    try {
      impl_->ctx.synchronize();
    } catch (...) {
    }
    for (void* e : impl_->events) cuda_bridge::event_destroy(e);
  }
}

int64_t OpProfiler::begin(const char* op) {
  Impl& p = *impl_;
  Impl::Call c;
  c.op = op;
  if (p.cuda) {
    c.start = p.event();
    cuda_bridge::event_record(c.start, p.ctx.stream());
  } else {
    c.t0 = std::chrono::steady_clock::now();
  }
  p.calls.push_back(c);
  return static_cast<int64_t>(p.calls.size() - 1);
}

void OpProfiler::end(int64_t token) {
  Impl& p = *impl_;
  Impl::Call& c = p.calls[size_t(token)];
  if (p.cuda) {
    c.stop = p.event();
    cuda_bridge::event_record(c.stop, p.ctx.stream());
  } else {
    c.host_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c.t0).count();
  }
}

std::vector<OpProfiler::Row> OpProfiler::report() {
  Impl& p = *impl_;
  p.ctx.synchronize();
  std::map<std::string, Row> by_op;
  for (const Impl::Call& c : p.calls) {
    Row& r = by_op[c.op];
    r.op = c.op;
    ++r.calls;
    if (p.cuda) {
      if (c.stop) r.total_ms += cuda_bridge::event_elapsed_ms(c.start, c.stop);
    } else {
      r.total_ms += c.host_ms;
    }
  }
  std::vector<Row> rows;
  for (auto& [name, r] : by_op) rows.push_back(r);
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.total_ms > b.total_ms; });
  return rows;
}

std::string OpProfiler::table(size_t top) {
  const std::vector<Row> rows = report();
  double total = 0.0;
  for (const Row& r : rows) total += r.total_ms;
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-22s %9s %12s %7s\n", "op", "calls", "total ms", "share");
  out += line;
  for (size_t i = 0; i < rows.size() && i < top; ++i) {
    std::snprintf(line, sizeof line, "%-22s %9lld %12.3f %6.1f%%\n", rows[i].op.c_str(),
                  static_cast<long long>(rows[i].calls), rows[i].total_ms,
                  total > 0.0 ? 100.0 * rows[i].total_ms / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-22s %9s %12.3f\n", "all ops", "", total);
  out += line;
  return out;
}

void OpProfiler::reset() {
  impl_->ctx.synchronize();
  impl_->calls.clear();
  impl_->next_event = 0;
}

}  // namespace cudarts
