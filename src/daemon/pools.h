// Warm pools: per image, `min` instances kept restored and parked (frozen, attached, not
// personalised) by a background refill at a lower CPU priority, so that a claim is a thaw and
// a probe; at most `max` instances of the image (parked and claimed) exist through the pool.
// Pools are kept in STATE/pools.json, so a restarted daemon keeps them (and finds the parked
// instances, which recovery adopts).
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"
#include "daemon/events.h"
#include "daemon/metrics.h"
#include "engine/context.h"
#include "images/load.h"
#include "lifecycle/instance.h"

namespace prewarm::daemon {

struct PoolSpec {
  std::string image;
  int min = 1;
  int max = 16;
  std::string paging;  // as for `prewarm run --paging`; "" the image's default
};
Result<PoolSpec> pool_from_json(const nlohmann::json& j, const std::string& image);
nlohmann::json to_json(const PoolSpec& p);

struct PoolStatus {
  PoolSpec spec;
  int parked = 0;
  int claimed = 0;  // ready instances of the image
  std::string last_error;  // of the last refill that failed, "" after one that succeeded
};

class Pools {
 public:
  Pools(const engine::Context& ctx, Metrics& metrics, Events& events);
  ~Pools();

  // Reads STATE/pools.json (pools set before a restart), then starts refilling.
  Status start();
  void stop();

  // Adds or changes a pool; the image must exist. Refills start at once.
  Status set(const PoolSpec& spec);
  // Removes the pool and its parked instances (claimed ones stay).
  Status remove(const std::string& image);
  std::vector<PoolStatus> list();
  std::optional<PoolStatus> get(const std::string& image);
  // A parked instance made ready; with none parked, one restored at once when the pool is
  // under max (kUnavailable when it is at max, kNotFound for an image without a pool).
  Result<lifecycle::Started> claim(const std::string& image, const lifecycle::StartOptions& opts,
                                   bool* from_pool);

 private:
  struct Pool {
    PoolSpec spec;
    std::optional<images::LoadedImage> img;
    std::string last_error;
  };
  Status save_locked();
  Result<images::LoadedImage> image_for(const PoolSpec& spec);
  // Parked and ready instances of the image, from the records.
  std::pair<int, int> count(const images::LoadedImage& img);
  void refill_loop();

  const engine::Context& ctx_;
  Metrics& metrics_;
  Events& events_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Pool> pools_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace prewarm::daemon
