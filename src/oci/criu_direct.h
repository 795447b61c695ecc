// The "criu" runtime backend: restores a runc-made checkpoint by talking to CRIU directly (no
// runc process on the restore path); cold starts and checkpoints stay on runc.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

#include "oci/runtime.h"

namespace prewarm::oci {

inline constexpr const char* kCriuDirectStateRoot = "/run/prewarm-criu";

// name() is "criu". run() and checkpoint() go to `runc`. restore() drives one CRIU RPC session
// from the bundle's config.json (cgroups made here, external mounts and the network namespace
// passed to CRIU, no network lock) and calls before_resume from CRIU's post-restore notify,
// before the tasks run (Restored::hook_before_resume = true). The containers it restored are
// kept under state_root/<id>/state.json and handled here (state, kill, pause/resume with the
// v1 freezer, exec with nsenter, remove); any other id goes to `runc`. list() is both.
// The command line that runs `cmd` in a running container whose init is `pid` (host view):
// it joins the container's cgroups (`cgroup`, as CgroupSet takes it), then `env -i` with
// `env`, then nsenter into the init's mount, UTS, IPC, network and PID namespaces and root, in
// `cwd`, as `user` (uid, gid) when given. kIncompatibleHost when nsenter or env is missing.
Result<std::vector<std::string>> enter_argv(pid_t pid, const std::string& cgroup,
                                            const std::vector<std::string>& env,
                                            const std::string& cwd,
                                            const std::vector<std::string>& cmd,
                                            std::optional<std::pair<uid_t, gid_t>> user = {});

std::unique_ptr<Runtime> make_criu_direct(std::shared_ptr<Runtime> runc,
                                          std::filesystem::path state_root = kCriuDirectStateRoot);

}  // namespace prewarm::oci
