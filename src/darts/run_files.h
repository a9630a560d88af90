// The run files' parsers (internal): log.jsonl and the checkpoint metadata of a search or
// retraining run, validated before a resume restores or rewrites anything. Separate from
// runner.cpp so that the fuzz harnesses (tests/fuzz) can drive them with arbitrary bytes.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cudarts::darts {

// log.jsonl as text: one JSON object per line whose "epoch" is its line number. Errors
// (InputError) name `path` and the line.
std::vector<nlohmann::json> parse_log(const std::string& text, const std::string& path);

// A checkpoint's metadata against its schema, the run's configuration and its log, before
// anything is restored or any file is rewritten: the position is inside the run, counters are
// in range, and the log holds the checkpoint's epochs (one more when the run was stopped
// between logging an epoch and checkpointing it). InputError for a bad file, ConfigError for a
// run resumed with a different configuration.
void validate_checkpoint_meta(const nlohmann::json& meta, const std::string& path,
                              const std::string& out_dir, const nlohmann::json& config,
                              const std::vector<std::string>& optimizers, int epochs,
                              int64_t steps_per_epoch, size_t log_lines,
                              const std::string& log_path);

}  // namespace cudarts::darts
