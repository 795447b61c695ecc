// Named network namespaces without spawning `ip`: a short-lived thread unshares its network
// namespace, pins it with a bind mount and opens a netlink socket inside it before exiting.
#include "net/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mutex>
#include <system_error>
#include <thread>

namespace prewarm::net {
namespace {

// As iproute2 does: /run/netns is a shared mount point, so unmounting a namespace file
// propagates to mount namespaces that copied it (e.g. containers' private copies) and the
// namespace can actually be freed.
Status prepare_run_dir() {
  static std::mutex mu;
  static bool done = false;
  std::lock_guard lock(mu);
  if (done) return {};
  if (::mkdir(kNetnsRunDir, 0755) != 0 && errno != EEXIST)
    return Error::sys("mkdir", errno, kNetnsRunDir);
  bool made_mount = false;
  while (::mount("", kNetnsRunDir, "none", MS_SHARED | MS_REC, nullptr) != 0) {
    if (errno != EINVAL || made_mount)
      return Error::sys("make shared mount point", errno, kNetnsRunDir);
    // Not a mount point yet: make it one.
    if (::mount(kNetnsRunDir, kNetnsRunDir, "none", MS_BIND | MS_REC, nullptr) != 0)
      return Error::sys("bind mount onto itself", errno, kNetnsRunDir);
    made_mount = true;
  }
  done = true;
  return {};
}

struct ThreadResult {
  std::optional<Error> error;
  bool mounted = false;
  UniqueFd ns_fd;
  UniqueFd rtnl_fd;
};

// Runs on its own thread: unshare() changes only this thread's namespace, and the thread ends
// right after, so no caller thread ever switches namespaces.
void enter_new_netns(const std::filesystem::path& path, ThreadResult& out) {
  if (::unshare(CLONE_NEWNET) != 0) {
    out.error = Error::sys("unshare(CLONE_NEWNET)", errno);
    return;
  }
  if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
    out.error = Error::sys("bind mount the new netns onto", errno, path.string());
    return;
  }
  out.mounted = true;
  out.ns_fd.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!out.ns_fd.valid()) {
    out.error = Error::sys("open", errno, "/proc/thread-self/ns/net");
    return;
  }
  out.rtnl_fd.reset(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!out.rtnl_fd.valid()) out.error = Error::sys("open NETLINK_ROUTE socket in new netns", errno);
}

}  // namespace

Result<NamedNetns> create_named_netns(const std::string& name) {
  PW_TRY(prepare_run_dir());
  std::filesystem::path path = std::filesystem::path(kNetnsRunDir) / name;
  {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
    if (!f.valid()) return Error::sys("create", errno, path.string());
  }
  ThreadResult r;
  try {
    std::thread t(enter_new_netns, std::cref(path), std::ref(r));
    t.join();
  } catch (const std::system_error& e) {
    r.error = Error("start netns helper thread: " + std::string(e.what()), e.code().value());
  }
  if (r.error) {
    if (r.mounted) ::umount2(path.c_str(), MNT_DETACH);
    ::unlink(path.c_str());
    return std::move(*r.error);
  }
  return NamedNetns{path, std::move(r.ns_fd), nl::Socket(std::move(r.rtnl_fd))};
}

Status remove_named_netns(const std::string& name) {
  std::filesystem::path path = std::filesystem::path(kNetnsRunDir) / name;
  // EINVAL: not a mount point (a half-made or already unmounted file).
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    return Error::sys("unmount", errno, path.string());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Error::sys("remove", errno, path.string());
  return {};
}

}  // namespace prewarm::net
