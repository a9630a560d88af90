// Shared by the libFuzzer harnesses: the input as a file (the readers take paths), and the
// rule that a reader may only fail with a cudarts::Error (anything else, a crash or a
// sanitizer report is a finding).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "cudarts/error.h"

namespace fuzz {

// A per-process scratch directory, made once.
inline const std::string& scratch() {
  static const std::string dir = [] {
    std::string t = "/tmp/cudarts_fuzz_XXXXXX";
    if (!mkdtemp(t.data())) std::abort();
    return t;
  }();
  return dir;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Runs f: a cudarts::Error is a clean refusal; any other exception aborts (a finding).
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const cudarts::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "non-cudarts exception escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace fuzz
