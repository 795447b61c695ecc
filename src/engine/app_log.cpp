// App logs: the log file as stdio, and the in-process pipe drainer for the bake instance.
#include "engine/app_log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>


namespace prewarm::engine {

Result<UniqueFd> open_app_log_file(const std::filesystem::path& log_file) {
  UniqueFd fd(::open(log_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::sys("open app log", errno, log_file.string());
  return fd;
}

Result<std::unique_ptr<LogDrain>> LogDrain::open(const std::filesystem::path& log_file) {
  PW_ASSIGN(UniqueFd file, open_app_log_file(log_file));
  int p[2];
  // The read end is non-blocking: the thread polls it together with the stop eventfd.
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe", errno, log_file.string());
  UniqueFd r(p[0]), w(p[1]);
  if (::fcntl(r.get(), F_SETFL, O_NONBLOCK) != 0)
    return Error::sys("fcntl", errno, log_file.string());
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) return Error::sys("eventfd", errno, log_file.string());
  std::unique_ptr<LogDrain> d(new LogDrain(std::move(r), std::move(w), std::move(file),
                                           std::move(stop)));
  try {
    d->thread_ = std::thread([raw = d.get()] { raw->run(); });
  } catch (const std::system_error& e) {
    return Error("start the log drain thread for " + log_file.string() + ": " + e.what(),
                 e.code().value());
  }
  return d;
}

LogDrain::LogDrain(UniqueFd read, UniqueFd write, UniqueFd file, UniqueFd stop)
    : read_(std::move(read)), write_(std::move(write)), file_(std::move(file)),
      stop_(std::move(stop)) {}

LogDrain::~LogDrain() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

void LogDrain::run() {
  char buf[65536];
  bool stopping = false;
  int after_stop = 256;  // a writer that never pauses must not hold the destructor: 16 MiB more
  for (;;) {
    if (stopping && after_stop-- == 0) break;
    // Copy whatever is readable now; EAGAIN: wait (unless stopping), 0: every writer closed.
    ssize_t n = ::read(read_.get(), buf, sizeof buf);
    if (n > 0) {
      std::lock_guard lock(mu_);
      if (error_.ok()) {
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(file_.get(), buf + off, static_cast<size_t>(n - off));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            error_ = Error::sys("write app log", w < 0 ? errno : EIO);
            break;
          }
          off += w;
          bytes_ += static_cast<uint64_t>(w);
        }
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0 || (n < 0 && errno != EAGAIN) || stopping) break;
    pollfd fds[2] = {{read_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents & POLLIN) stopping = true;  // one more non-blocking pass, then out
  }
  {
    std::lock_guard lock(mu_);
    eof_ = true;
  }
  done_cv_.notify_all();
}

bool LogDrain::wait_eof(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return done_cv_.wait_for(lock, timeout, [&] { return eof_; });
}

uint64_t LogDrain::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

Status LogDrain::status() const {
  std::lock_guard lock(mu_);
  return error_;
}

}  // namespace prewarm::engine
