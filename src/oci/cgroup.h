// A container's cgroups on this host's cgroup v1 hierarchies (plus the v2 one of a hybrid
// setup): create, join, freeze/thaw, empty and remove them, the way runc's fs driver lays them
// out (<hierarchy>/<cgroupsPath>).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"

namespace prewarm::oci {

// The cgroup hierarchies mounted under /sys/fs/cgroup (v1 controllers, named ones such as
// name=systemd, and a v2 "unified" mount), read once from /proc/self/mountinfo.
const std::vector<std::filesystem::path>& cgroup_hierarchies();

// The calling thread's cgroup as a path under the hierarchies mounted here (the memory
// controller's on v1, the unified one on v2), relative to what is mounted (inside a container
// often its own cgroup); "" for the root. A CgroupSet of `own_cgroup() + "/x"` is a child of it.
std::string own_cgroup();

// The calling thread, moved into a CgroupSet's v1 cgroups; moved back where it was when this
// is destroyed. Children it spawns meanwhile start in the set.
class ThreadInCgroups {
 public:
  ~ThreadInCgroups();
  // How many hierarchies the thread joined (0 on a host with cgroup v2 alone).
  size_t joined() const { return back_.size(); }
  ThreadInCgroups(const ThreadInCgroups&) = delete;
  ThreadInCgroups& operator=(const ThreadInCgroups&) = delete;

 private:
  friend class CgroupSet;
  ThreadInCgroups() = default;
  std::vector<std::filesystem::path> back_;  // the `tasks` files to return to
};

class CgroupSet {
 public:
  // `rel` is the path below each hierarchy's root, e.g. "prewarm-abc" (a leading '/' is
  // ignored). Nothing is created.
  explicit CgroupSet(std::string rel);

  const std::string& rel() const { return rel_; }
  std::vector<std::filesystem::path> dirs() const;

  // Creates the directory in every hierarchy and gives the devices controller runc's default
  // allowlist (null, zero, full, tty, random, urandom, ptys, tun; mknod of any). EEXIST is
  // kConflict. On failure nothing is left.
  Status create();
  // Moves pid into the set in every hierarchy.
  Status add(pid_t pid) const;
  // Moves the calling thread (only it) into the set's v1 cgroups until the guard goes: a
  // process spawned meanwhile starts inside them, with no migration (each costs an RCU grace
  // period, ~1 ms here). The v2 hierarchy of a hybrid host (no controllers) is not joined.
  Result<std::unique_ptr<ThreadInCgroups>> enter_this_thread() const;
  Status freeze(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Moves pid to the freezer cgroup above the set's (e.g. a CRIU that must keep running while
  // what it restored is frozen).
  Status leave_freezer(pid_t pid) const;
  Status thaw() const;
  bool frozen() const;
  // The processes in the set (from the pids or freezer hierarchy).
  std::vector<pid_t> pids() const;
  // Thaws, SIGKILLs every process and waits until the set is empty, then removes every
  // directory. Missing directories are fine.
  Status destroy(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // The set's directory in one hierarchy ("memory", "cpu", ...).
  std::filesystem::path in(const char* hierarchy) const;

 private:
  std::string rel_;
};

}  // namespace prewarm::oci
