// The checkpoint image manifest: format version, what was baked from what, on which host,
// how long it took, and the size and SHA-256 of every file in the image.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "spec/app_spec.h"

namespace prewarm::image {

inline constexpr const char* kManifestMagic = "prewarm.checkpoint";
// 2: the spec's files are stored beside its YAML (specFiles). Version 1 images are still read.
inline constexpr int kFormatVersion = 2;
inline constexpr size_t kMaxManifestBytes = 16 << 20;
inline constexpr const char* kManifestFile = "manifest.json";

struct HostFacts {
  std::string kernel;        // uname -r
  std::string arch;          // uname -m
  std::string cpu_model;     // /proc/cpuinfo "model name"
  std::string criu_version;
  std::string runc_version;
};

struct FileDigest {
  std::string path;  // relative to the image dir
  uint64_t size = 0;
  std::string sha256;
};

// The container image a base was unpacked from (rootfs: {image: REF}).
struct RootfsImage {
  std::string reference;        // as the spec names it
  std::string manifest_digest;  // "sha256:<hex>"; the base id is "image:" + this
  std::string config_digest;    // "sha256:<hex>"
  bool operator==(const RootfsImage&) const = default;
};

struct Manifest {
  std::string magic = kManifestMagic;
  int format_version = kFormatVersion;
  std::string name;
  std::string created;     // RFC 3339, UTC
  std::string spec_yaml;   // the AppSpec the image was baked from (spec::to_yaml), without
                           // its files (format 1 images have them here)
  std::vector<spec::FileEntry> spec_files;  // the spec's files, each with its content
  std::string rootfs_id;   // rootfs::Base::id
  std::string rootfs_dir;  // lower directory the checkpoint expects
  std::optional<RootfsImage> rootfs_image;  // rootfs.image, for image bases only
  HostFacts host;
  bool tcp_established = false;
  std::map<std::string, double> timings_s;  // bake phases
  std::vector<FileDigest> files;
};

std::string to_json(const Manifest& m);
// Parses and checks magic, format version and field types; errors name the field.
Result<Manifest> parse_manifest(std::string_view text);

// The spec the image was baked from: spec_yaml with spec_files.
Result<spec::AppSpec> stored_spec(const Manifest& m);

// This host's facts (criu/runc versions supplied by the caller, who already asked them).
HostFacts current_host_facts(std::string criu_version, std::string runc_version);

// Why a checkpoint from `baked` should not be restored here ("" if it can be tried).
// Architecture and CRIU major.minor must match; kernel differences are allowed (CRIU checks
// what matters) but reported by `inspect`.
std::string incompatibility(const HostFacts& baked, const HostFacts& here);

}  // namespace prewarm::image
