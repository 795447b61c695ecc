// Mounting the pod's bind mounts into a restored container's mount namespace.
#include "k8s/pod_mounts.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.h"

namespace prewarm::k8s {
namespace {

int open_tree_fd(const char* path, unsigned flags) {
  return static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path, flags));
}
int move_mount_fd(int from, const char* to) {
  return static_cast<int>(
      ::syscall(SYS_move_mount, from, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH));
}
int set_read_only(int fd, bool recursive) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  return static_cast<int>(::syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH |
                                    (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr));
}

// mkdir -p of `path`'s parents, then the mount point itself (a directory, or an empty file).
int make_mount_point(const std::string& path, bool dir) {
  for (size_t at = 1; at < path.size(); ++at) {
    if (path[at] != '/') continue;
    std::string parent = path.substr(0, at);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) return -1;
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return 0;
  if (dir) return ::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST ? 0 : -1;
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  ::close(fd);
  return 0;
}

}  // namespace

Status attach_mounts(pid_t pid, const std::vector<PodMount>& mounts) {
  if (mounts.empty()) return {};
  // Everything the child needs, prepared before fork.
  std::vector<UniqueFd> trees;
  std::vector<bool> is_dir;
  for (const auto& m : mounts) {
    unsigned flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (m.recursive ? AT_RECURSIVE : 0);
    UniqueFd fd(open_tree_fd(m.source.c_str(), flags));
    if (!fd.valid()) return Error::sys("open_tree", errno, m.source);
    if (m.read_only && set_read_only(fd.get(), m.recursive) != 0)
      return Error::sys("mount_setattr (read-only)", errno, m.source);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::sys("fstat", errno, m.source);
    is_dir.push_back(S_ISDIR(st.st_mode));
    trees.push_back(std::move(fd));
  }
  const std::string ns = "/proc/" + std::to_string(pid) + "/ns/mnt";
  UniqueFd ns_fd(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns_fd.valid()) return Error::sys("open", errno, ns);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
  UniqueFd rd(report[0]), wr(report[1]);
  const pid_t child = ::fork();
  if (child < 0) return Error::sys("fork", errno);
  if (child == 0) {
    // In the child: only system calls from here on. On failure it writes "index errno".
    auto die = [&](size_t i, int err) {
      char buf[64];
      int n = std::snprintf(buf, sizeof buf, "%zu %d", i, err);
      (void)!::write(wr.get(), buf, static_cast<size_t>(n));
      ::_exit(1);
    };
    if (::setns(ns_fd.get(), CLONE_NEWNS) != 0) die(mounts.size(), errno);
    for (size_t i = 0; i < mounts.size(); ++i) {
      if (make_mount_point(mounts[i].destination, is_dir[i]) != 0) die(i, errno);
      if (move_mount_fd(trees[i].get(), mounts[i].destination.c_str()) != 0) die(i, errno);
    }
    ::_exit(0);
  }
  wr.reset();
  char buf[64] = {};
  ssize_t n = ::read(rd.get(), buf, sizeof buf - 1);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (n > 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    size_t i = mounts.size();
    int err = 0;
    std::sscanf(buf, "%zu %d", &i, &err);
    if (i >= mounts.size()) return Error::sys("setns into the container's mounts", err, ns);
    return Error::sys("mount " + mounts[i].source + " at", err, mounts[i].destination);
  }
  return {};
}

}  // namespace prewarm::k8s
