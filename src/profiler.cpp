// OpProfiler: per-op timing with CUDA events (GPU) or the host clock (CPU).
#include "cudarts/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "cuda_bridge.h"
#include "cudarts/error.h"

namespace cudarts {

OpCost& OpCost::operator+=(const OpCost& o) {
  launches += o.launches;
  bytes_read += o.bytes_read;
  bytes_written += o.bytes_written;
  flops += o.flops;
  tensor_core_flops += o.tensor_core_flops;
  return *this;
}

// Datasheet figures (NVIDIA H100 and H200 product pages, SXM form factor): memory bandwidth,
// FP32 (non-tensor) and dense TF32 tensor-core rates. Launch costs: ~4 us per eager launch and
// ~1 us per graph node, between the 2.5-6.5 us and 0.6-0.9 us reported in shared/PERF.md; the
// first GPU run of `darts_bench --model` prints the measured times beside them.
DeviceModel DeviceModel::h100_sxm() {
  return {"H100 SXM", 3.35e12, 67e12, 494.7e12, 4e-6, 1e-6};
}

DeviceModel DeviceModel::h200() {
  return {"H200", 4.8e12, 67e12, 494.7e12, 4e-6, 1e-6};
}

double DeviceModel::seconds(const OpCost& c, int64_t calls, bool graph, bool tf32) const {
  if (calls <= 0) return 0.0;
  const double n = double(calls);
  const double plain = c.flops - (tf32 ? c.tensor_core_flops : 0.0);
  const double compute = plain / fp32_flops + (tf32 ? c.tensor_core_flops / tf32_flops : 0.0);
  const double memory = (c.bytes_read + c.bytes_written) / bandwidth;
  const double launch = double(c.launches) * (graph ? graph_launch_s : eager_launch_s);
  // Per call: max(launch, roofline); the calls are alike, so n times that of the average.
  return n * std::max(launch / n, std::max(compute, memory) / n);
}

struct OpProfiler::Impl {
  explicit Impl(Context& c) : ctx(c), cuda(c.device().is_cuda()) {}
  Context& ctx;
  bool cuda;
  struct Call {
    const char* op;
    const char* cls = "";
    OpCost cost;
    bool explicit_cost = false;
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

void OpProfiler::set_class(int64_t token, const char* cls) {
  impl_->calls[size_t(token)].cls = cls;
}

void OpProfiler::set_cost(int64_t token, const OpCost& cost, bool explicit_cost) {
  Impl::Call& c = impl_->calls[size_t(token)];
  if (c.explicit_cost && !explicit_cost) return;
  c.cost = cost;
  c.explicit_cost = explicit_cost;
}

int64_t OpProfiler::current() const {
  return impl_->calls.empty() ? -1 : int64_t(impl_->calls.size()) - 1;
}

namespace {
std::vector<OpProfiler::Row> sorted_rows(std::map<std::string, OpProfiler::Row>& by_key) {
  std::vector<OpProfiler::Row> rows;
  for (auto& [key, r] : by_key) rows.push_back(r);
  std::stable_sort(
      rows.begin(), rows.end(),
      [](const OpProfiler::Row& a, const OpProfiler::Row& b) { return a.total_ms > b.total_ms; });
  return rows;
}
}  // namespace

std::vector<OpProfiler::Row> OpProfiler::report() {
  Impl& p = *impl_;
  p.ctx.synchronize();
  std::map<std::string, Row> by_key;
  for (const Impl::Call& c : p.calls) {
    Row& r = by_key[std::string(c.op) + "\n" + c.cls];
    r.op = c.op;
    r.cls = c.cls;
    ++r.calls;
    r.cost += c.cost;
    if (p.cuda) {
      if (c.stop) r.total_ms += cuda_bridge::event_elapsed_ms(c.start, c.stop);
    } else {
      r.total_ms += c.host_ms;
    }
  }
  return sorted_rows(by_key);
}

std::vector<OpProfiler::Row> OpProfiler::report_by_op() {
  std::map<std::string, Row> by_op;
  for (const Row& r : report()) {
    Row& m = by_op[r.op];
    m.op = r.op;
    m.calls += r.calls;
    m.total_ms += r.total_ms;
    m.cost += r.cost;
  }
  return sorted_rows(by_op);
}

OpCost OpProfiler::total_cost() {
  OpCost total;
  for (const Impl::Call& c : impl_->calls) total += c.cost;
  return total;
}

std::string OpProfiler::table(size_t top) {
  const std::vector<Row> rows = report();
  double total = 0.0;
  for (const Row& r : rows) total += r.total_ms;
  std::string out;
  char line[160];
  std::snprintf(line, sizeof line, "%-34s %9s %12s %7s\n", "op", "calls", "total ms", "share");
  out += line;
  for (size_t i = 0; i < rows.size() && i < top; ++i) {
    std::snprintf(line, sizeof line, "%-34s %9lld %12.3f %6.1f%%\n", rows[i].label().c_str(),
                  static_cast<long long>(rows[i].calls), rows[i].total_ms,
                  total > 0.0 ? 100.0 * rows[i].total_ms / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-34s %9s %12.3f\n", "all ops", "", total);
  out += line;
  return out;
}

void OpProfiler::reset() {
  impl_->ctx.synchronize();
  impl_->calls.clear();
  impl_->next_event = 0;
}

}  // namespace cudarts
