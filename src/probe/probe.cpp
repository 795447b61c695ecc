// Readiness probes: one attempt (check_once) and the Kubernetes-style wait loop (wait_ready).
#include "probe/probe.h"

#include <algorithm>
#include <cerrno>
#include <optional>
#include <thread>

#include "base/clock.h"
#include "probe/handlers.h"

namespace prewarm::probe {

Status check_once(const spec::Probe& probe, const Target& target) {
  if (probe.http_get) return check_http(*probe.http_get, target.ip, probe.timeout);
  if (probe.tcp_socket) return check_tcp(*probe.tcp_socket, target.ip, probe.timeout);
  if (probe.exec) return check_exec(*probe.exec, target, probe.timeout);
  return Error("readiness probe has no handler: set httpGet, tcpSocket or exec", EINVAL);
}

Status wait_ready(const spec::Probe& probe, const Target& target, WaitStats* stats) {
  WaitStats local;
  WaitStats& st = stats ? *stats : local;
  st.attempts = 0;
  if (probe.initial_delay > spec::Millis::zero()) std::this_thread::sleep_for(probe.initial_delay);

  const int threshold = std::max(1, probe.failure_threshold);
  int failures = 0;
  for (;;) {
    // The period runs from the start of one attempt to the start of the next, so a slow
    // failing attempt doesn't add its own duration to the wait (and a fast one doesn't spin).
    const auto started = Clock::now();
    ++st.attempts;
    Status s = check_once(probe, target);
    if (s.ok()) return s;
    // Every failure so far is consecutive: the first success ends the loop.
    if (++failures >= threshold) {
      Error last = std::move(s).error();
      Error err("readiness probe failed " + std::to_string(failures) + " times; last: " +
                    last.message(),
                last.errno_value());
      if (!last.detail().empty()) return std::move(err).with_detail(last.detail());
      return err;
    }
    std::this_thread::sleep_until(started + probe.period);
  }
}

}  // namespace prewarm::probe
