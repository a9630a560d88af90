// Divergence guards for training loops. A guard watches each step's losses and gradient norms
// on the device (ops::count_nonfinite: no host synchronisation per step, capturable in a
// StepGraph) and remembers the first step with a non-finite value; the loop calls check()
// where it reads the device anyway (progress lines, before writing a checkpoint or a log) and
// stops with a DivergenceError naming the step and the quantity, before anything from the
// diverged steps reaches a file. check_finite() is the last line of defence for what is about
// to be written (weights, statistics, optimizer state).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cudarts/checkpoint.h"
#include "cudarts/context.h"
#include "cudarts/tensor.h"

namespace cudarts {

class DivergenceGuard {
 public:
  // quantities: the names of the values watch() receives, in order ("training loss", ...).
  DivergenceGuard(Context& ctx, std::vector<std::string> quantities);

  // One step's values: 1-element tensors on ctx's device, as many as names were given.
  void watch(Context& ctx, const std::vector<const Tensor*>& values);

  struct Status {
    int64_t steps = 0;       // watch() calls so far
    int64_t bad_steps = 0;   // calls with a non-finite value
    int64_t first_bad = -1;  // index of the first such call, or -1
    std::string quantity;    // the first non-finite value's name ("" when none)
  };
  Status status() const;  // one small host read

  // Throws DivergenceError when a watched value was non-finite: "<what>: the <quantity> is not
  // finite at <where(first bad call)> (<n> of <steps> steps); <advice>".
  void check(const std::string& what, const std::function<std::string(int64_t)>& where,
             const std::string& advice) const;

 private:
  std::vector<std::string> quantities_;
  Tensor state_;  // i32 (4): count_nonfinite's state
};

// Throws DivergenceError naming `what` and the first tensor of `tensors` holding a NaN or an
// infinity, with the element index and how many such values it holds.
void check_finite(const TensorMap& tensors, const std::string& what);

}  // namespace cudarts
