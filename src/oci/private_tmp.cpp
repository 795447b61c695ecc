#include "oci/private_tmp.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "base/log.h"

namespace prewarm::oci {

Result<std::unique_ptr<PrivateTmpForThread>> PrivateTmpForThread::enter() {
  auto g = std::unique_ptr<PrivateTmpForThread>(new PrivateTmpForThread);
  g->host_ns_.reset(::open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC));
  g->cwd_.reset(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!g->host_ns_.valid() || !g->cwd_.valid())
    return Error::sys("open mount namespace", errno, "/proc/thread-self/ns/mnt");
  // The thread's filesystem context becomes its own (and stays so): the process's other
  // threads keep the host's namespace throughout.
  if (::unshare(CLONE_FS | CLONE_NEWNS) != 0) return Error::sys("unshare(CLONE_NEWNS)", errno);
  g->entered_ = true;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0)
    return Error::sys("mount --make-rslave /", errno);
  if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=4m") != 0)
    return Error::sys("mount tmpfs", errno, "/tmp");
  return g;
}

PrivateTmpForThread::~PrivateTmpForThread() {
  if (!entered_) return;
  if (::setns(host_ns_.get(), CLONE_NEWNS) != 0) {
    log::warn("could not return to the host's mount namespace: " + std::string(std::strerror(errno)));
    return;
  }
  (void)::fchdir(cwd_.get());  // setns moved the thread to the namespace's root
}

}  // namespace prewarm::oci
