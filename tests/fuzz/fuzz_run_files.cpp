// libFuzzer: the run files a resume reads: log.jsonl (parse_log) and the checkpoint metadata
// (validate_checkpoint_meta against a fixed configuration). The input's first line is the
// metadata, the rest the log.
#include <string>

#include "darts/run_files.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t nl = text.find('\n');
  const std::string meta = text.substr(0, nl),
                    log = nl == std::string::npos ? "" : text.substr(nl + 1);
  const nlohmann::json config = {{"epochs", 4}, {"batch", 16}};
  fuzz::expect_clean([&] {
    const auto rows = cudarts::darts::parse_log(log, "log.jsonl");
    nlohmann::json m;
    try {
      m = nlohmann::json::parse(meta);
    } catch (const nlohmann::json::exception&) {
      return;  // the runner refuses metadata that is not JSON before validating it
    }
    cudarts::darts::validate_checkpoint_meta(m, "checkpoint.safetensors", "run", config,
                                             {"opt_w/", "opt_a/"}, 4, 6, rows.size(), "log.jsonl");
  });
  return 0;
}
