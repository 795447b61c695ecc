// CRIU makes its mount scratch directory in the host's /tmp (/tmp/.criu.mntns.XXXXXX, a fixed
// path) and leaves it there when it is killed. So CRIU (directly, or through `runc restore`) is
// spawned from a thread that has a mount namespace of its own, a copy of the host's (a slave:
// nothing mounted in it reaches the host) with a fresh tmpfs on /tmp, which goes away with the
// last process in it. The guard puts the thread back.
#pragma once

#include <memory>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::oci {

class PrivateTmpForThread {
 public:
  static Result<std::unique_ptr<PrivateTmpForThread>> enter();
  ~PrivateTmpForThread();
  PrivateTmpForThread(const PrivateTmpForThread&) = delete;
  PrivateTmpForThread& operator=(const PrivateTmpForThread&) = delete;

 private:
  PrivateTmpForThread() = default;
  UniqueFd host_ns_, cwd_;
  bool entered_ = false;
};

}  // namespace prewarm::oci
