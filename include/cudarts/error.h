// The exception types of cudarts and the checks that raise them. Every failure (bad input,
// CUDA/cuDNN/cuBLAS errors, I/O) throws cudarts::Error or a subclass naming its kind, with a
// message naming the thing, the value and what was expected.
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

// A bad input file: a dataset, checkpoint, genotype, architecture or log file that is missing,
// truncated, corrupt or inconsistent with the run. The programs exit with status 3.
class InputError : public Error {
 public:
  using Error::Error;
};

// An invalid configuration of a run (options that cannot be combined, values out of range).
// The programs exit with status 2, as for command-line usage errors.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Training produced a non-finite loss, gradient norm or state; the run stopped without
// writing anything from the diverged steps. The programs exit with status 4.
class DivergenceError : public Error {
 public:
  using Error::Error;
};

// A collective of a multi-process job failed or timed out (cudarts/comm.h): a rank died or
// hangs. The programs exit with status 5.
class CommError : public Error {
 public:
  using Error::Error;
};

// The exit status the programs use for an exception: 2 ConfigError, 3 InputError,
// 4 DivergenceError, 5 CommError, 1 any other failure.
int exit_status_of(const std::exception& e);

namespace detail {
[[noreturn]] void throw_error(const char* file, int line, const std::string& message);
[[noreturn]] void throw_input_error(const char* file, int line, const std::string& message);
[[noreturn]] void throw_config_error(const char* file, int line, const std::string& message);

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

// The same for bad input files (InputError) and invalid run configurations (ConfigError).
#define CUDARTS_INPUT_CHECK(cond, ...)                                           \
  do {                                                                           \
    if (!(cond))                                                                 \
      ::cudarts::detail::throw_input_error(__FILE__, __LINE__,                   \
                                           ::cudarts::detail::cat(__VA_ARGS__)); \
  } while (0)
#define CUDARTS_INPUT_FAIL(...) \
  ::cudarts::detail::throw_input_error(__FILE__, __LINE__, ::cudarts::detail::cat(__VA_ARGS__))
#define CUDARTS_CONFIG_CHECK(cond, ...)                                           \
  do {                                                                            \
    if (!(cond))                                                                  \
      ::cudarts::detail::throw_config_error(__FILE__, __LINE__,                   \
                                            ::cudarts::detail::cat(__VA_ARGS__)); \
  } while (0)
