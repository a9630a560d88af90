// cudarts::Error construction: message first, then the source location.
#include "cudarts/error.h"

namespace cudarts {

int exit_status_of(const std::exception& e) {
  if (dynamic_cast<const ConfigError*>(&e)) return 2;
  if (dynamic_cast<const InputError*>(&e)) return 3;
  if (dynamic_cast<const DivergenceError*>(&e)) return 4;
  if (dynamic_cast<const CommError*>(&e)) return 5;
  return 1;
}

namespace detail {

namespace {
std::string located(const char* file, int line, const std::string& message) {
  std::string f = file;
  const auto pos = f.rfind("/src/") != std::string::npos ? f.rfind("/src/") : f.rfind("/cuda/");
  if (pos != std::string::npos) f = f.substr(pos + 1);
  return message + " [" + f + ":" + std::to_string(line) + "]";
}
}  // namespace

void throw_error(const char* file, int line, const std::string& message) {
  throw Error(located(file, line, message));
}

void throw_input_error(const char* file, int line, const std::string& message) {
  throw InputError(located(file, line, message));
}

void throw_config_error(const char* file, int line, const std::string& message) {
  throw ConfigError(located(file, line, message));
}

}  // namespace detail
}  // namespace cudarts
