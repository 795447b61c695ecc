// The "criu" runtime backend: restores a runc-made checkpoint by talking to CRIU directly (no
// runc process on the restore path); cold starts and checkpoints stay on runc.
#pragma once

#include <filesystem>
#include <memory>

#include "oci/runtime.h"

namespace prewarm::oci {

inline constexpr const char* kCriuDirectStateRoot = "/run/prewarm-criu";

// name() is "criu". run() and checkpoint() go to `runc`. restore() drives one CRIU RPC session
// from the bundle's config.json (cgroups made here, external mounts and the network namespace
// passed to CRIU, no network lock) and calls before_resume from CRIU's post-restore notify,
// before the tasks run (Restored::hook_before_resume = true). The containers it restored are
// kept under state_root/<id>/state.json and handled here (state, kill, pause/resume with the
// v1 freezer, exec with nsenter, remove); any other id goes to `runc`. list() is both.
std::unique_ptr<Runtime> make_criu_direct(std::shared_ptr<Runtime> runc,
                                          std::filesystem::path state_root = kCriuDirectStateRoot);

}  // namespace prewarm::oci
