// The lazy-pages supervisor: fork (twice, so it is nobody's child), the daemon exec'd below it,
// a socket to the caller. Everything after the fork is a system call: the caller may have threads.
#include "criu/lazy_pages.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"

extern char** environ;

namespace prewarm::criu {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;

constexpr int kMaxUffds = 1024;
constexpr const char* kRecordEnv = "CRIU_LAZY_PAGES_RECORD";

// Caller -> supervisor: arm with the restored root task's pid.
struct ArmMsg {
  pid_t init = 0;
};
// Supervisor -> caller: first its own and the daemon's pid, then the arm answer (uffds taken,
// or -errno).
struct Hello {
  pid_t supervisor = 0;
  pid_t daemon = 0;
};

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_getfd(int pidfd, int fd) { return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, fd, 0)); }
int pidfd_kill(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// --- async-signal-safe helpers for the supervisor ---

// Appends decimal v to buf at *at (bounded by cap).
void put_num(char* buf, size_t cap, size_t* at, long long v) {
  char tmp[24];
  int n = 0;
  bool neg = v < 0;
  unsigned long long u = neg ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
  do {
    tmp[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u && n < 23);
  if (neg && *at < cap) buf[(*at)++] = '-';
  while (n > 0 && *at < cap) buf[(*at)++] = tmp[--n];
}

void put_str(char* buf, size_t cap, size_t* at, const char* s) {
  while (*s && *at < cap) buf[(*at)++] = *s++;
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void write_file_raw(const char* path, const char* text, size_t n, bool append) {
  if (!path || !*path) return;
  if (append) {
    int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_APPEND, 0600);
    if (fd < 0) return;
    write_all(fd, text, n);
    ::close(fd);
    return;
  }
  // Whole or not at all: readers poll this file.
  char tmp[4200];
  size_t at = 0;
  put_str(tmp, sizeof tmp - 1, &at, path);
  put_str(tmp, sizeof tmp - 1, &at, ".tmp");
  tmp[at] = '\0';
  int fd = ::open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  write_all(fd, text, n);
  ::close(fd);
  ::rename(tmp, path);
}

bool read_full(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Takes a reference to every userfaultfd open in `daemon`. Returns how many, or -errno.
int take_uffds(pid_t daemon, int daemon_pidfd, int* out, int cap) {
  char path[64];
  size_t at = 0;
  put_str(path, sizeof path - 1, &at, "/proc/");
  put_num(path, sizeof path - 1, &at, daemon);
  put_str(path, sizeof path - 1, &at, "/fd");
  path[at] = '\0';
  int dir = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return -errno;
  int n = 0;
  alignas(8) char buf[4096];
  for (;;) {
    long got = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (got < 0) {
      int e = errno;
      ::close(dir);
      return -e;
    }
    if (got == 0) break;
    for (long off = 0; off < got;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + off);
      off += d->d_reclen;
      if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
      char link[64];
      ssize_t l = ::readlinkat(dir, d->d_name, link, sizeof link - 1);
      if (l <= 0) continue;
      link[l] = '\0';
      static constexpr char kUffd[] = "anon_inode:[userfaultfd]";
      if (static_cast<size_t>(l) != sizeof kUffd - 1 || std::memcmp(link, kUffd, sizeof kUffd - 1) != 0)
        continue;
      int fdnum = 0;
      for (const char* c = d->d_name; *c; ++c) fdnum = fdnum * 10 + (*c - '0');
      if (n >= cap) break;
      int fd = pidfd_getfd(daemon_pidfd, fdnum);
      if (fd < 0) {
        int e = errno;
        ::close(dir);
        for (int i = 0; i < n; ++i) ::close(out[i]);
        return -e;
      }
      out[n++] = fd;
    }
  }
  ::close(dir);
  return n;
}

struct SupervisorArgs {
  const char* criu = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* server = nullptr;  // the page server program, or null
  char* const* server_argv = nullptr;
  const char* server_log = nullptr;  // its stderr
  const char* outcome_path = nullptr;
  const char* app_log = nullptr;
  int sock = -1, status_w = -1, devnull = -1;
};

// Closes every fd but the `keep` ones (sorted): the supervisor is a fork, not an exec, and
// must not hold the caller's files (an instance lock held through a copy would never drop).
void close_all_but(const int* keep, int n) {
  unsigned from = 0;
  for (int i = 0; i < n; ++i) {
    if (keep[i] < 0) continue;
    if (static_cast<unsigned>(keep[i]) > from)
      ::syscall(SYS_close_range, from, static_cast<unsigned>(keep[i]) - 1, 0);
    from = static_cast<unsigned>(keep[i]) + 1;
  }
  ::syscall(SYS_close_range, from, ~0U, 0);
}

[[noreturn]] void supervise(const SupervisorArgs& a) {
  {
    int keep[3] = {a.sock, a.status_w, a.devnull};
    for (int i = 0; i < 3; ++i)  // sort (tiny)
      for (int j = i + 1; j < 3; ++j)
        if (keep[j] < keep[i]) std::swap(keep[i], keep[j]);
    close_all_but(keep, 3);
    for (int fd = 0; fd < 3; ++fd)
      if (fd != a.devnull) ::dup2(a.devnull, fd);
  }
  ::setsid();
  ::prctl(PR_SET_NAME, "prewarm-lazy", 0, 0, 0);
  // The app's page faults wait on this tree: normal priority even when the restore was started
  // from a low-priority thread (a pool's refill).
  struct sched_param normal {};
  ::sched_setscheduler(0, SCHED_OTHER, &normal);
  ::setpriority(PRIO_PROCESS, 0, 0);
  // Default dispositions: the caller's handlers mean nothing here.
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(sig, SIG_DFL);
  // A caller that went away must not take the supervisor (and the app's pages) with it.
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  const pid_t self = ::getpid();
  // The page server's end is fd 3 in it; the daemon's is fd 4 (its --ps-socket). The page
  // server starts once the restore is done (at the arm): the daemon asks for nothing before
  // the tasks run, and its start-up then does not compete with CRIU's restore for the CPUs.
  int ps[2] = {-1, -1};
  pid_t server = 0;
  if (a.server && ::socketpair(AF_UNIX, SOCK_STREAM, 0, ps) != 0) ps[0] = ps[1] = -1;
  auto start_server = [&]() {
    if (ps[1] < 0) return;
    server = ::fork();
    if (server == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      if (::getppid() != self) ::_exit(127);
      ::signal(SIGPIPE, SIG_DFL);
      // Out of the way of the numbers dup2 fills below.
      const int sock = ::fcntl(ps[1], F_DUPFD, 10);
      const int log = a.server_log ? ::open(a.server_log, O_WRONLY | O_CREAT | O_APPEND, 0600) : -1;
      if (log >= 0) ::dup2(log, 2);
      if (sock < 0 || ::dup2(sock, 3) < 0) ::_exit(127);
      ::syscall(SYS_close_range, 4, ~0U, 0);
      ::execve(a.server, a.server_argv, a.envp);
      ::_exit(127);
    }
    ::close(ps[1]);
    ps[1] = -1;
  };
  pid_t daemon = ::fork();
  if (daemon == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (::getppid() != self) ::_exit(127);
    ::signal(SIGPIPE, SIG_DFL);
    const int status_fd = ::fcntl(a.status_w, F_DUPFD, 10);
    const int sock = ps[0] >= 0 ? ::fcntl(ps[0], F_DUPFD, 10) : -1;
    if (status_fd < 0 || ::dup2(status_fd, 3) < 0) ::_exit(127);
    if (sock >= 0 && ::dup2(sock, 4) < 0) ::_exit(127);
    ::syscall(SYS_close_range, ps[0] >= 0 ? 5 : 4, ~0U, 0);
    ::execve(a.criu, a.argv, a.envp);
    ::_exit(127);
  }
  ::close(a.status_w);
  if (ps[0] >= 0) ::close(ps[0]);
  if (a.server && ps[1] < 0) {
    // No page server: the daemon cannot serve anything.
    if (daemon > 0) ::kill(daemon, SIGKILL);
  }
  Hello hello{self, daemon};
  write_all(a.sock, reinterpret_cast<const char*>(&hello), sizeof hello);
  if (daemon < 0) ::_exit(1);

  int daemon_pidfd = pidfd_open(daemon);
  int init_pidfd = -1;
  int uffds[kMaxUffds];
  int nuffd = 0;
  bool armed = false;
  bool ctl_open = true;
  for (;;) {
    struct pollfd p[2] = {{daemon_pidfd, POLLIN, 0}, {ctl_open ? a.sock : -1, POLLIN, 0}};
    int r = ::poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      ArmMsg m;
      if (!read_full(a.sock, &m, sizeof m)) {
        // The caller is gone. Before the arm that means its restore never finished: nothing
        // to serve. After it, the instance is on its own: keep serving.
        ctl_open = false;
        if (!armed) {
          ::kill(daemon, SIGKILL);
          ::waitpid(daemon, nullptr, 0);
          ::_exit(2);
        }
        continue;
      }
      int answer = take_uffds(daemon, daemon_pidfd, uffds, kMaxUffds);
      start_server();
      if (answer > 0) {
        nuffd = answer;
        init_pidfd = pidfd_open(m.init);
        if (init_pidfd < 0) answer = -errno;
      }
      if (answer == 0) answer = -ENOENT;
      armed = answer > 0;
      write_all(a.sock, reinterpret_cast<const char*>(&answer), sizeof answer);
      continue;
    }
    if (p[0].revents) break;
  }
  int status = 0;
  while (::waitpid(daemon, &status, 0) < 0 && errno == EINTR) {
  }
  char text[512];
  size_t at = 0;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    struct timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    put_str(text, sizeof text, &at, "complete ");
    put_num(text, sizeof text, &at, static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec);
    put_str(text, sizeof text, &at, "\n");
    write_file_raw(a.outcome_path, text, at, false);
  } else {
    // The app must not run on with pages that will never come: stop it while its faults still
    // wait on our references.
    if (init_pidfd >= 0) pidfd_kill(init_pidfd, SIGKILL);
    put_str(text, sizeof text, &at, "failed: the page server (criu lazy-pages, pid ");
    put_num(text, sizeof text, &at, daemon);
    if (WIFSIGNALED(status)) {
      put_str(text, sizeof text, &at, ") was killed by signal ");
      put_num(text, sizeof text, &at, WTERMSIG(status));
    } else {
      put_str(text, sizeof text, &at, ") exited with status ");
      put_num(text, sizeof text, &at, WEXITSTATUS(status));
    }
    put_str(text, sizeof text, &at,
            armed ? " before all pages were copied; the instance was stopped"
                  : " before the restore finished");
    put_str(text, sizeof text, &at, "\n");
    write_file_raw(a.outcome_path, text, at, false);
    if (armed && a.app_log && *a.app_log) {
      char line[600];
      size_t l = 0;
      put_str(line, sizeof line, &l, "prewarm: lazy restore ");
      for (size_t i = 0; i < at && l < sizeof line; ++i) line[l++] = text[i];
      write_file_raw(a.app_log, line, l, true);
    }
  }
  for (int i = 0; i < nuffd; ++i) ::close(uffds[i]);
  if (server > 0) {
    // The daemon said goodbye to it (it exits then); reap it, or end it.
    ::kill(server, SIGKILL);
    ::waitpid(server, nullptr, 0);
  }
  ::_exit(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1);
}

bool wait_readable(int fd, milliseconds timeout) {
  struct pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (r < 0 && errno == EINTR) continue;
    return r > 0;
  }
}

std::string log_lines(const stdfs::path& work_dir) {
  std::string tail = relevant_log_tail(work_dir / kLazyPagesLog);
  auto server = fs::read_file(work_dir / kPageServerLog, 8192);
  if (server.ok() && !server->empty()) tail += (tail.empty() ? "" : "\n") + *server;
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  return tail.empty() ? "" : "\n" + tail;
}

}  // namespace

struct LazyPages::Impl {
  stdfs::path work_dir;
  pid_t supervisor = 0;
  pid_t daemon = 0;
  UniqueFd supervisor_pidfd;
  UniqueFd sock;  // to the supervisor (a socket: a send to a gone peer is EPIPE, no signal)
  bool detached = false;
};

LazyPages::LazyPages() : impl_(std::make_unique<Impl>()) {}
LazyPages::LazyPages(LazyPages&&) noexcept = default;
LazyPages& LazyPages::operator=(LazyPages&&) noexcept = default;

LazyPages::~LazyPages() {
  if (!impl_ || impl_->detached) return;
  // The daemon dies with the supervisor (parent-death signal). The supervisor is not our
  // child: a pidfd taken as it started names it even if it is gone and its pid reused.
  if (impl_->supervisor_pidfd.valid()) pidfd_kill(impl_->supervisor_pidfd.get(), SIGKILL);
  (void)fs::remove_all(impl_->work_dir / kLazyPagesPidFile);
}

pid_t LazyPages::supervisor_pid() const { return impl_->supervisor; }
pid_t LazyPages::daemon_pid() const { return impl_->daemon; }
void LazyPages::detach() {
  impl_->detached = true;
  impl_->sock.reset();
}

Result<LazyPages> LazyPages::start(const LazyPagesOptions& o) {
  const std::string criu = criu_binary();
  if (criu.empty()) return Error(ErrorKind::kIncompatibleHost, "lazy restore: no criu binary");
  const stdfs::path work = stdfs::absolute(o.work_dir);
  (void)fs::remove_all(work / kLazyPagesOutcome);
  (void)fs::remove_all(work / "lazy-pages.socket");

  std::vector<std::string> args = {criu,
                                   "lazy-pages",
                                   "--images-dir",
                                   stdfs::absolute(o.images_dir).string(),
                                   "--work-dir",
                                   work.string(),
                                   "--log-file",
                                   kLazyPagesLog,
                                   "-v2",
                                   "--status-fd",
                                   "3"};
  if (!o.page_server_argv.empty()) {
    args.push_back("--page-server");
    args.push_back("--ps-socket");
    args.push_back("4");
  }
  std::vector<std::string> server_args = o.page_server_argv;
  std::vector<char*> server_argv;
  for (auto& s : server_args) server_argv.push_back(s.data());
  server_argv.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, kRecordEnv, std::strlen(kRecordEnv)) != 0) env.emplace_back(*e);
  if (!o.record_faults.empty())
    env.push_back(std::string(kRecordEnv) + "=" + stdfs::absolute(o.record_faults).string());
  std::vector<char*> argv, envp;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  const std::string outcome = (work / kLazyPagesOutcome).string();
  const std::string app_log = o.app_log.string();

  int sp[2], st[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0)
    return Error::sys("socketpair", errno);
  UniqueFd ours(sp[0]), theirs(sp[1]);
  if (::pipe2(st, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
  UniqueFd st_r(st[0]), st_w(st[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull.valid()) return Error::sys("open", errno, "/dev/null");

  SupervisorArgs a;
  a.criu = criu.c_str();
  a.argv = argv.data();
  a.envp = envp.data();
  const std::string server_log = (work / kPageServerLog).string();
  if (!server_args.empty()) {
    a.server = server_args[0].c_str();
    a.server_argv = server_argv.data();
    a.server_log = server_log.c_str();
  }
  a.outcome_path = outcome.c_str();
  a.app_log = app_log.c_str();
  a.sock = theirs.get();
  a.status_w = st_w.get();
  a.devnull = devnull.get();

  pid_t mid = ::fork();
  if (mid < 0) return Error::sys("fork", errno, "lazy-pages supervisor");
  if (mid == 0) {
    // The supervisor's parent exits at once: it belongs to init (or the nearest subreaper),
    // never to a caller that might not reap it.
    ::close(ours.get());
    ::close(st_r.get());
    pid_t s = ::fork();
    if (s == 0) supervise(a);
    ::_exit(s < 0 ? 1 : 0);
  }
  int mid_status = 0;
  while (::waitpid(mid, &mid_status, 0) < 0 && errno == EINTR) {
  }
  theirs.reset();
  st_w.reset();

  LazyPages out;
  out.impl_->work_dir = work;
  out.impl_->sock = std::move(ours);
  Hello hello;
  if (!wait_readable(out.impl_->sock.get(), o.start_timeout) ||
      !read_full(out.impl_->sock.get(), &hello, sizeof hello) || hello.supervisor <= 0)
    return Error(ErrorKind::kRuntime, "lazy restore: the page server's supervisor did not start");
  out.impl_->supervisor = hello.supervisor;
  out.impl_->supervisor_pidfd.reset(pidfd_open(hello.supervisor));
  out.impl_->daemon = hello.daemon > 0 ? hello.daemon : 0;
  if (hello.daemon <= 0) return Error(ErrorKind::kRuntime, "lazy restore: could not fork criu lazy-pages");
  // The pid file: removal stops the supervisor by it, once the start time still matches.
  if (auto t = process_start_time(hello.supervisor)) {
    PW_TRY(fs::write_file_atomic(work / kLazyPagesPidFile,
                                 std::to_string(hello.supervisor) + " " + std::to_string(*t) + "\n",
                                 0600, false));
  }
  // CRIU writes one byte to the status fd once it listens; EOF means it exited.
  char ready = 1;
  if (!wait_readable(st_r.get(), o.start_timeout))
    return Error(ErrorKind::kRuntime, "lazy restore: criu lazy-pages did not start within " +
                                          std::to_string(o.start_timeout.count()) + " ms" +
                                          log_lines(work));
  if (::read(st_r.get(), &ready, 1) != 1 || ready != 0)
    return Error(ErrorKind::kRuntime, "lazy restore: criu lazy-pages failed to start" + log_lines(work));
  return out;
}

Status LazyPages::arm(pid_t init) {
  if (!impl_->sock.valid()) return Error(ErrorKind::kInternal, "lazy restore: armed twice");
  ArmMsg m{init};
  int answer = 0;
  const bool asked = ::send(impl_->sock.get(), &m, sizeof m, MSG_NOSIGNAL) ==
                     static_cast<ssize_t>(sizeof m);
  if (!asked || !wait_readable(impl_->sock.get(), std::chrono::seconds(10)) ||
      !read_full(impl_->sock.get(), &answer, sizeof answer)) {
    // Where the app resumed before this (runc), a small image may be copied already.
    if (lazy_pages_outcome(impl_->work_dir).state == LazyPagesOutcome::State::kComplete) return {};
    return Error(ErrorKind::kRuntime, "lazy restore: the page server is gone" + log_lines(impl_->work_dir));
  }
  if (answer == -ENOENT)
    return Error(ErrorKind::kRuntime,
                 "lazy restore: the page server holds no userfaultfd (no task sent one)" +
                     log_lines(impl_->work_dir));
  if (answer < 0)
    return Error::sys("lazy restore: take the page server's userfaultfds", -answer);
  return {};
}

Status stop_lazy_pages(const stdfs::path& work_dir) {
  const stdfs::path file = work_dir / kLazyPagesPidFile;
  auto text = fs::read_file(file, 256);
  if (!text.ok()) return {};  // none (or never lazy)
  long long pid = 0;
  unsigned long long start = 0;
  if (std::sscanf(text->c_str(), "%lld %llu", &pid, &start) == 2 && pid > 1) {
    auto t = process_start_time(static_cast<pid_t>(pid));
    if (t && *t == start) {
      // Its daemon gets SIGKILL when it dies (parent-death signal).
      int pidfd = pidfd_open(static_cast<pid_t>(pid));
      if (pidfd >= 0) {
        pidfd_kill(pidfd, SIGKILL);
        struct pollfd p{pidfd, POLLIN, 0};
        (void)::poll(&p, 1, 2000);
        ::close(pidfd);
      }
    }
  }
  return fs::remove_all(file);
}

LazyPagesOutcome lazy_pages_outcome(const stdfs::path& work_dir) {
  LazyPagesOutcome out;
  auto text = fs::read_file(work_dir / kLazyPagesOutcome, 4096);
  if (!text.ok()) {
    std::error_code ec;
    if (stdfs::exists(work_dir / kLazyPagesPidFile, ec)) out.state = LazyPagesOutcome::State::kCopying;
    return out;
  }
  std::string t = *text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  if (t.rfind("complete ", 0) == 0) {
    out.state = LazyPagesOutcome::State::kComplete;
    out.complete_monotonic_ns = std::atoll(t.c_str() + 9);
  } else {
    out.state = LazyPagesOutcome::State::kFailed;
    out.reason = (t.rfind("failed: ", 0) == 0 ? t.substr(8) : t) + log_lines(work_dir);
  }
  return out;
}

}  // namespace prewarm::criu
