// The prewarm binary as a user runs it, for the e2e tests: its exit status and output.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/subprocess.h"

namespace prewarm::testing {

// Runs `prewarm ARGS...` with env added to the environment (a failure to run it at all fails
// the test and returns an empty result).
inline RunResult run_prewarm(const std::vector<std::string>& args,
                             const std::vector<std::string>& env) {
  SpawnOptions o;
  o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = env;
  auto r = run_capture(o, std::chrono::minutes(5));
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : RunResult{};
}

}  // namespace prewarm::testing
