// The CLI's way to prewarmd: when the daemon runs (its socket answers, for the same state
// directory), `run`, `ps`, `rm`, `pool` and `claim` go through its API, so that the daemon
// knows of every instance and pool; without it (or with --no-daemon) they work alone.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/result.h"
#include "cli.h"

namespace prewarm::cli {

class DaemonClient {
 public:
  // The daemon for this CLI's state directory, if one answers on PREWARM_DAEMON_SOCKET (default
  // /run/prewarm/prewarmd.sock); nullopt otherwise, or with --no-daemon.
  static std::optional<DaemonClient> find(const Globals& g);

  struct Answer {
    int status = 0;
    nlohmann::json body;
  };
  Result<Answer> call(const std::string& method, const std::string& path,
                      const nlohmann::json& body = nullptr) const;
  // The API's error answer as an Error of its kind.
  static Error error_of(const Answer& a);

 private:
  explicit DaemonClient(std::string socket) : socket_(std::move(socket)) {}
  std::string socket_;
};

}  // namespace prewarm::cli
