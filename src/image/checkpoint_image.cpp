// Checkpoint images (CRI-O / Podman / containerd): building prewarm's, recognising any.
#include "image/checkpoint_image.h"

#include <array>
#include <map>
#include <nlohmann/json.hpp>

#include "base/sha256.h"

namespace prewarm::image {
namespace {

using nlohmann::json;

// The annotation each engine marks its checkpoint images with, and the engine's name.
constexpr std::array<std::pair<const char*, const char*>, 4> kNameAnnotations = {{
    {"io.kubernetes.cri-o.annotations.checkpoint.name", "cri-o"},
    {"io.podman.annotations.checkpoint.name", "podman"},
    {"io.kubernetes.containerd.annotations.checkpoint.name", "containerd"},
    {"org.criu.checkpoint.container.name", "checkpointctl"},
}};

constexpr std::array<const char*, 3> kLayerMediaTypes = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    kOciLayerZstdMediaType,
};
// Docker's schema 2 names for a gzip layer (what `podman push --format v2s2` writes).
constexpr const char* kDockerLayerMediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// Go's names for the architecture, as OCI image configs and Podman/CRI-O record it.
std::string go_arch(const std::string& uname_m) {
  if (uname_m == "x86_64") return "amd64";
  if (uname_m == "aarch64") return "arm64";
  return uname_m.empty() ? "amd64" : uname_m;
}

json descriptor(const Descriptor& d) {
  return {{"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}};
}

}  // namespace

CheckpointImageJson make_checkpoint_image(const Manifest& m, const std::string& name,
                                          const Descriptor& layer, const std::string& diff_id) {
  json config = {
      {"created", m.created},
      {"architecture", go_arch(m.host.arch)},
      {"os", "linux"},
      {"config", json::object()},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {diff_id}}}},
      {"history", {{{"created", m.created}, {"created_by", "prewarm push --format cri-o"}}}},
  };
  std::string config_text = config.dump();
  Descriptor config_desc{kOciImageConfigMediaType, "sha256:" + sha256_hex(config_text),
                         config_text.size()};

  std::map<std::string, std::string> a = {
      // CRI-O (and containerd's, Podman's own) recognise a checkpoint image by its name key.
      {"io.kubernetes.cri-o.annotations.checkpoint.name", name},
      {"io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName", m.rootfs_id},
      // Podman also requires the runtime name (it restores only with the same runtime).
      {"io.podman.annotations.checkpoint.name", name},
      {"io.podman.annotations.checkpoint.rootfsImageName", m.rootfs_id},
      {"io.podman.annotations.checkpoint.runtime.name", "runc"},
      {"io.podman.annotations.checkpoint.runtime.version", m.host.runc_version},
      {"io.podman.annotations.checkpoint.criu.version", m.host.criu_version},
      {"io.podman.annotations.checkpoint.host.arch", go_arch(m.host.arch)},
      {"io.podman.annotations.checkpoint.host.kernel", m.host.kernel},
      // checkpointctl lib/annotations.go.
      {"org.criu.checkpoint.container.name", name},
      {"org.criu.checkpoint.engine.name", "prewarm"},
      {"org.criu.checkpoint.rootfsImageName", m.rootfs_id},
      {"org.criu.checkpoint.runtime.name", "runc"},
      {"org.criu.checkpoint.runtime.version", m.host.runc_version},
      {"org.criu.checkpoint.criu.version", m.host.criu_version},
      {"org.criu.checkpoint.host.arch", go_arch(m.host.arch)},
      {"org.criu.checkpoint.host.kernel", m.host.kernel},
      {"org.opencontainers.image.created", m.created},
  };
  json annotations = json::object();
  for (const auto& [k, v] : a)
    if (!v.empty()) annotations[k] = v;
  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kOciImageManifestMediaType},
      {"config", descriptor(config_desc)},
      {"layers", {descriptor(layer)}},
      {"annotations", annotations},
  };
  return {config_text, manifest.dump()};
}

Result<std::optional<CheckpointImageInfo>> checkpoint_image_info(const std::string& manifest_json) {
  json m = json::parse(manifest_json, nullptr, false);
  if (!m.is_object()) return Error("registry manifest is not JSON");
  const json* ann = m.contains("annotations") && m["annotations"].is_object() ? &m["annotations"]
                                                                               : nullptr;
  CheckpointImageInfo info;
  if (ann)
    for (const auto& [key, engine] : kNameAnnotations)
      if (auto it = ann->find(key); it != ann->end() && it->is_string()) {
        info.container_name = it->get<std::string>();
        info.engine = engine;
        break;
      }
  if (info.engine.empty()) return std::optional<CheckpointImageInfo>{};
  if (auto it = ann->find("org.criu.checkpoint.engine.name"); it != ann->end() && it->is_string())
    info.engine = it->get<std::string>();
  // prewarm's own chunked images carry the CRI-O name too; they are not archives in a layer.
  json config_type =
      m.contains("config") && m["config"].is_object() ? m["config"].value("mediaType", json()) : json();
  if (m.value("artifactType", json()) == "application/vnd.prewarm.checkpoint.v1" ||
      (config_type.is_string() &&
       config_type.get<std::string>().find("prewarm") != std::string::npos))
    return std::optional<CheckpointImageInfo>{};

  const std::string what = "checkpoint image (" + info.engine + " annotations)";
  if (!m.contains("layers") || !m["layers"].is_array() || m["layers"].size() != 1)
    return Error(what + ": expected exactly one layer holding the checkpoint archive, found " +
                 (m.contains("layers") && m["layers"].is_array()
                      ? std::to_string(m["layers"].size())
                      : std::string("none")));
  const json& l = m["layers"][0];
  if (!l.is_object() || !l.contains("digest") || !l["digest"].is_string() ||
      !l.contains("size") || !l["size"].is_number_unsigned())
    return Error(what + ": its layer descriptor has no digest or size");
  info.layer.digest = l["digest"].get<std::string>();
  info.layer.size = l["size"].get<uint64_t>();
  if (json t = l.value("mediaType", json()); t.is_string()) info.layer.media_type = t.get<std::string>();
  bool known = info.layer.media_type == kDockerLayerMediaType;
  for (const char* t : kLayerMediaTypes) known = known || info.layer.media_type == t;
  if (!known)
    return Error(what + ": layer media type '" + info.layer.media_type +
                 "' is not a tar, tar+gzip or tar+zstd layer");
  return std::optional<CheckpointImageInfo>{info};
}

}  // namespace prewarm::image
