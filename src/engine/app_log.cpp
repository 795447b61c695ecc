// Log drainer: `cat` from the pipe to the log file, detached.
#include "engine/app_log.h"

#include <fcntl.h>
#include <unistd.h>

#include "base/subprocess.h"

namespace prewarm::engine {

Result<UniqueFd> open_app_log(const std::filesystem::path& log_file) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
  UniqueFd r(p[0]), w(p[1]);
  UniqueFd out(::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!out.valid()) return Error::sys("open", errno, log_file.string());
  SpawnOptions o;
  // setsid --fork: the drainer is re-parented to init, so no zombie waits on prewarm.
  o.argv = {"setsid", "--fork", "/bin/cat"};
  o.stdin_fd = r.get();
  o.stdout_fd = out.get();
  o.stderr_fd = out.get();
  PW_ASSIGN(Child launcher, spawn(o));
  PW_ASSIGN(int status, launcher.wait(std::chrono::seconds(10)));
  if (status != 0) return Error("could not start the log drainer for " + log_file.string());
  return w;
}

}  // namespace prewarm::engine
