// prewarmd's lifecycle events: a bounded backlog with sequence numbers, which the event stream
// (GET /v1/events, JSON lines) replays from a given sequence and then follows.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace prewarm::daemon {

class Events {
 public:
  // Adds seq and time to the event (an object with at least "type").
  void publish(nlohmann::json event);
  // Events with seq > after, waiting up to `wait_ms` for one when there is none; empty on
  // timeout or once closed.
  std::vector<nlohmann::json> since(uint64_t after, int wait_ms);
  void close();
  bool closed() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<nlohmann::json> backlog_;
  uint64_t seq_ = 0;
  bool closed_ = false;
};

}  // namespace prewarm::daemon
