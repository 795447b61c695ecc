// Pieces the benchmarks share (internal to the engine module).
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "images/load.h"
#include "lifecycle/instance.h"

namespace prewarm::bench {

using engine::Context;

double median(std::vector<double> v);

struct BaselineSample {
  double restore_ms = 0;  // runc restore
  double probe_ms = 0;    // until ready
  double total_ms = 0;
};
// A plain `runc restore` of the image's checkpoint (eager), prepared outside the timed part,
// then removed.
Result<BaselineSample> baseline_sample(const Context& ctx, const images::LoadedImage& img);

// One start as `prewarm run NAME` does it (open and verify the image, then start), removed
// again; load time is counted in verify_ms and total_ms. A restore that fell back is an error.
Result<lifecycle::Started> timed_start(const Context& ctx, const std::string& name,
                                      lifecycle::StartMode mode);

}  // namespace prewarm::bench
