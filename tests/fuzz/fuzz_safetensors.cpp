// libFuzzer: the safetensors reader (checkpoints) on arbitrary bytes, with and without
// required checksums.
#include "cudarts/checkpoint.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input("input.safetensors", data, size);
  for (bool require : {false, true})
    fuzz::expect_clean([&] {
      std::map<std::string, std::string> md;
      cudarts::load_safetensors(path, &md, require);
    });
  return 0;
}
