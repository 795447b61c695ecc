// On-demand activation (`prewarm serve`): a TCP listener in front of an image's instances.
// Each connection is forwarded to a ready instance with a free slot; when there is none, one is
// claimed from the parked ones (kept at `min`) or restored, up to `max` instances; connections
// beyond that wait for a slot. Instances idle for `idle_timeout` are removed, so a service
// scales to zero and its next request waits for one restore (or one claim).
#pragma once

#include <chrono>
#include <filesystem>
#include <condition_variable>
#include <memory>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "engine/context.h"
#include "images/load.h"

namespace prewarm::daemon {

struct ActivationOptions {
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;  // 0: any free port (port() says which)
  int min = 0;          // instances kept parked, claimed first
  int max = 4;          // instances at most, ready and starting (parked not counted)
  int concurrency = 4;  // connections an instance takes before another one is started
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  int target_port = 0;  // the app's port; 0: the spec's first port, else its probe's
  std::function<void(const std::string&)> say;  // progress lines (instances started/removed)
};

struct ActivationStats {
  int started = 0;      // instances restored for connections
  int claimed = 0;      // instances claimed from the parked ones
  int removed_idle = 0;
  int peak_instances = 0;
  int connections = 0;
};

class Activator {
 public:
  Activator(const engine::Context& ctx, images::LoadedImage img, ActivationOptions opts);
  ~Activator();
  Status start();
  // Stops listening, closes connections and removes every instance this activator made.
  void stop();
  int port() const { return port_; }
  // STATE/serve/<host>:<port>.json: the instances this activator owns (ready ones and the parked
  // ones it made), rewritten as they change. A serve that starts on the address removes what
  // the file lists (only a dead serve leaves it: the address was free to bind), so one killed
  // with SIGKILL leaks nothing past the next start.
  std::filesystem::path owned_file() const;
  ActivationStats stats();
  int instances();  // ready and starting

 private:
  struct Backend {
    std::string id, ip;
    int active = 0;
    std::chrono::steady_clock::time_point last_used;
  };
  void accept_loop();
  void handle(UniqueFd client);
  // A backend with a free slot (active already counted), or an error when none could be made.
  Result<std::shared_ptr<Backend>> acquire();
  void release(const std::shared_ptr<Backend>& b);
  void housekeeping_loop();

  const engine::Context& ctx_;
  images::LoadedImage img_;
  ActivationOptions opts_;
  UniqueFd listener_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Backend>> backends_;
  int starting_ = 0, waiting_ = 0;
  bool stopping_ = false;
  ActivationStats stats_;
  std::string last_error_;
  std::thread acceptor_, housekeeper_;
  std::vector<int> open_fds_;  // of connections in flight, shut down by stop()
  int handlers_ = 0;
  std::vector<std::string> parked_by_us_;
  // Writes owned_file() from backends_ and parked_by_us_; called with mu_ held.
  void save_owned_locked();
  // Removes what a serve that died on this address left.
  void remove_left_by_previous();
};

}  // namespace prewarm::daemon
