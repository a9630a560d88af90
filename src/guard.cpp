// DivergenceGuard and check_finite (guard.h).
#include "cudarts/guard.h"

#include <cmath>

#include "cudarts/error.h"
#include "cudarts/ops.h"

namespace cudarts {

DivergenceGuard::DivergenceGuard(Context& ctx, std::vector<std::string> quantities)
    : quantities_(std::move(quantities)) {
  CUDARTS_CHECK(!quantities_.empty() && quantities_.size() <= 8,
                "DivergenceGuard: ", quantities_.size(), " quantities, expected 1 to 8");
  state_ = Tensor::from_vector_i32(ctx, Shape{4}, {0, -1, 0, -1});
}

void DivergenceGuard::watch(Context& ctx, const std::vector<const Tensor*>& values) {
  CUDARTS_CHECK(values.size() == quantities_.size(), "DivergenceGuard::watch: ", values.size(),
                " values for ", quantities_.size(), " quantities");
  ops::count_nonfinite(ctx, values, state_);
}

DivergenceGuard::Status DivergenceGuard::status() const {
  const std::vector<int32_t> s = state_.to_vector_i32();
  Status st;
  st.steps = s[0];
  st.first_bad = s[1];
  st.bad_steps = s[2];
  if (s[3] >= 0 && size_t(s[3]) < quantities_.size()) st.quantity = quantities_[size_t(s[3])];
  return st;
}

void DivergenceGuard::check(const std::string& what,
                            const std::function<std::string(int64_t)>& where,
                            const std::string& advice) const {
  const Status st = status();
  if (st.first_bad < 0) return;
  throw DivergenceError(detail::cat(what, ": the ", st.quantity, " is not finite at ",
                                    where(st.first_bad), " (", st.bad_steps, " of the ", st.steps,
                                    " steps watched had a non-finite value); ", advice));
}

void check_finite(const TensorMap& tensors, const std::string& what) {
  for (const auto& [name, t] : tensors) {
    if (t.dtype != DType::F32) continue;
    int64_t bad = 0, first = -1;
    for (size_t i = 0; i < t.f32.size(); ++i)
      if (!std::isfinite(t.f32[i])) {
        if (first < 0) first = int64_t(i);
        ++bad;
      }
    if (bad > 0)
      throw DivergenceError(detail::cat(what, ": tensor '", name, "' holds ", bad,
                                        " non-finite values (the first at element ", first, " is ",
                                        t.f32[size_t(first)], "); nothing was written"));
  }
}

}  // namespace cudarts
