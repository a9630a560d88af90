// dispatch(ctx, &Backend::op, args...): calls the backend now, or, while a StepGraph captures
// on the CPU backend, records the call. A recorded call holds what a CUDA graph would hold:
// scalars and parameter structs by value, tensors as borrowed handles (raw pointers with
// shapes, not keeping memory alive: the graph's allocator pool does that). Internal.
#pragma once
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend.h"
#include "capture.h"
#include "cudarts/context.h"
#include "cudarts/profiler.h"

namespace cudarts::detail {

// Hold<P>: the recorded form of a backend parameter of type P; get() gives it back as a P.
template <class P>
struct Hold {
  std::decay_t<P> value;
  template <class A>
  explicit Hold(A&& a) : value(std::forward<A>(a)) {}
  std::decay_t<P>& get() { return value; }
};

template <>
struct Hold<const Tensor&> {
  Tensor t;
  explicit Hold(const Tensor& x) : t(x.borrow()) {}
  const Tensor& get() { return t; }
};

template <>
struct Hold<Tensor&> {
  Tensor t;
  explicit Hold(const Tensor& x) : t(x.borrow()) {}
  Tensor& get() { return t; }
};

template <class T>
struct HoldPtr {
  Tensor t;
  bool present;
  explicit HoldPtr(const Tensor* x) : t(x ? x->borrow() : Tensor()), present(x != nullptr) {}
  T* get() { return present ? &t : nullptr; }
};
template <>
struct Hold<const Tensor*> : HoldPtr<const Tensor> {
  using HoldPtr::HoldPtr;
};
template <>
struct Hold<Tensor*> : HoldPtr<Tensor> {
  using HoldPtr::HoldPtr;
};

template <class T>
struct HoldList {
  std::vector<Tensor> ts;
  std::vector<T*> ptrs;
  std::vector<bool> present;  // a list entry may be null (the mix ops' zero candidates)
  template <class V>
  explicit HoldList(const V& xs) {
    ts.reserve(xs.size());
    for (const Tensor* x : xs) {
      ts.push_back(x ? x->borrow() : Tensor());
      present.push_back(x != nullptr);
    }
  }
  const std::vector<T*>& get() {
    ptrs.clear();
    for (size_t i = 0; i < ts.size(); ++i) ptrs.push_back(present[i] ? &ts[i] : nullptr);
    return ptrs;
  }
};
template <>
struct Hold<const std::vector<const Tensor*>&> : HoldList<const Tensor> {
  using HoldList::HoldList;
};
template <>
struct Hold<const std::vector<Tensor*>&> : HoldList<Tensor> {
  using HoldList::HoldList;
};

template <>
struct Hold<const std::vector<OptimSlot>&> {
  std::vector<Tensor> ts;  // 4 per slot: param, grad, state0, state1 (undefined when absent)
  std::vector<OptimSlot> slots;
  explicit Hold(const std::vector<OptimSlot>& xs) {
    ts.reserve(4 * xs.size());
    for (const OptimSlot& s : xs)
      for (const Tensor* t :
           {static_cast<const Tensor*>(s.param), s.grad, static_cast<const Tensor*>(s.state0),
            static_cast<const Tensor*>(s.state1)})
        ts.push_back(t ? t->borrow() : Tensor());
  }
  const std::vector<OptimSlot>& get() {
    slots.clear();
    for (size_t i = 0; i + 3 < ts.size(); i += 4) {
      auto opt = [&](size_t j) { return ts[j].defined() ? &ts[j] : nullptr; };
      slots.push_back({opt(i), opt(i + 1), opt(i + 2), opt(i + 3)});
    }
    return slots;
  }
};

// Traffic<P>::add(arg, cost): the default cost model of an operand of backend parameter type P
// (see OpCost): const tensors are read once, mutable ones written once, an optimizer slot's
// parameter and state read and written, its gradient read; scalars cost nothing.
template <class P>
struct Traffic {
  template <class A>
  static void add(const A&, OpCost&) {}
};
template <>
struct Traffic<const Tensor&> {
  static void add(const Tensor& t, OpCost& c) { c.bytes_read += double(t.nbytes()); }
};
template <>
struct Traffic<Tensor&> {
  static void add(const Tensor& t, OpCost& c) { c.bytes_written += double(t.nbytes()); }
};
template <>
struct Traffic<const Tensor*> {
  static void add(const Tensor* t, OpCost& c) {
    if (t) c.bytes_read += double(t->nbytes());
  }
};
template <>
struct Traffic<Tensor*> {
  static void add(const Tensor* t, OpCost& c) {
    if (t) c.bytes_written += double(t->nbytes());
  }
};
template <>
struct Traffic<const std::vector<const Tensor*>&> {
  static void add(const std::vector<const Tensor*>& ts, OpCost& c) {
    for (const Tensor* t : ts)
      if (t) c.bytes_read += double(t->nbytes());
  }
};
template <>
struct Traffic<const std::vector<Tensor*>&> {
  static void add(const std::vector<Tensor*>& ts, OpCost& c) {
    for (const Tensor* t : ts)
      if (t) c.bytes_written += double(t->nbytes());
  }
};
template <>
struct Traffic<const std::vector<OptimSlot>&> {
  static void add(const std::vector<OptimSlot>& slots, OpCost& c) {
    for (const OptimSlot& s : slots) {
      const double b = double(s.param->nbytes());
      const int rw = 1 + (s.state0 ? 1 : 0) + (s.state1 ? 1 : 0);
      c.bytes_read += b * (rw + 1);  // parameter, states, gradient
      c.bytes_written += b * rw;
    }
  }
};

// Aliasing: the memory ranges of an op's operands (Ranges<P>::add), checked before the call.
// An output may not overlap an input or another output, except that the elementwise ops may
// run in place (an output exactly equal to an input).
struct Range {
  const char* begin;
  size_t bytes;
  bool output;
};
template <class P>
struct Ranges {
  template <class A>
  static void add(const A&, std::vector<Range>&) {}
};
inline void add_range(const Tensor* t, bool output, std::vector<Range>& r) {
  if (t && t->defined() && t->nbytes() > 0)
    r.push_back({static_cast<const char*>(t->raw()), t->nbytes(), output});
}
template <>
struct Ranges<const Tensor&> {
  static void add(const Tensor& t, std::vector<Range>& r) { add_range(&t, false, r); }
};
template <>
struct Ranges<Tensor&> {
  static void add(const Tensor& t, std::vector<Range>& r) { add_range(&t, true, r); }
};
template <>
struct Ranges<const Tensor*> {
  static void add(const Tensor* t, std::vector<Range>& r) { add_range(t, false, r); }
};
template <>
struct Ranges<Tensor*> {
  static void add(const Tensor* t, std::vector<Range>& r) { add_range(t, true, r); }
};
template <>
struct Ranges<const std::vector<const Tensor*>&> {
  static void add(const std::vector<const Tensor*>& ts, std::vector<Range>& r) {
    for (const Tensor* t : ts) add_range(t, false, r);
  }
};
template <>
struct Ranges<const std::vector<Tensor*>&> {
  static void add(const std::vector<Tensor*>& ts, std::vector<Range>& r) {
    for (const Tensor* t : ts) add_range(t, true, r);
  }
};
template <>
struct Ranges<const std::vector<OptimSlot>&> {
  static void add(const std::vector<OptimSlot>& slots, std::vector<Range>& r) {
    for (const OptimSlot& s : slots) {
      add_range(s.param, true, r);
      add_range(s.grad, false, r);
      add_range(s.state0, true, r);
      add_range(s.state1, true, r);
      add_range(s.mask, false, r);
    }
  }
};
// Throws an Error naming the op when two ranges overlap in a way the op does not allow.
void check_ranges(const char* op, std::vector<Range>& ranges);

// The default cost of one operand list (Traffic), without launches.
template <class V>
OpCost operand_cost(const V& operands) {
  OpCost c;
  Traffic<const V&>::add(operands, c);
  return c;
}

template <class... P, class... A>
void dispatch(Context& ctx, void (Backend::*fn)(P...), A&&... args) {
  if (OpProfiler* prof = ctx.op_profiler(); prof && !ctx.capturing() && prof->current() >= 0) {
    OpCost cost;
    cost.launches = 1;
    (Traffic<P>::add(args, cost), ...);
    prof->set_cost(prof->current(), cost, false);
  }
  {
    std::vector<Range> ranges;
    (Ranges<P>::add(args, ranges), ...);
    check_ranges(ctx.current_op(), ranges);
  }
  CaptureState* cs = ctx.capture_state();
  if (cs == nullptr || cs->recording == nullptr) {
    ctx.backend().activate();
    (ctx.backend().*fn)(std::forward<A>(args)...);
    return;
  }
  auto held = std::make_shared<std::tuple<Hold<P>...>>(Hold<P>(std::forward<A>(args))...);
  cs->recording->push_back(
      [held, fn](Backend& b) { std::apply([&](auto&... h) { (b.*fn)(h.get()...); }, *held); });
}

}  // namespace cudarts::detail
