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
  template <class V>
  explicit HoldList(const V& xs) {
    ts.reserve(xs.size());
    for (const Tensor* x : xs) ts.push_back(x->borrow());
  }
  const std::vector<T*>& get() {
    ptrs.clear();
    for (Tensor& t : ts) ptrs.push_back(&t);
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

template <class... P, class... A>
void dispatch(Context& ctx, void (Backend::*fn)(P...), A&&... args) {
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
