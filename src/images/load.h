// Opening an image for starting instances: unpacked, verified, its spec parsed and its base
// rootfs present on this host.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "image/k8s_archive.h"
#include "image/manifest.h"
#include "spec/app_spec.h"

namespace prewarm::images {

struct LoadedImage {
  std::string name;
  std::filesystem::path dir;
  std::string store_digest;  // manifest digest in the store
  image::Manifest manifest;
  spec::AppSpec spec;
  // For an image imported from a foreign archive: the bind mounts (and others) its container
  // had, re-created per instance.
  std::vector<image::ForeignMount> foreign_mounts;
};

struct LoadOptions {
  // Make sure the base rootfs is on this host. Off for a pod's container, whose runtime
  // prepared the root from the container image itself.
  bool need_base = true;
};

// Opens and verifies images/NAME (unpacking it from the store when needed), and makes sure the
// rootfs it needs is on this host (rebuilding a tarball or debootstrap base from its recipe).
Result<LoadedImage> load_image(const engine::Context& ctx, const std::string& name,
                               const LoadOptions& options = {});

}  // namespace prewarm::images
