// The instance's stdout/stderr. Restores and cold starts write straight into DIR/app.log
// (CRIU's inherit_fd puts any fd where the app had its pipe; runc run takes a file as stdio).
// The bake instance needs a pipe, because CRIU can checkpoint a pipe shared with the outside
// but not a host file outside the container's mounts: LogDrain copies that pipe into the log
// file on a thread of this process, nothing forked.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::engine {

// The log file itself as stdio for the app: O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600
// (the fd is dup'ed into the runtime's child; O_APPEND keeps restored and new writers from
// overwriting each other).
Result<UniqueFd> open_app_log_file(const std::filesystem::path& log_file);

// A pipe whose read end a thread drains into a log file until every writer has closed it.
// Hand write_end() to the runtime (and drop your copy with close_write_end() once the
// container holds it). The destructor never waits on the container: it stops the thread,
// copying what is already in the pipe, closes the read end (a writer left behind then gets
// EPIPE, as with any closed log) and joins.
class LogDrain {
 public:
  static Result<std::unique_ptr<LogDrain>> open(const std::filesystem::path& log_file);
  ~LogDrain();
  LogDrain(const LogDrain&) = delete;
  LogDrain& operator=(const LogDrain&) = delete;

  // The pipe's write end (-1 once closed); stays owned by the drain.
  int write_end() const { return write_.get(); }
  void close_write_end() { write_.reset(); }
  // Waits until all writers closed the pipe and everything was copied; false on timeout.
  bool wait_eof(std::chrono::milliseconds timeout);
  // Bytes copied so far.
  uint64_t bytes() const;
  // The first write error, if any (the drain stops copying after one, but keeps the pipe
  // drained so the app never blocks on a full pipe).
  Status status() const;

 private:
  LogDrain(UniqueFd read, UniqueFd write, UniqueFd file, UniqueFd stop);
  void run();

  UniqueFd read_, write_, file_, stop_;  // stop_: an eventfd the destructor signals
  mutable std::mutex mu_;
  std::condition_variable done_cv_;
  bool eof_ = false;
  uint64_t bytes_ = 0;
  Status error_;
  std::thread thread_;
};

}  // namespace prewarm::engine
