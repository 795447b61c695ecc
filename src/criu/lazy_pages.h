// Lazy restores' page serving: one `criu lazy-pages` daemon per restore, under a small
// supervisor process that prewarm owns.
//
// With `criu restore --lazy-pages` the restored tasks resume before all their memory is there;
// the daemon gets each task's userfaultfd, answers page faults and copies the rest in the
// background, then exits. If it died with pages still to copy, the kernel would let the app
// fault in zero pages (a released userfaultfd stops catching faults): silent corruption. So the
// supervisor holds its own reference to every userfaultfd (faults keep waiting while it does)
// and, when the daemon ends any other way than success, kills the instance and writes why.
//
// The supervisor is prewarm forked (not exec'd) and detached from its caller, so it outlives
// `prewarm run`; after the fork it makes only system calls. Its pid file lives in the restore's
// work dir, where instance removal finds and stops it (the daemon dies with it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace prewarm::criu {

struct LazyPagesOptions {
  std::filesystem::path images_dir;  // what the restore reads (a lazy view)
  // The restore's work dir: the daemon listens on lazy-pages.socket there, logs to
  // lazy-pages.log, and the supervisor's pid and outcome files go there too.
  std::filesystem::path work_dir;
  // Appended to when the transfer fails (the app's log), so `prewarm logs` says why it stopped.
  std::filesystem::path app_log;
  // Non-empty: the bake's trial. The daemon serves faults only (nothing in the background) and
  // records each one here ("<pid> <hex address>").
  std::filesystem::path record_faults;
  // Non-empty: the daemon gets its pages from this program instead of the images' pages files
  // (CRIU's page-server protocol on fd 3 of the program; criu/page_server.h), e.g. prewarm
  // serving them straight from the store. It runs under the supervisor beside the daemon; if it
  // fails, the daemon does, and the instance is stopped.
  std::vector<std::string> page_server_argv;
  std::chrono::milliseconds start_timeout = std::chrono::seconds(10);
};

inline constexpr const char* kLazyPagesLog = "lazy-pages.log";
inline constexpr const char* kPageServerLog = "page-server.log";  // its stderr
inline constexpr const char* kLazyPagesPidFile = "lazy-pages.pid";
// "complete <CLOCK_MONOTONIC ns>" or "failed: <why>"; absent while pages are still copied.
inline constexpr const char* kLazyPagesOutcome = "lazy-pages.outcome";

class LazyPages {
 public:
  // Starts the supervisor and the daemon; returns once the daemon listens (the restore may
  // begin). Errors carry the daemon's log lines.
  static Result<LazyPages> start(const LazyPagesOptions& opts);
  LazyPages(LazyPages&&) noexcept;
  LazyPages& operator=(LazyPages&&) noexcept;
  // Stops the supervisor and the daemon, unless detach() was called.
  ~LazyPages();

  // Once CRIU has restored the tasks (before they resume where the backend allows): the
  // supervisor takes its own reference to each userfaultfd the daemon received and watches
  // the restored root task `init` (whose death ends the pid namespace). Fails when the daemon
  // has none, or is gone.
  Status arm(pid_t init);
  pid_t supervisor_pid() const;
  pid_t daemon_pid() const;
  // The instance owns the supervisor from now on (stop_lazy_pages ends it).
  void detach();

 private:
  LazyPages();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Stops the supervisor (and with it the daemon) named by work_dir's pid file, if it still
// runs; missing is fine. Instance removal and recovery call it.
Status stop_lazy_pages(const std::filesystem::path& work_dir);

struct LazyPagesOutcome {
  enum class State { kNone, kCopying, kComplete, kFailed } state = State::kNone;
  std::string reason;                  // kFailed: why, with the daemon's log lines
  long long complete_monotonic_ns = 0;  // kComplete: when (CLOCK_MONOTONIC)
};
// What work_dir says about a lazy restore's transfer (kNone: the restore was not lazy).
LazyPagesOutcome lazy_pages_outcome(const std::filesystem::path& work_dir);

}  // namespace prewarm::criu
