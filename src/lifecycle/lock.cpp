// flock on instance directories, and the checks that make a lock on a deleted one fail.
#include "lifecycle/lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

namespace prewarm::lifecycle {
namespace {

Result<UniqueFd> open_dir(const std::filesystem::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    if (err == ENOENT) return Error(ErrorKind::kNotFound, "no instance " + dir.filename().string());
    return Error::sys("open", err, dir.string());
  }
  return fd;
}

// After getting the lock: is the directory still there, and still the one we locked? A remover
// deletes it while holding the lock, so a waiter may wake up holding an unlinked inode.
Status still_there(const std::filesystem::path& dir, int fd) {
  struct stat held {}, now {};
  if (::fstat(fd, &held) != 0) return Error::sys("fstat", errno, dir.string());
  if (::stat(dir.c_str(), &now) != 0 || held.st_ino != now.st_ino || held.st_dev != now.st_dev ||
      held.st_nlink == 0)
    return Error(ErrorKind::kNotFound,
                 "instance " + dir.filename().string() + " was removed meanwhile");
  return {};
}

}  // namespace

Result<InstanceLock> InstanceLock::create(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0) {
    int err = errno;
    if (err == EEXIST)
      return Error(ErrorKind::kConflict, "instance " + dir.filename().string() + " exists already");
    return Error::sys("mkdir", err, dir.string());
  }
  PW_ASSIGN(UniqueFd fd, open_dir(dir));
  // Recovery may have taken the fresh, record-less directory for a crash's leftover and locked
  // it: then wait, and find it gone.
  if (::flock(fd.get(), LOCK_EX) != 0) return Error::sys("flock", errno, dir.string());
  PW_TRY(still_there(dir, fd.get()));
  return InstanceLock(dir, std::move(fd));
}

Result<InstanceLock> InstanceLock::acquire(const std::filesystem::path& dir,
                                           std::chrono::milliseconds wait) {
  PW_ASSIGN(UniqueFd fd, open_dir(dir));
  auto deadline = std::chrono::steady_clock::now() + wait;
  for (auto pause = std::chrono::milliseconds(2);; pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) break;
    if (errno != EWOULDBLOCK && errno != EINTR) return Error::sys("flock", errno, dir.string());
    if (std::chrono::steady_clock::now() >= deadline)
      return Error(ErrorKind::kUnavailable, "instance " + dir.filename().string() +
                                                " is busy (another prewarm is starting or "
                                                "removing it); try again");
    std::this_thread::sleep_for(pause);
  }
  PW_TRY(still_there(dir, fd.get()));
  return InstanceLock(dir, std::move(fd));
}

Result<std::optional<InstanceLock>> InstanceLock::try_acquire(const std::filesystem::path& dir) {
  PW_ASSIGN(UniqueFd fd, open_dir(dir));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::optional<InstanceLock>();
    return Error::sys("flock", errno, dir.string());
  }
  PW_TRY(still_there(dir, fd.get()));
  return std::optional<InstanceLock>(InstanceLock(dir, std::move(fd)));
}

}  // namespace prewarm::lifecycle
