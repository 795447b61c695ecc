// Child processes: spawned with a pidfd, killed and reaped by the guard unless detached.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm {

struct SpawnOptions {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // KEY=VALUE entries added to (or replacing in) the environment
  int stdin_fd = -1;             // -1: /dev/null
  int stdout_fd = -1;            // -1: /dev/null unless captured
  int stderr_fd = -1;
  std::vector<std::pair<int, int>> pass_fds;  // {fd here, fd number in the child}
};

class Child {
 public:
  Child() = default;
  Child(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  Child(Child&& o) noexcept;
  Child& operator=(Child&& o) noexcept;
  ~Child();

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // Waits for exit; returns the wait status (as from waitpid), or an error on timeout.
  Result<int> wait(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());
  void kill(int sig);
  // The process outlives this guard.
  void detach() { pid_ = -1; pidfd_.reset(); }

 private:
  // Kills and reaps the child this guard holds, if any; leaves the guard empty.
  void reap() noexcept;
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

Result<Child> spawn(const SpawnOptions& opts);

struct RunResult {
  int status = 0;  // wait status
  std::string out;
  std::string err;
  bool success() const;
  // "exited with code N" / "killed by signal S"
  std::string describe() const;
};

// Runs to completion, capturing stdout and stderr (each up to 4 MiB).
Result<RunResult> run_capture(SpawnOptions opts,
                              std::chrono::milliseconds timeout = std::chrono::minutes(10));

// Runs and turns a non-zero exit into an error naming the command and quoting its stderr.
Result<std::string> run_checked(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout = std::chrono::minutes(10));

std::string join_argv(const std::vector<std::string>& argv);

// Directories searched for helper binaries first (criu, runc), then $PATH.
std::string find_executable(const std::string& name);

// Field 22 of /proc/PID/stat (start time in clock ticks since boot), nullopt when there is no
// such process: a pid with another start time is another process.
std::optional<unsigned long long> process_start_time(pid_t pid);
// Whether pid has exited and waits to be reaped (state Z in /proc/PID/stat).
bool process_is_zombie(pid_t pid);

}  // namespace prewarm
