// The pod's own bind mounts (volumes, service-account tokens, /etc/hosts, /etc/resolv.conf,
// /etc/hostname, the termination log) added to a restored container: the checkpoint holds the
// bake's mounts, not the pod's.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.h"

namespace prewarm::k8s {

struct PodMount {
  std::string source;       // host path
  std::string destination;  // path in the container
  bool read_only = false;
  bool recursive = false;   // rbind
};

// Attaches each source at its destination inside the mount namespace of `pid` (a restored
// container's init, best while its tasks are still stopped): detached copies of the host
// trees (open_tree) moved into that namespace (move_mount), read-only where asked, with the
// destination created (directory, or empty file for a file) when the rootfs lacks it. Runs in a
// child process (setns into a mount namespace needs a single-threaded caller).
Status attach_mounts(pid_t pid, const std::vector<PodMount>& mounts);

}  // namespace prewarm::k8s
