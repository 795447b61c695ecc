// Writing OCI images from a root filesystem directory: one gzip layer and an image config, as
// an OCI image layout (a directory) or as a tar archive of one, which `ctr images import`,
// `podman load` and `skopeo copy oci-archive:` read. Deterministic: the same tree, config and
// options give the same bytes, so the same digests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"

namespace prewarm::ociimage {

// The runtime part of an OCI image config ("config" in the JSON).
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "8080/tcp"
  std::map<std::string, std::string> labels;
  std::string architecture = "amd64";
  std::string os = "linux";
};

struct WriteOptions {
  // The image's name, e.g. "prewarm.test/tiny:1": index.json's descriptor carries it as
  // org.opencontainers.image.ref.name and as containerd's io.containerd.image.name (so `ctr
  // images import` names the image without --base-name). Must not be empty.
  std::string name;
  // Every layer entry gets this mtime (seconds since the epoch), so that the digests do not
  // depend on when the tree was built; the archive's own entries too.
  int64_t mtime = 0;
  // gzip level of the layer, 1..9.
  int gzip_level = 6;
  // Leave devices, sockets and FIFOs out (a debootstrap tree's /dev) instead of refusing them;
  // container runtimes make /dev themselves.
  bool skip_special_files = false;
};

struct WrittenImage {
  std::string manifest_digest;  // "sha256:<hex>"
  uint64_t manifest_size = 0;
  std::string config_digest;    // the image id containerd reports
  std::string layer_digest;     // of the gzip blob
  std::string diff_id;          // of the uncompressed layer tar
  uint64_t layer_size = 0;      // gzip blob bytes
};

// Writes the layout into `out_dir`, which must not exist (it is made, complete, or not at all).
// The layer holds directories, regular files and symlinks of `rootfs` with their modes and
// owners; hard links are stored as separate files; sockets, devices and FIFOs are refused.
Result<WrittenImage> write_layout(const std::filesystem::path& rootfs, const ImageConfig& config,
                                  const WriteOptions& options,
                                  const std::filesystem::path& out_dir);

// Writes the same layout as an uncompressed tar archive at `out_tar` (replaced atomically if
// it exists): oci-layout, index.json, blobs/sha256/*, in that order.
Result<WrittenImage> write_archive(const std::filesystem::path& rootfs, const ImageConfig& config,
                                   const WriteOptions& options,
                                   const std::filesystem::path& out_tar);

}  // namespace prewarm::ociimage
