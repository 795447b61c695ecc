// Pieces the benchmarks share (internal to the engine module).
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "engine/instance.h"

namespace prewarm::engine {

double median(std::vector<double> v);

// One start as `prewarm run NAME` does it (open and verify the image, then start), removed
// again; load time is counted in verify_ms and total_ms. A restore that fell back is an error.
Result<Started> timed_start(const Context& ctx, const std::string& name, StartMode mode);

}  // namespace prewarm::engine
