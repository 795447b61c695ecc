// TCP client sockets bounded by one deadline: non-blocking connect and fd waits (internal).
#pragma once

#include <string>

#include "base/clock.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "spec/app_spec.h"

namespace prewarm::probe {

// One budget shared by every step of an operation (connect, send, receive), so that a slow
// connect leaves less time for the response instead of restarting the clock.
class Deadline {
 public:
  explicit Deadline(spec::Millis budget) : budget_(budget), at_(Clock::now() + budget) {}

  // Milliseconds left, rounded up so that poll() never spins with a 0 timeout early; 0 once
  // the deadline has passed.
  int poll_ms() const;
  bool expired() const { return Clock::now() >= at_; }
  // "timed out after N ms" with ETIMEDOUT.
  Error timed_out() const;

 private:
  spec::Millis budget_;
  Clock::time_point at_;
};

// Connects to an IPv4 address; the socket is non-blocking, close-on-exec and has TCP_NODELAY.
// Errors: "connection refused", "timed out after N ms", "connect: <strerror>".
Result<UniqueFd> connect_tcp(const std::string& ip, int port, const Deadline& deadline);

// Waits until `fd` is ready for `events` (POLLIN/POLLOUT) or the deadline passes.
Status wait_fd(int fd, short events, const Deadline& deadline);

}  // namespace prewarm::probe
