// Process spawning with posix_spawn + pidfd_open; capture through pipes and poll.
#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <sstream>

#include "base/fs.h"

extern char** environ;

namespace prewarm {
namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::vector<std::string> merged_env(const std::vector<std::string>& add) {
  std::map<std::string, std::string> vars;
  std::vector<std::string> order;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    vars[kv.substr(0, eq)] = kv;
  }
  for (const auto& kv : add) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    vars[kv.substr(0, eq)] = kv;
  }
  std::vector<std::string> out;
  for (auto& [k, v] : vars) out.push_back(v);
  return out;
}

}  // namespace

Child::Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), pidfd_(std::move(o.pidfd_)) {}

Child& Child::operator=(Child&& o) noexcept {
  if (this != &o) {
    reap();  // the child this guard held goes first, as in the destructor
    pid_ = std::exchange(o.pid_, -1);
    pidfd_ = std::move(o.pidfd_);
  }
  return *this;
}

Child::~Child() { reap(); }

void Child::reap() noexcept {
  if (pid_ > 0) {
    kill(SIGKILL);
    int st;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
  pidfd_.reset();
}

void Child::kill(int sig) {
  if (pidfd_.valid()) {
    ::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0);
  } else if (pid_ > 0) {
    ::kill(pid_, sig);
  }
}

Result<int> Child::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return Error("wait: no child process");
  if (timeout != std::chrono::milliseconds::max()) {
    pollfd p{pidfd_.get(), POLLIN, 0};
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return Error("process " + std::to_string(pid_) + " timed out", ETIMEDOUT);
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r > 0) break;
      if (r < 0 && errno != EINTR) return Error::sys("poll", errno, "pidfd");
    }
  }
  int st = 0;
  while (::waitpid(pid_, &st, 0) < 0) {
    if (errno != EINTR) return Error::sys("waitpid", errno);
  }
  pid_ = -1;
  pidfd_.reset();
  return st;
}

Result<Child> spawn(const SpawnOptions& opts) {
  if (opts.argv.empty()) return Error("spawn: empty command");
  std::string exe = opts.argv[0];
  if (exe.find('/') == std::string::npos) {
    exe = find_executable(exe);
    if (exe.empty()) return Error("spawn: " + opts.argv[0] + " not found in PATH", ENOENT);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto map_fd = [&](int src, int dst) {
    posix_spawn_file_actions_adddup2(&fa, src >= 0 ? src : devnull.get(), dst);
  };
  map_fd(opts.stdin_fd, 0);
  map_fd(opts.stdout_fd, 1);
  map_fd(opts.stderr_fd, 2);
  for (auto [src, dst] : opts.pass_fds) posix_spawn_file_actions_adddup2(&fa, src, dst);

  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<std::string> env = merged_env(opts.env);
  std::vector<char*> envp, argv;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = opts.argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error::sys("spawn", rc, exe);
  UniqueFd pidfd(pidfd_open(pid));
  if (!pidfd.valid()) {
    // Without a pidfd, wait() cannot time out and kill() could hit a recycled pid: refuse, and
    // take the child down while its pid is surely still ours (unreaped).
    int err = errno;
    ::kill(pid, SIGKILL);
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return Error::sys("pidfd_open", err, exe);
  }
  return Child(pid, std::move(pidfd));
}

bool RunResult::success() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string RunResult::describe() const {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  return "ended with wait status " + std::to_string(status);
}

Result<RunResult> run_capture(SpawnOptions opts, std::chrono::milliseconds timeout) {
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
  UniqueFd out_r(out_pipe[0]), out_w(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  opts.stdout_fd = out_w.get();
  opts.stderr_fd = err_w.get();
  PW_ASSIGN(Child child, spawn(opts));
  out_w.reset();
  err_w.reset();

  RunResult res;
  constexpr size_t kCap = 4 << 20;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  int open_count = 2;
  char buf[16384];
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      child.kill(SIGKILL);
      (void)child.wait();
      return Error(join_argv(opts.argv) + " did not finish within " +
                       std::to_string(timeout.count() / 1000) + " s and was killed",
                   ETIMEDOUT);
    }
    int r = ::poll(fds, 2, static_cast<int>(std::min<long>(left.count(), 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::sys("poll", errno);
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (sinks[i]->size() < kCap) sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  PW_ASSIGN(res.status, child.wait(std::max(left, std::chrono::milliseconds(1))));
  return res;
}

Result<std::string> run_checked(const std::vector<std::string>& argv,
                                std::chrono::milliseconds timeout) {
  SpawnOptions o;
  o.argv = argv;
  PW_ASSIGN(RunResult r, run_capture(o, timeout));
  if (!r.success()) {
    std::string err = r.err.empty() ? r.out : r.err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    return Error(join_argv(argv) + " " + r.describe() + (err.empty() ? "" : ": " + err));
  }
  return std::move(r.out);
}

std::string join_argv(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a;
  }
  return s;
}

std::string find_executable(const std::string& name) {
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  if (const char* p = ::getenv("PATH")) path = path + ":" + p;
  size_t start = 0;
  while (start <= path.size()) {
    size_t colon = path.find(':', start);
    if (colon == std::string::npos) colon = path.size();
    std::string dir = path.substr(start, colon - start);
    if (!dir.empty()) {
      std::string cand = dir + "/" + name;
      if (::access(cand.c_str(), X_OK) == 0) return cand;
    }
    start = colon + 1;
  }
  return {};
}

bool process_is_zombie(pid_t pid) {
  auto text = fs::read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text.ok()) return false;
  auto close = text->rfind(") ");
  return close != std::string::npos && close + 2 < text->size() && (*text)[close + 2] == 'Z';
}

std::optional<unsigned long long> process_start_time(pid_t pid) {
  auto text = fs::read_file("/proc/" + std::to_string(pid) + "/stat", 4096);
  if (!text.ok()) return std::nullopt;
  auto close = text->rfind(')');
  if (close == std::string::npos || close + 2 > text->size()) return std::nullopt;
  std::istringstream in(text->substr(close + 2));
  std::string field;
  // Fields 3.. follow the comm; start time is field 22.
  for (int i = 3; i < 22 && in >> field; ++i) {
  }
  unsigned long long t = 0;
  if (!(in >> t)) return std::nullopt;
  return t;
}

}  // namespace prewarm
