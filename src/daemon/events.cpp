#include "daemon/events.h"

#include <chrono>

#include "base/clock.h"

namespace prewarm::daemon {
namespace {
constexpr size_t kBacklog = 4096;
}

void Events::publish(nlohmann::json event) {
  {
    std::lock_guard l(mu_);
    event["seq"] = ++seq_;
    event["time"] = now_rfc3339();
    backlog_.push_back(std::move(event));
    if (backlog_.size() > kBacklog) backlog_.pop_front();
  }
  cv_.notify_all();
}

std::vector<nlohmann::json> Events::since(uint64_t after, int wait_ms) {
  std::unique_lock l(mu_);
  cv_.wait_for(l, std::chrono::milliseconds(wait_ms), [&] { return closed_ || seq_ > after; });
  std::vector<nlohmann::json> out;
  for (const auto& e : backlog_)
    if (e["seq"].get<uint64_t>() > after) out.push_back(e);
  return out;
}

void Events::close() {
  {
    std::lock_guard l(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool Events::closed() const {
  std::lock_guard l(mu_);
  return closed_;
}

}  // namespace prewarm::daemon
