// Gradient accumulation that never writes into a tensor it does not own: the first
// contribution is kept as given (it may be a view of another gradient, e.g. from Identity);
// the second allocates the sum; later ones add in place.
#pragma once
#include "cudarts/ops.h"

namespace cudarts {

struct GradSum {
  Tensor sum;
  bool owned = false;

  void add(Context& ctx, Tensor g) {
    if (!sum.defined()) {
      sum = std::move(g);
    } else if (!owned) {
      Tensor s = Tensor::empty(ctx, g.shape());
      ops::add(ctx, sum, g, s);
      sum = std::move(s);
      owned = true;
    } else {
      ops::axpy(ctx, 1.0f, g, sum);
    }
  }
  bool defined() const { return sum.defined(); }
  Tensor take() {
    owned = false;
    return std::move(sum);
  }
};

}  // namespace cudarts
