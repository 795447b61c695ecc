// Warm-up: requests run against a ready instance before it is checkpointed, so that the
// snapshot holds JIT-compiled code, filled caches and opened connections.
#include <string>

#include "probe/handlers.h"
#include "probe/probe.h"

namespace prewarm::probe {
namespace {

// Warm-up requests are the slow ones by design: the first hit on a route may compile code,
// fill caches or load models, which can take far longer than a readiness check. A generous
// per-request bound still stops a hung app from stalling the build forever.
constexpr spec::Millis kHttpStepTimeout{30'000};
// Commands may do heavier work (preloading data, running a script of requests).
constexpr spec::Millis kExecStepTimeout{300'000};

Status run_step(const spec::WarmupStep& step, const Target& target) {
  if (step.http_get) return check_http(*step.http_get, target.ip, kHttpStepTimeout);
  if (step.exec) return check_exec(*step.exec, target, kExecStepTimeout);
  return Error("step has no action: set httpGet or exec", EINVAL);
}

}  // namespace

Status run_warmup(const std::vector<spec::WarmupStep>& steps, const Target& target) {
  for (size_t i = 0; i < steps.size(); ++i) {
    const int repeat = steps[i].repeat;
    for (int attempt = 1; attempt <= repeat; ++attempt) {
      Status s = run_step(steps[i], target);
      if (!s.ok()) {
        // Index as in the spec's warmup list (from 0); attempts count from 1.
        return std::move(s).error().with_context("warmup[" + std::to_string(i) + "] (attempt " +
                                                 std::to_string(attempt) + "/" +
                                                 std::to_string(repeat) + ")");
      }
    }
  }
  return ok_status();
}

}  // namespace prewarm::probe
