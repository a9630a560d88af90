// libFuzzer: the CIFAR-10 binary reader over a fuzzed test_batch.bin.
#include "cudarts/data.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::write_input("test_batch.bin", data, size);
  fuzz::expect_clean([&] { cudarts::load_cifar10(fuzz::scratch(), false); });
  return 0;
}
