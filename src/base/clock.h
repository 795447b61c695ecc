// Monotonic time helpers for phase timings, and wall-clock timestamps.
#pragma once

#include <chrono>
#include <string>

namespace prewarm {

using Clock = std::chrono::steady_clock;

class Stopwatch {
 public:
  Stopwatch() : start_(Clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  double millis() const { return seconds() * 1000.0; }
  void restart() { start_ = Clock::now(); }

 private:
  Clock::time_point start_;
};

// Now, UTC, as RFC 3339 with milliseconds: "2026-11-29T10:12:09.123Z".
std::string now_rfc3339();

}  // namespace prewarm
