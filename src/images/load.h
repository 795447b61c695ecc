// Opening an image for starting instances: unpacked, verified, its spec parsed and its base
// rootfs present on this host.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "image/k8s_archive.h"
#include "image/manifest.h"
#include "spec/app_spec.h"
#include "store/store.h"

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
  // Set (to store_digest) when `dir` is a lazy copy: every file of the image, except that its
  // pages files hold only the pages a lazy restore copies before the app resumes (the working
  // set, and what CRIU never serves lazily). The rest is served straight from the store's
  // chunks (page_server_main), so this image can only be restored lazily.
  std::string pages_from_store;
  // Set when the image is still being pulled: the pull's lock (images/pulling.h), which the page
  // server watches while it waits for packs.
  std::filesystem::path pull_lock;
};

// What names this image's checkpoint for memos (host check, file check): its manifest digest in
// the store, or the manifest itself for an image that has none.
std::string identity(const LoadedImage& img);

struct LoadOptions {
  // Make sure the base rootfs is on this host. Off for a pod's container, whose runtime
  // prepared the root from the container image itself.
  bool need_base = true;
  // The paging the start asks for ("" as lifecycle::StartOptions::paging). When the image has
  // no unpacked copy here and its restore will be lazy, a lazy copy is made instead of
  // unpacking the whole image: the first restore on a node does not wait for all its memory.
  std::optional<std::string> paging;
};

// Whether a restore of an image with this manifest and spec is lazy, for the requested paging
// ("" : the spec's restore.paging, then the context's default; "auto": checkpoints with at
// least Config::lazy_min_bytes of memory).
Result<bool> restore_is_lazy(const engine::Context& ctx, const image::Manifest& manifest,
                             const spec::AppSpec& spec, const std::string& paging);

// For a stored image whose restores are lazy by default (restore_is_lazy with ""): makes its
// lazy copy and returns true (a pull does this instead of unpacking it); false otherwise.
Result<bool> prepare_lazy_copy(const engine::Context& ctx, const std::string& name);

// Brings the packs named into the store (a pull's downloads).
using FetchPacks = std::function<Status(const std::vector<std::string>&)>;

// For a stored image whose restores are lazy by default (restore_is_lazy with ""): makes its
// lazy copy and returns its directory; nullopt for an image restored eagerly by default. With
// `fetch` (a pull still bringing the packs), the packs the copy reads are fetched first: those
// of every file but the pages, then those of the pages the copy keeps.
Result<std::optional<std::filesystem::path>> make_default_lazy_copy(const engine::Context& ctx,
                                                                    store::ImageReader& r,
                                                                    const FetchPacks& fetch);

// `prewarm page-server STORE_DIR MANIFEST_DIGEST [PULL_LOCK]`: serves a lazy restore's pages on fd 3 (CRIU's
// page-server protocol, for `criu lazy-pages --page-server`) straight from the store's chunks;
// with PULL_LOCK (an image still being pulled), a pack not in the store yet is waited for while
// that lock is held. Exit status 0 when the daemon closed the session, 1 on any failure (reported on stderr).
int page_server_main(const std::vector<std::string>& args);

// Opens and verifies images/NAME (unpacking it from the store when needed), and makes sure the
// rootfs it needs is on this host (rebuilding a tarball or debootstrap base from its recipe).
Result<LoadedImage> load_image(const engine::Context& ctx, const std::string& name,
                               const LoadOptions& options = {});

}  // namespace prewarm::images
