// Can this host restore an image? Architecture, CRIU version and CPU features (CRIU's
// cpuinfo check). A passed check is remembered per image, boot and CRIU binary, so repeated
// restores don't pay for spawning CRIU twice. Facts an image does not record (archives from
// Podman, CRI-O and the kubelet carry no CPU record) are not held against it: the restore is
// attempted, CRIU refuses what it cannot restore, and the start falls back to a cold one.
#pragma once

#include <string>

#include "engine/context.h"
#include "images/load.h"

namespace prewarm::lifecycle {

struct HostCheck {
  // "" when a restore can be tried, else why not (shown to the user as the fallback reason).
  std::string blocker;
  // What could not be checked because the image does not record it, e.g. "host facts unknown
  // (CPU features, CRIU version); restore attempted"; "" when everything was checked.
  std::string unchecked;
};

HostCheck check_host(const engine::Context& ctx, const images::LoadedImage& img);

}  // namespace prewarm::lifecycle
