// Helpers shared by the rootfs module's files; not part of its public interface.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/tar.h"
#include "base/unique_fd.h"
#include "image/k8s_archive.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs::detail {

// openat2(root_fd, rel, RESOLVE_IN_ROOT): symlinks and ".." resolve as if root_fd were "/".
Result<UniqueFd> open_in_root(int root_fd, const std::string& rel, int flags, mode_t mode = 0);

// Builds cache_dir/<kind>/<key> once. Under an flock on cache_dir/<kind>/<key>.lock it reuses
// an existing entry, or runs build() on a fresh <key>.tmp-XXXXXX directory (mode 0755) and
// renames that into place; a failed build's directory is removed.
using Builder = std::function<Status(const std::filesystem::path& tmp_dir)>;
Result<std::filesystem::path> build_cached(const std::filesystem::path& cache_dir,
                                           std::string_view kind, const std::string& key,
                                           const Builder& build);

// build_cached for an overlay layer: layers_dir/<key>, layers_dir made absolute (a trailing
// slash dropped) and refused when it is "/".
Result<std::filesystem::path> build_layer(const std::filesystem::path& layers_dir,
                                          const std::string& key, const Builder& build);

// What extract_tar does beyond a rootfs diff's entries.
struct ExtractOptions {
  // OCI image layer semantics, for a layer unpacked over the layers below it in dest:
  // ".wh.NAME" removes NAME (and all under it) that lower layers put there and ".wh..wh..opq"
  // empties its directory of what lower layers put there (neither touches this layer's own
  // entries nor is created itself); a non-directory replaces a lower layer's directory however
  // full; character and block devices are made as root (skipped with a warning otherwise);
  // contiguous files are regular files.
  bool image_layer = false;
};

// The extractor behind extract_diff, reading the archive from r.
Status extract_tar(tar::Reader& r, const std::filesystem::path& dest,
                   const ExtractOptions& opts = {});

// Whether dir looks like a root filesystem: it has bin/ or usr/ at its top.
bool looks_like_rootfs(const std::filesystem::path& dir);

// Container images (image_source.cpp, image.cpp).

inline constexpr size_t kMaxImageConfigBytes = 16 << 20;
inline constexpr size_t kMaxImageLayers = 512;

struct Descriptor {
  std::string media_type;
  std::string digest;  // sha256:<hex>, checked
  uint64_t size = 0;
};

// An image manifest resolved to this host's platform.
struct ResolvedImage {
  std::string manifest_digest;
  Descriptor config;
  std::vector<Descriptor> layers;  // bottom first, media types checked
};

// Where an image's documents and blobs come from: a registry, an OCI layout, an OCI archive.
// Everything it hands out has been checked against its digest.
class ImageSource {
 public:
  static Result<std::unique_ptr<ImageSource>> open(std::string_view reference,
                                                   const registry::Options& opts);
  virtual ~ImageSource() = default;
  // "image 127.0.0.1:5000/app:v1": the prefix of errors about this image.
  const std::string& what() const { return what_; }
  const std::string& reference() const { return reference_; }

  // The manifest the reference names (through an index: the entry for linux/<this arch>).
  Result<ResolvedImage> resolve();
  // A blob read into memory (the config), at most max bytes; downloads go to scratch.
  virtual Result<std::string> read_blob(const Descriptor& d, size_t max,
                                        const std::filesystem::path& scratch) = 0;
  // The layers as files, in order; downloads and copies go to scratch.
  virtual Result<std::vector<std::filesystem::path>> layer_files(
      const std::vector<Descriptor>& layers, const std::filesystem::path& scratch) = 0;

 protected:
  explicit ImageSource(std::string reference)
      : reference_(std::move(reference)), what_("image " + reference_) {}
  // The first manifest or index the reference names, verified; media_type as far as known.
  virtual Result<registry::PulledManifest> top() = 0;
  // A manifest or index an index names, verified against d.digest.
  virtual Result<registry::PulledManifest> manifest(const Descriptor& d) = 0;

 private:
  std::string reference_;
  std::string what_;
};

// Parses a descriptor ("where" names it in errors).
Result<Descriptor> parse_descriptor(const nlohmann::json& j, const std::string& where);
// The layer's compression from its media type; unknown media types are refused.
Result<image::Compression> layer_compression(std::string_view media_type);
// The config's diff_ids (one per layer, or none when the config lists none), after checking
// that it describes a linux image for this host's architecture.
Result<std::vector<std::string>> parse_image_config(std::string_view json, size_t layers,
                                                    const std::string& what);
// This host's architecture as OCI names it (amd64, arm64, ...).
std::string oci_arch();

Result<Base> prepare_tarball(const spec::RootfsSource& source,
                             const std::filesystem::path& cache_dir, const Progress& progress);
Result<Base> prepare_debootstrap(const spec::RootfsSource& source,
                                 const std::filesystem::path& cache_dir, const Progress& progress);

}  // namespace prewarm::rootfs::detail
