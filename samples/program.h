// The boundary of every cudarts program: command-line parsing and exception handling with one
// set of exit statuses. 0 success (or --help); 1 a runtime failure; 2 a usage error (a bad
// flag, value or combination: CLI11 parse errors and ConfigError); 3 a bad input file
// (InputError); 4 a diverged run (DivergenceError); 5 a failed collective of a multi-process job
// (CommError; the whole MPI job is then aborted). Nothing escapes as `terminate called`.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>

#include "cudarts/comm.h"
#include "cudarts/error.h"

namespace cudarts::program {

// Parses argv into app: -1 to go on, else the status to exit with (0 after --help, 2 for a
// usage error, with CLI11's message and the usage on stderr).
inline int parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

// Runs body() and turns every exception into one line on stderr and its exit status.
template <class F>
int run(const char* name, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    const std::string msg = e.what(), prefix = std::string(name) + ":";
    if (msg.compare(0, prefix.size(), prefix) == 0)  // the message names the program already
      std::fprintf(stderr, "%s\n", msg.c_str());
    else
      std::fprintf(stderr, "%s: %s\n", name, msg.c_str());
    finish_job(exit_status_of(e));  // a rank of a multi-process job: ends the job
    return exit_status_of(e);
  } catch (...) {
    std::fprintf(stderr, "%s: an unknown exception\n", name);
    finish_job(1);
    return 1;
  }
}

}  // namespace cudarts::program

// In main: parses or returns the exit status.
#define CUDARTS_PARSE(app, argc, argv)                                           \
  do {                                                                           \
    const int cudarts_parse_status = ::cudarts::program::parse(app, argc, argv); \
    if (cudarts_parse_status >= 0) return cudarts_parse_status;                  \
  } while (0)
