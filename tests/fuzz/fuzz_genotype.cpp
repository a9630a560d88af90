// libFuzzer: the genotype readers (genotype.json and the DARTS reference's Python notation,
// whole files with a name too) on arbitrary text; what they accept must write back to JSON
// (and, without a fixed reduction cell, to the Python notation) that reads as the same
// genotype.
#include <string>

#include "cudarts/darts.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using cudarts::darts::Genotype;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto roundtrip = [](const Genotype& g) {
    if (!(Genotype::from_json(g.to_json()) == g)) std::abort();
    if (g.reduce_cell.empty() && !(Genotype::from_python(g.to_python()) == g)) std::abort();
  };
  fuzz::expect_clean([&] { roundtrip(Genotype::parse(text)); });
  fuzz::expect_clean([&] { roundtrip(Genotype::from_python(text, "DARTS")); });
  return 0;
}
