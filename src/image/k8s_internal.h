// Shared by checkpoint archive export (k8s_archive.cpp), import (k8s_import.cpp) and the
// conversion of foreign archives (k8s_foreign.cpp); not part of the image module's interface.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>

#include "base/result.h"
#include "image/k8s_archive.h"

namespace prewarm::image::k8s {

// Archive members: checkpointctl lib/metadata.go (ConfigDumpFile, SpecDumpFile, ...), CRI-O
// internal/lib/checkpoint.go and Podman's libpod exportCheckpoint (what they include).
inline constexpr const char* kConfigDump = "config.dump";
inline constexpr const char* kSpecDump = "spec.dump";
inline constexpr const char* kStatsDump = "stats-dump";  // go-criu stats.StatsDump
inline constexpr const char* kNetworkStatus = "network.status";
inline constexpr const char* kDeletedFiles = "deleted.files";
inline constexpr const char* kBindMounts = "bind.mounts";  // CRI-O only
inline constexpr const char* kDumpLog = "dump.log";
inline constexpr const char* kDevShmTar = "devshm-checkpoint.tar";
inline constexpr const char* kVolumesDir = "volumes";
inline constexpr const char* kPodOptions = "pod.options";
inline constexpr const char* kPodDump = "pod.dump";
// Inside an image imported from a foreign archive, that archive's metadata files live here.
inline constexpr const char* kForeignMetaDir = "k8s";

inline constexpr size_t kMaxDumpJson = 16 << 20;

// What an archive unpacked to (relative names, as tar::clean_name returns them).
struct Extracted {
  std::set<std::string> files;
  std::set<std::string> dirs;
  uint64_t bytes = 0;
};

inline bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Go's time.Time JSON decoding (checkpointctl, CRI-O) accepts RFC 3339 only.
bool is_rfc3339(const std::string& s);

// Where an image file travels in the archive: CRIU files and the rootfs diff where CRI-O puts
// them, everything else of prewarm's under prewarm/.
std::string archive_name(const std::string& image_path);

// Makes root/rel and its missing parents, 0700. Plain path concatenation is safe there: the
// tree is a fresh private directory into which only directories and regular files are written.
Status make_tree(const std::filesystem::path& root, const std::string& rel,
                 const std::string& where);
// Renames `from` to img/rel (both under one scratch directory), making parents as above.
Status move(const std::filesystem::path& from, const std::filesystem::path& img,
            const std::string& rel);

// Builds a sealed prewarm image in `img` from a Kubernetes/CRI-O/Podman archive unpacked in `x`.
Result<ImportedImage> assemble_foreign(const std::filesystem::path& x, const Extracted& ex,
                                       const std::filesystem::path& img,
                                       const std::filesystem::path& dest,
                                       const ImportOptions& opts, const std::string& where);

}  // namespace prewarm::image::k8s
