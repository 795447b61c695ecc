// The per-instance lock: flock(2) on the instance directory itself. Whoever starts, removes or
// recovers an instance holds it; the kernel drops it when its holder dies, which is how recovery
// tells a crashed start (lock free, state transitional) from one in progress (lock held).
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::lifecycle {

class InstanceLock {
 public:
  // Creates the directory (0700) and locks it: kConflict if it exists already.
  static Result<InstanceLock> create(const std::filesystem::path& dir);
  // Locks an existing directory, waiting up to `wait`; kNotFound if it is gone (before or while
  // waiting: a remover holding the lock deletes it), kUnavailable on timeout.
  static Result<InstanceLock> acquire(const std::filesystem::path& dir,
                                      std::chrono::milliseconds wait);
  // Locks without waiting; nullopt when someone else holds it.
  static Result<std::optional<InstanceLock>> try_acquire(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }

 private:
  InstanceLock(std::filesystem::path dir, UniqueFd fd) : dir_(std::move(dir)), fd_(std::move(fd)) {}
  std::filesystem::path dir_;
  UniqueFd fd_;  // closing it releases the lock
};

}  // namespace prewarm::lifecycle
