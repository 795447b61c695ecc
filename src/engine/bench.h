// `prewarm bench startup`: cold start vs prewarm restore vs a plain `runc restore` of the same
// checkpoint (the baseline), measured in one run, as JSON.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "engine/context.h"

namespace prewarm::engine {

struct BenchOptions {
  std::filesystem::path spec_file;
  int runs = 5;
  int concurrency = 1;
  bool skip_cold = false;
};

// Returns the JSON report (medians, every sample, ratios, where the time went).
Result<std::string> bench_startup(const Context& ctx, const BenchOptions& opts);

}  // namespace prewarm::engine
