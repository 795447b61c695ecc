// Hostname injection into a restored instance.
#include "lifecycle/identity.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include "base/unique_fd.h"

namespace prewarm::lifecycle {

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

namespace {

class Hostname final : public Identity {
 public:
  explicit Hostname(std::string name) : name_(std::move(name)) {}
  Status apply(pid_t pid) override { return set_hostname(pid, name_); }

 private:
  std::string name_;
};

}  // namespace

std::unique_ptr<Identity> make_hostname_identity(std::string hostname) {
  return std::make_unique<Hostname>(std::move(hostname));
}

}  // namespace prewarm::lifecycle
