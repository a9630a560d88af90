// Gradient accumulation that never writes into a tensor it does not own. Contributions are
// held until take(): one is returned as given (it may be a view of another gradient, e.g. from
// Identity); several are summed in one pass (ops::add_n, left to right in the order they came:
// the same bits as adding them one by one).
#pragma once
#include <vector>

#include "cudarts/ops.h"

namespace cudarts {

struct GradSum {
  std::vector<Tensor> parts;
  Context* ctx = nullptr;

  void add(Context& c, Tensor g) {
    ctx = &c;
    parts.push_back(std::move(g));
  }
  bool defined() const { return !parts.empty(); }
  Tensor take() {
    if (parts.size() <= 1) {
      Tensor t = parts.empty() ? Tensor() : std::move(parts[0]);
      parts.clear();
      return t;
    }
    std::vector<const Tensor*> ptrs;
    for (const Tensor& p : parts) ptrs.push_back(&p);
    Tensor s = Tensor::empty(*ctx, parts[0].shape());
    ops::add_n(*ctx, ptrs, s);
    parts.clear();
    return s;
  }
};

}  // namespace cudarts
