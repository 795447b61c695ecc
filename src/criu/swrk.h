// Module-internal: the `criu swrk` transport shared by the one-shot client (rpc_client.cpp) and
// the restore session (session.cpp). Includes the generated rpc.pb.h, so never include it from
// a public header.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "rpc.pb.h"

namespace prewarm::criu::detail {

// Fds handed to CRIU are moved at or above this, clear of 0-2 and the swrk socket (3), so the
// child's dup2 sequence cannot overwrite one with another.
inline constexpr int kMinPassedFd = 10;

inline constexpr const char* kSetupHint =
    "install CRIU 4.2.1 with scripts/setup.sh or set PREWARM_CRIU";

std::string type_name(criu_req_type t);
// A CLOEXEC duplicate of fd at or above kMinPassedFd (the original is closed).
Result<UniqueFd> move_high(UniqueFd fd, std::string_view what);
// An O_DIRECTORY fd of dir, moved high.
Result<UniqueFd> open_dir(const std::filesystem::path& dir);

// One `criu swrk 3` child and our end of its SOCK_SEQPACKET socket. The guard kills and reaps
// criu unless it was reaped by finish().
class Swrk {
 public:
  // Spawns criu with `env` (KEY=VALUE) added to ours. pass_fds (all >= kMinPassedFd) are
  // handed to it at the same numbers.
  static Result<Swrk> spawn(std::string what, const std::vector<int>& pass_fds,
                            std::chrono::steady_clock::time_point deadline,
                            std::vector<std::string> env = {});

  pid_t pid() const { return child_.pid(); }
  const std::string& what() const { return what_; }
  std::chrono::milliseconds left() const;

  Status send(const criu_req& req);
  // The next message from criu, waiting until the deadline (then criu is killed). Fds criu
  // sends along (orphan-pts-master) are closed.
  Result<criu_resp> receive();
  // An error saying what went wrong with criu, its exit status and its stderr: waits briefly
  // for criu to finish (killing it if it does not).
  Error failure(std::string message, int err);
  // Reaps criu after its last answer (it exits on its own without keep_open).
  void finish();
  // Ends a keep_open session: closes our end (criu exits on EOF) and reaps criu.
  void close();
  void kill() { child_.kill(SIGKILL); }

 private:
  Swrk() = default;
  std::string what_;
  std::chrono::steady_clock::time_point deadline_;
  UniqueFd sock_;
  UniqueFd err_fd_;
  Child child_;
};

// Turns an unsuccessful or mismatched answer into an error carrying CRIU's reason and, when the
// request used a log file, the log lines around the failure under criu_log_heading (which says
// when the request's log level kept the log short).
Status check_response(const criu_resp& resp, criu_req_type type, std::string_view hint,
                      const std::optional<std::filesystem::path>& log_file, int log_level = 4);

}  // namespace prewarm::criu::detail
