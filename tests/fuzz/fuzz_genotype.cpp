// libFuzzer: the genotype reader (genotype.json) on arbitrary text; what it accepts must
// write back to JSON that reads as the same genotype.
#include <string>

#include "cudarts/darts.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_clean([&] {
    const cudarts::darts::Genotype g = cudarts::darts::Genotype::from_json(text);
    if (!(cudarts::darts::Genotype::from_json(g.to_json()) == g)) std::abort();
  });
  return 0;
}
