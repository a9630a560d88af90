// The run files' parsers (run_files.h).
#include "run_files.h"

#include <sstream>

#include "cudarts/error.h"

namespace cudarts::darts {

using json = nlohmann::json;

std::vector<json> parse_log(const std::string& text, const std::string& path) {
  std::vector<json> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    json row;
    try {
      row = json::parse(line);
    } catch (const std::exception&) {
      CUDARTS_INPUT_FAIL("'", path, "': line ", rows.size() + 1, " is not valid JSON");
    }
    CUDARTS_INPUT_CHECK(
        row.is_object() && row.contains("epoch") && row["epoch"].is_number_integer() &&
            row["epoch"].get<int64_t>() == int64_t(rows.size()) + 1,
        "'", path, "': line ", rows.size() + 1, " is not the log of epoch ", rows.size() + 1);
    rows.push_back(std::move(row));
  }
  return rows;
}

void validate_checkpoint_meta(const json& m, const std::string& path, const std::string& out_dir,
                              const json& config, const std::vector<std::string>& optimizers,
                              int epochs, int64_t steps_per_epoch, size_t log_lines,
                              const std::string& log_path) {
  CUDARTS_INPUT_CHECK(m.is_object(), "'", path, "': the cudarts metadata is not an object");
  auto integer = [&](const std::string& key, int64_t lo, int64_t hi) {
    CUDARTS_INPUT_CHECK(m.contains(key) && m.at(key).is_number_integer(), "'", path,
                        "': metadata '", key, "' is missing or not an integer");
    const json& j = m.at(key);
    // Integers beyond int64 (unsigned) are out of range, not wrapped.
    CUDARTS_INPUT_CHECK(!j.is_number_unsigned() || j.get<uint64_t>() <= uint64_t(INT64_MAX), "'",
                        path, "': metadata '", key, "' is ", j.dump(), ", expected ", lo, "..", hi);
    const int64_t v = j.get<int64_t>();
    CUDARTS_INPUT_CHECK(v >= lo && v <= hi, "'", path, "': metadata '", key, "' is ", v,
                        ", expected ", lo, "..", hi);
    return v;
  };
  CUDARTS_INPUT_CHECK(m.contains("config") && m.at("config").is_object(), "'", path,
                      "': metadata 'config' is missing");
  CUDARTS_CONFIG_CHECK(m.at("config") == config, "--resume: the run in '", out_dir,
                       "' was started with a different configuration:\n  saved:   ",
                       m.at("config").dump(), "\n  current: ", config.dump());
  const int64_t epoch = integer("epoch", 0, epochs);
  const int64_t step = integer("step", 0, epoch < epochs ? steps_per_epoch - 1 : 0);
  CUDARTS_INPUT_CHECK(m.contains("rng_offset") && m.at("rng_offset").is_number_unsigned(), "'",
                      path, "': metadata 'rng_offset' is missing or not an unsigned integer");
  for (const std::string& prefix : optimizers)
    integer(prefix + "steps", 0, (epoch + 1) * steps_per_epoch);
  CUDARTS_INPUT_CHECK(log_lines == size_t(epoch) || log_lines == size_t(epoch) + 1, "'", log_path,
                      "' holds ", log_lines, " epochs but the checkpoint is at epoch ", epoch,
                      " step ", step, "; the two do not belong together");
}

}  // namespace cudarts::darts
