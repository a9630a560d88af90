// Shared test helpers: deterministic random host data, tensor comparison, and the
// visible skip used by every GPU-only case.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cudarts/cudarts.h"

namespace cudarts::test {

// The number of weights in ps.
inline int64_t count_weights(const std::vector<Parameter*>& ps) {
  int64_t n = 0;
  for (Parameter* p : ps) n += p->value.numel();
  return n;
}

inline std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline Tensor random_tensor(Context& ctx, const Shape& shape, uint32_t seed, float scale = 1.0f) {
  return Tensor::from_vector(ctx, shape, random_vector(size_t(shape.numel()), seed, scale));
}

// Distinct values spaced at least `gap` apart, in random order (no ties for max-pooling).
inline std::vector<float> distinct_vector(size_t n, uint32_t seed, float gap = 0.05f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (float(i) - float(n) / 2) * gap;
  std::mt19937 gen(seed);
  std::shuffle(v.begin(), v.end(), gen);
  return v;
}

// ||a - b|| / ||b|| (0 when both are zero).
inline double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (den == 0.0) return std::sqrt(num);
  return std::sqrt(num / den);
}

inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<double>& want, double rtol,
                                            double atol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "sizes differ: " << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) || std::abs(got[i] - want[i]) > atol + rtol * std::abs(want[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", want " << want[i];
  }
  return ::testing::AssertionSuccess();
}

// Runs f, expects cudarts::Error, and checks that every fragment appears in the message.
template <class F>
::testing::AssertionResult throws_with(F f, std::initializer_list<const char*> fragments) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* frag : fragments)
      if (msg.find(frag) == std::string::npos)
        return ::testing::AssertionFailure() << "message lacks '" << frag << "': " << msg;
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-cudarts exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// GTEST_SKIP with the reason, when no GPU is usable. Use at the top of GPU-only tests.
#define CUDARTS_REQUIRE_GPU()                                                                \
  do {                                                                                       \
    if (!::cudarts::Context::cuda_available())                                               \
      GTEST_SKIP() << "GPU case skipped: " << ::cudarts::Context::cuda_unavailable_reason(); \
  } while (0)

}  // namespace cudarts::test
