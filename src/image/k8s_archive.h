// Export/import between prewarm images and the container checkpoint archive that kubelet's
// checkpoint API (through CRI-O), `podman container checkpoint --export` and checkpointctl use:
// a tar of checkpoint/ (CRIU files), config.dump, spec.dump, rootfs-diff.tar, stats-dump, ...
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "image/manifest.h"

namespace prewarm::image {

// prewarm's own files ride in the archive under this directory, so importing a prewarm export
// is lossless: prewarm/manifest.json, and every image file outside checkpoint/ and
// rootfs-diff.tar under its image path (prewarm/host/cpuinfo.img).
inline constexpr const char* kArchivePrewarmDir = "prewarm";

enum class Compression { kNone, kGzip, kZstd };

// "none", "gzip", "zstd" (the names `podman container checkpoint --compress` takes).
Result<Compression> parse_compression(std::string_view name);

struct ExportOptions {
  // CRI-O and the kubelet write uncompressed archives; podman defaults to zstd.
  Compression compression = Compression::kNone;
  // Passed to open_verified (verification stamps); empty: hash every file.
  std::filesystem::path stamp_dir;
  // When set, receives the SHA-256 (hex) of the uncompressed tar: an OCI layer's diff_id.
  std::string* tar_sha256 = nullptr;
};

// Writes the image at image_dir (which must pass open_verified) as a checkpoint archive at
// out_tar: checkpoint/, config.dump, spec.dump, rootfs-diff.tar, stats-dump (when the image has
// checkpoint/stats-dump) and prewarm/. The file appears whole or not at all (temp file + rename),
// mode 0600: it holds the app's memory.
Status export_archive(const std::filesystem::path& image_dir, const std::filesystem::path& out_tar,
                      const ExportOptions& opts);

struct ImportOptions {
  // Name of the app in a foreign archive's manifest and spec; empty: dest_image_dir's last
  // component. A prewarm export keeps the manifest it carries.
  std::string name;
  // The root filesystem the checkpoint was made on (a foreign archive names only the container
  // image; prewarm needs that image's files as a directory). Ignored for prewarm exports.
  std::filesystem::path rootfs_dir;
  // Caps on what an archive may unpack to (file bytes, entries), checked before writing.
  // import_archive lowers max_bytes to the free space where it unpacks, less a margin; a prewarm
  // export is held to the sizes its manifest declares from the moment that is read.
  uint64_t max_bytes = uint64_t{64} << 30;
  std::string max_bytes_reason;  // why max_bytes is what it is, for the error
  uint64_t max_entries = 100000;
  // Cap on what a gzip/zstd archive may decompress to (the tar with its headers and padding);
  // beyond it the import fails naming the archive.
  uint64_t max_decompressed_bytes = (uint64_t{64} << 30) + (uint64_t{1} << 30);
};

struct ImportedImage {
  std::filesystem::path dir;
  Manifest manifest;
  bool foreign = false;  // made by CRI-O/Podman/kubelet, not by prewarm
  // What the import could not carry over and may keep the image from restoring (bind mounts,
  // volumes, a terminal, unknown host facts), one sentence each.
  std::vector<std::string> warnings;
};

// Unpacks a checkpoint archive (uncompressed, gzip or zstd) into a new image at dest_image_dir,
// which must not exist. Only regular files and directories with plain relative names are
// accepted. A prewarm export is verified against the manifest it carries; a foreign archive gets
// a new manifest (AppSpec from spec.dump, rootfs = opts.rootfs_dir) and is sealed. On any error
// dest_image_dir is not created.
Result<ImportedImage> import_archive(const std::filesystem::path& tar,
                                     const std::filesystem::path& dest_image_dir,
                                     const ImportOptions& opts);

// A mount that a container from a foreign archive had beyond the runtime's usual ones. CRIU
// recorded its bind mounts (and the cgroup hierarchies under /sys/fs/cgroup) as external
// mounts, and a restore fails unless the same destinations are mounted again. The archive's
// host paths are never used: every bind mount gets a fresh per-instance source holding
// `content`, as CRI-O re-creates /etc/hosts and friends for a restored container.
struct ForeignMount {
  enum class Content { kNone, kHosts, kHostname, kResolvConf, kEmptyFile, kEmptyDir };
  std::string destination;  // absolute, without "." or ".." components
  std::string type;         // "bind", or a kernel file system (cgroup, tmpfs, mqueue, ...)
  std::string source;       // "" for bind mounts; else as in spec.dump ("cgroup", "tmpfs")
  std::vector<std::string> options;
  Content content = Content::kNone;  // bind mounts only

  bool operator==(const ForeignMount&) const = default;
};

// The mounts an image imported from a foreign archive needs (read from the spec.dump it
// keeps); empty for prewarm's own images. Mounts the OCI runtime sets up itself (/proc, /dev,
// /sys, ...) are left out unless the container had a bind mount there (/dev/shm is one with
// Podman and CRI-O); mounts prewarm cannot re-create safely (other file systems with host
// sources) are left out too, and import warned about them.
Result<std::vector<ForeignMount>> foreign_mounts(const std::filesystem::path& image_dir);

}  // namespace prewarm::image
