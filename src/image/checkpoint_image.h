// Checkpoint images as CRI-O, Podman and containerd exchange them through registries: an
// ordinary OCI image whose one layer holds a checkpoint archive's files (checkpoint/,
// config.dump, spec.dump, rootfs-diff.tar, ...) and whose manifest annotations mark it as a
// checkpoint (`<engine>.annotations.checkpoint.name`). CRI-O restores a container from such an
// image when a pod names it as the container's image; `podman container restore IMAGE` too.
//
// Sources (read, not copied): CRI-O and Podman pkg/annotations (CheckpointAnnotation* keys),
// Podman's createCheckpointImage (a scratch image, the exported archive added at /, the
// annotations set on the manifest), checkpointctl lib/annotations.go (org.criu.checkpoint.*).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "base/result.h"
#include "image/manifest.h"

namespace prewarm::image {

inline constexpr const char* kOciImageManifestMediaType =
    "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kOciImageConfigMediaType = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kOciLayerZstdMediaType = "application/vnd.oci.image.layer.v1.tar+zstd";

struct Descriptor {
  std::string media_type;
  std::string digest;  // sha256:<hex>
  uint64_t size = 0;
};

struct CheckpointImageJson {
  std::string config;    // OCI image config (architecture, os, rootfs.diff_ids)
  std::string manifest;  // OCI image manifest referencing config and the one layer
};

// The config and manifest of a checkpoint image of `m` named `name`, whose only layer is
// `layer` (the archive export_archive writes, compressed as layer.media_type says) and whose
// uncompressed tar has digest `diff_id`. The manifest refers to the config by the sha256 of
// the returned config text, so push that text byte for byte.
CheckpointImageJson make_checkpoint_image(const Manifest& m, const std::string& name,
                                          const Descriptor& layer, const std::string& diff_id);

struct CheckpointImageInfo {
  Descriptor layer;
  std::string container_name;  // from the checkpoint-name annotation
  std::string engine;          // "cri-o", "podman", "containerd", "prewarm" or "checkpointctl"
};

// Whether manifest_json is a checkpoint image (by its annotations) and, if so, its layer.
// nullopt: an ordinary image (not a checkpoint, or prewarm's own chunked format). An error:
// it is marked as a checkpoint image but is not one this can read (several layers, a layer
// media type other than tar, tar+gzip or tar+zstd, a malformed descriptor).
Result<std::optional<CheckpointImageInfo>> checkpoint_image_info(const std::string& manifest_json);

}  // namespace prewarm::image
