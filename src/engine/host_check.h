// Can this host restore an image? Architecture, CRIU version and CPU features (CRIU's
// cpuinfo check). A passed check is remembered per image, boot and CRIU binary, so repeated
// restores don't pay for spawning CRIU twice.
#pragma once

#include <string>

#include "engine/context.h"
#include "engine/instance.h"

namespace prewarm::engine {

// "" when a restore can be tried, else why not (shown to the user as the fallback reason).
std::string restore_blocker(const Context& ctx, const LoadedImage& img);

}  // namespace prewarm::engine
