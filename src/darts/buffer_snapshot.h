// A copy of a layer's buffers (BatchNorm running statistics) to put back later: for passes
// that must leave a network as they found it (the Hessian monitor, training-step timing).
#pragma once

#include <utility>
#include <vector>

#include "cudarts/layer.h"
#include "cudarts/ops.h"

namespace cudarts::darts {

class BufferSnapshot {
 public:
  BufferSnapshot(Context& ctx, Layer& layer) {
    for (auto& [name, b] : layer.named_buffers()) {
      Tensor copy = Tensor::empty(ctx, b->shape(), b->dtype());
      ops::copy(ctx, *b, copy);
      saved_.emplace_back(b, std::move(copy));
    }
  }
  void restore(Context& ctx) {
    for (auto& [b, copy] : saved_) ops::copy(ctx, copy, *b);
  }

 private:
  std::vector<std::pair<Tensor*, Tensor>> saved_;
};

}  // namespace cudarts::darts
