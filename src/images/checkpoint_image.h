// Internal to the engine: pulling a CRI-O/Podman/containerd checkpoint image (images.cpp
// dispatches here when a pulled manifest is one).
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "engine/context.h"
#include "image/checkpoint_image.h"
#include "registry/registry.h"

namespace prewarm::images {

using engine::Context;

// Downloads the image's one layer (a checkpoint archive) and imports it as `name`.
Result<std::string> pull_checkpoint_image(const Context& ctx, const registry::Reference& ref,
                                          const image::CheckpointImageInfo& info,
                                          const std::string& name,
                                          const std::filesystem::path& rootfs,
                                          const registry::Options& opts);

}  // namespace prewarm::images
