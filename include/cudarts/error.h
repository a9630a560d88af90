// The one exception type of cudarts and the checks that raise it.
// Every failure (bad input, CUDA/cuDNN/cuBLAS errors, I/O) throws cudarts::Error
// with a message naming the thing, the value and what was expected.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace cudarts {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An op the chosen backend does not implement (there is no silent fallback).
class NotSupported : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  return s.str();
}
}  // namespace detail

}  // namespace cudarts

// CUDARTS_CHECK(condition, message parts...): throws cudarts::Error when false.
#define CUDARTS_CHECK(cond, ...)                                                               \
  do {                                                                                         \
    if (!(cond))                                                                               \
      ::cudarts::detail::throw_error(__FILE__, __LINE__, ::cudarts::detail::cat(__VA_ARGS__)); \
  } while (0)

#define CUDARTS_FAIL(...) \
  ::cudarts::detail::throw_error(__FILE__, __LINE__, ::cudarts::detail::cat(__VA_ARGS__))
