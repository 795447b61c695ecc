// OCI runtime-spec config.json for one instance, from what prewarm knows about it.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace prewarm::oci {

struct Mount {
  std::string destination;
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

struct ContainerConfig {
  std::filesystem::path rootfs;  // absolute path of the (overlay) root
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::string cwd = "/";
  std::string hostname;
  std::filesystem::path netns_path;  // joined, not created, so a restore can get a fresh one
  std::string cgroups_path;          // e.g. "prewarm/<id>" (cgroupfs driver)
  // Mounts beyond runc's defaults, in order after them; one at a default's destination
  // (e.g. a bind mount at /dev/shm) takes that default's place.
  std::vector<Mount> mounts;
  // An empty directory to hide directories with (read-only bind mounts). Set: /sys/firmware is
  // a read-only bind of it and the masked /proc directories become read-only paths (runc
  // allows no mount inside /proc), instead of a tmpfs each — which CRIU dumps as a tar archive
  // and restores by running tar (~4 ms a mount). Empty: runc's default masks.
  std::filesystem::path empty_dir;
};

// Builds config.json (runtime-spec 1.0.2): new PID, mount, UTS, IPC and cgroup namespaces, the
// given network namespace, runc's default mounts and capabilities, no terminal (detached
// instances write to a pipe), rlimits capped at the caller's hard limits.
std::string make_config_json(const ContainerConfig& cfg);

// Writes bundle_dir/config.json.
Status write_bundle(const std::filesystem::path& bundle_dir, const ContainerConfig& cfg);

}  // namespace prewarm::oci
