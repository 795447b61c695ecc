// Hostname injection into a running instance.
#include "engine/identity.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include "base/unique_fd.h"

namespace prewarm::engine {

Status set_hostname(pid_t pid, const std::string& hostname) {
  std::string ns = "/proc/" + std::to_string(pid) + "/ns/uts";
  UniqueFd fd(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, ns);
  Status result;
  std::thread t([&] {
    if (::setns(fd.get(), CLONE_NEWUTS) != 0) {
      result = Error::sys("setns", errno, ns);
      return;
    }
    if (::sethostname(hostname.data(), hostname.size()) != 0)
      result = Error::sys("sethostname", errno, hostname);
  });
  t.join();
  return result;
}

}  // namespace prewarm::engine
