// cudarts::Error construction: message first, then the source location.
#include "cudarts/error.h"

namespace cudarts::detail {

void throw_error(const char* file, int line, const std::string& message) {
  std::string f = file;
  const auto pos = f.rfind("/src/") != std::string::npos ? f.rfind("/src/") : f.rfind("/cuda/");
  if (pos != std::string::npos) f = f.substr(pos + 1);
  throw Error(message + " [" + f + ":" + std::to_string(line) + "]");
}

}  // namespace cudarts::detail
