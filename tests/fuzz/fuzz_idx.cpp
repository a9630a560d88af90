// libFuzzer: the IDX reader (Fashion-MNIST), raw and gzip-compressed, and the Fashion-MNIST
// loader over a fuzzed image file with a matching label file.
#include "cudarts/data.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::expect_clean([&] { cudarts::read_idx(fuzz::write_input("input.idx", data, size)); });
  fuzz::expect_clean([&] { cudarts::read_idx(fuzz::write_input("input.idx.gz", data, size)); });
  return 0;
}
