// Pieces the benchmarks share (internal to the engine module).
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "lifecycle/instance.h"

namespace prewarm::bench {

using engine::Context;

double median(std::vector<double> v);

// One start as `prewarm run NAME` does it (open and verify the image, then start), removed
// again; load time is counted in verify_ms and total_ms. A restore that fell back is an error.
Result<lifecycle::Started> timed_start(const Context& ctx, const std::string& name,
                                      lifecycle::StartMode mode);

}  // namespace prewarm::bench
