// Images as the user manages them: the content-addressed store (state/store, an OCI image
// layout) is the source of truth; images/NAME is the node-local unpacked copy restores read
// (measured: rebuilding it for every restore would cost more than the restore itself).
#pragma once

#include <set>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/result.h"
#include "engine/context.h"
#include "registry/registry.h"
#include "store/store.h"

namespace prewarm::images {

using engine::Context;

Result<store::Store> open_store(const Context& ctx);
// Where lazy copies live (STATE/lazy-copies/<manifest digest hex>; see load.h).
std::filesystem::path lazy_copies_dir(const Context& ctx);
// "sha256:abc" -> "abc".
std::string digest_hex(const std::string& digest);

// Adds a freshly baked (sealed) images/NAME to the store.
Result<store::PutResult> store_image(const Context& ctx, const std::string& name);
// Marks an image directory as the copy of the stored manifest manifest_digest
// (image::kStoreDigestFile); an image directory stored by hand needs this before it is renamed
// into images/.
Status record_store_digest(const std::filesystem::path& image_dir,
                           const std::string& manifest_digest);

// Images whose manifest this host wrote (baked here, or a foreign checkpoint imported over a
// rootfs the operator named) may use a host directory as their base; an image from a registry
// or a prewarm archive may not: it could name any directory. Kept as
// stamps/made-here-<sha256 of its manifest.json>, so replacing the image changes the answer.
Status mark_made_here(const Context& ctx, const std::filesystem::path& image_dir);
bool made_here(const Context& ctx, const std::filesystem::path& image_dir);

// Makes sure images/NAME is an unpacked copy of what the store holds under NAME: unpacks it
// when missing or stale (a crash between a pull's or bake's index update and the unpacking),
// refuses a copy whose manifest.json was edited, and refuses NAME when the store no longer has
// it (a copy an interrupted rmi left). Returns the store's manifest digest of NAME.
Result<std::string> ensure_unpacked(const Context& ctx, const std::string& name);

struct ImageInfo {
  std::string name;
  std::string created;
  std::string manifest_digest;
  uint64_t raw_bytes = 0;
  uint64_t stored_bytes = 0;
  bool unpacked = false;
  std::string problem;
};
Result<std::vector<ImageInfo>> list_images(const Context& ctx);

// Removes an image: its store entry (blobs go at gc) and its unpacked copy.
Status remove_image(const Context& ctx, const std::string& name);

struct GcReport {
  store::GcResult store;
  // Staging dirs no live prewarm owns: left by bakes, imports, unpackings and checkpoint-image
  // transfers that were killed.
  fs::StaleStaging staging;
  // CRIU's scratch dirs (host checks) that killed prewarms left in the temp dir, host-wide.
  fs::StaleStaging criu_scratch;
};
// Removes store blobs no image references, keeping those of `in_use` (manifest digests of
// images that running instances were started from, even when the image itself was removed),
// unpacked copies of images the store no longer has (an interrupted rmi), and the staging dirs
// of killed operations. With drop_partials, partial downloads kept for
// resuming pulls go too, whatever their age.
Result<GcReport> collect_garbage(const Context& ctx, const std::set<std::string>& in_use,
                                 bool drop_partials = false);

// Re-hashes the store's blobs (one image, or all when name is empty) and the unpacked copies,
// and checks that each copy is the image the store holds (not stale, manifest.json not edited,
// not left over from a removed image).
Result<std::string> verify_images(const Context& ctx, const std::string& name);

registry::Options registry_options(const Context& ctx);

// The blobs an OCI image manifest references (config first, then the layers), as registry
// descriptors; an error for anything else.
Result<std::vector<registry::Blob>> manifest_blobs(const std::string& manifest_json);

// Pushes the image's store manifest and chunk blobs (only those the registry lacks).
Status push_image(const Context& ctx, const std::string& name, const std::string& ref,
                  const registry::Options& opts);
// Pushes the image as a CRI-O/Podman checkpoint image: an OCI image whose one layer is the
// image's checkpoint archive (as `export` writes it, zstd-compressed), with the annotations
// those engines restore from. No chunk-level dedup: the layer is one blob.
Status push_checkpoint_image(const Context& ctx, const std::string& name, const std::string& ref,
                             const registry::Options& opts);
// Pulls ref into the store as `name` (default: the repository's last path component) and
// unpacks it. Returns the image name. A checkpoint image made by CRI-O, Podman or containerd is
// imported like its archive would be, with `rootfs` as its base (see import_image).
Result<std::string> pull_image(const Context& ctx, const std::string& ref, std::string name,
                               const registry::Options& opts,
                               const std::filesystem::path& rootfs = {});

// Writes the Kubernetes/CRI-O checkpoint archive layout (checkpoint/, config.dump, spec.dump,
// rootfs-diff.tar, …) of an image; prewarm's own manifest rides along for lossless imports.
Status export_image(const Context& ctx, const std::string& name, const std::filesystem::path& out,
                    const std::string& compression);

struct ImportResult {
  std::string name;
  bool foreign = false;
  std::vector<std::string> warnings;
};
// Imports such an archive (a prewarm export, or one from kubelet / CRI-O / Podman, which needs
// `rootfs`: the root filesystem of the container image it was made from) as image `name`
// (default: the archive's file name without extensions) and adds it to the store.
Result<ImportResult> import_image(const Context& ctx, const std::filesystem::path& archive,
                                  std::string name, const std::filesystem::path& rootfs);

}  // namespace prewarm::images
