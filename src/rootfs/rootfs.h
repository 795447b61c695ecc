// Rootfs sources (directory, tarball, debootstrap recipe, container image), per-instance
// overlayfs, and the capture/re-application of the changes an app made to its rootfs.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "registry/registry.h"
#include "spec/app_spec.h"

namespace prewarm::rootfs {

using Progress = std::function<void(const std::string&)>;

// The container image a base was unpacked from.
struct ImageInfo {
  std::string reference;        // as the spec names it (spec::ImageRef::to_string)
  std::string manifest_digest;  // "sha256:<hex>" of the image manifest (under an index: the
                                // one for this host's platform), which names the base
  std::string config_digest;    // "sha256:<hex>" of the image config
};

struct Base {
  std::filesystem::path dir;  // read-only lower directory shared by all instances
  // identity: "dir:<path>", "tar:<sha256>", "debootstrap:<key>", "image:sha256:<hex>"
  std::string id;
  std::optional<ImageInfo> image;  // for image bases
};

// Resolves a source to a base directory. Tarballs are extracted once into
// cache_dir/tar/<sha256>; debootstrap recipes are built once into cache_dir/debootstrap/<key>
// (key = sha256 of suite, variant, sorted packages, mirror); container images once into
// cache_dir/image/<hex of the manifest digest> (prepare_image_base); all are built in a
// temporary directory and renamed into place, so an interrupted build leaves nothing half-made.
// `registry` is used for images in a registry (progress goes to `progress` when it has none).
Result<Base> prepare_base(const spec::RootfsSource& source, const std::filesystem::path& cache_dir,
                          const Progress& progress = {}, const registry::Options& registry = {});

// The directory of a base prewarm built ("tar:<sha256>", "debootstrap:<key>" or
// "image:sha256:<hex>", as Base::id) in cache_dir, derived from the id alone. kNotFound if it
// was not built here (for an image, the message names the manifest digest to pull);
// kInvalidInput for any other id (a "dir:" base is a host path, which only the host that baked
// may use).
Result<std::filesystem::path> built_base_dir(std::string_view id,
                                             const std::filesystem::path& cache_dir);

// Container images as bases. A reference is what spec/image_ref.h reads: HOST[:PORT]/REPO:TAG or
// @sha256:DIGEST (a registry, through the registry client with `opts`: auth, TLS, timeouts,
// progress, limits), oci:PATH[:TAG] (an OCI image layout) or oci-archive:PATH[:TAG] (a tar of
// one); a relative PATH is taken from the current directory. An index (or Docker manifest list)
// resolves to its linux entry for this host's architecture. OCI and Docker schema 2 manifests;
// layers tar, tar+gzip, tar+zstd. Every manifest, config and layer is checked against its digest,
// and each layer's uncompressed content against the config's diff_ids.

// The manifest and config digests `reference` names now; downloads no layer.
Result<ImageInfo> resolve_image(std::string_view reference, const registry::Options& opts);

// Unpacks the image's layers, in order, into cache_dir/image/<hex of the manifest digest>, once:
// a base already there is reused without downloading anything (a registry reference by tag
// still fetches its manifest, to learn which digest the tag names now). Built in a temporary
// directory under an flock and renamed into place; a failure (a blob that does not verify, a
// hostile layer) leaves nothing in the cache.
Result<Base> prepare_image_base(std::string_view reference, const std::filesystem::path& cache_dir,
                                const registry::Options& opts, const Progress& progress = {});

// The id of the base unpacked from the image with this manifest digest: "image:sha256:<hex>".
std::string image_base_id(std::string_view manifest_digest);

// Applies one layer blob over dest (the layers below it already unpacked there), with OCI
// whiteouts and opaque directories and the extractor's safety (see extract_diff). media_type
// picks the compression (application/vnd.oci.image.layer.v1.tar[+gzip|+zstd], Docker's
// rootfs.diff.tar.gzip); with diff_id, the uncompressed stream must hash to it.
Status unpack_layer(const std::filesystem::path& blob, std::string_view media_type,
                    const std::filesystem::path& dest, std::string_view diff_id = {});

// An overlay mount: lowers (read-only, topmost first; the last is the base) + upper/work under
// instance_dir, mounted at instance_dir/rootfs.
struct Overlay {
  std::filesystem::path lower;  // the topmost lower (lowers.front())
  std::vector<std::filesystem::path> lowers;
  std::filesystem::path upper, work, merged;
};

// Creates instance_dir/{upper,work,rootfs} and mounts the overlay.
Result<Overlay> mount_overlay(const std::filesystem::path& lower,
                              const std::filesystem::path& instance_dir);
// The same with several read-only layers, topmost first: {diff_layer(...), base.dir}. The last
// one must look like a root filesystem (not a host directory); the upper, when created here,
// gets the mode and owner of the topmost lower's root, since an upper's root hides the lowers'.
Result<Overlay> mount_overlay(const std::vector<std::filesystem::path>& lowers,
                              const std::filesystem::path& instance_dir);
// Unmounts (lazily if busy); not mounted is fine.
Status unmount(const std::filesystem::path& merged);

// Writes spec files into a root directory (an upper dir before mount, or a rootfs), resolving
// paths with openat2(RESOLVE_IN_ROOT) so that symlinks can't escape it. Creates parents (0755).
// In an upper dir, a created parent hides the mode and owner of the lower's directory of the
// same name (e.g. /tmp's 1777), so prefer the merged view when the parents exist in the base.
Status place_files(const std::vector<spec::FileEntry>& files, const std::filesystem::path& root);

// Images carry their files: at bake every `source` (a host file; regular files only) is read
// into `content`, so that no node ever looks up a host path an image names.
inline constexpr size_t kMaxInlineFileBytes = 1 << 20;
inline constexpr size_t kMaxInlineTotalBytes = 8 << 20;
Status inline_sources(std::vector<spec::FileEntry>& files);

// Archives an overlay upper dir (the app's changes, whiteouts and opaque dirs included) as tar.
Status capture_diff(const std::filesystem::path& upper, const std::filesystem::path& tar_file);
// Extracts such an archive into a fresh upper dir (in-process, as extract_diff).
Status apply_diff(const std::filesystem::path& tar_file, const std::filesystem::path& upper);

// The archive as a read-only overlay layer, extracted once: layers_dir/<sha256 of tar_file>/.
// A complete layer is reused as is; otherwise it is extracted into a temporary directory and
// renamed into place under an flock (layers_dir/<sha256>.lock), so concurrent callers for one
// archive extract it once and all get the same directory. Whiteouts (0/0 character devices)
// and opaque directories (trusted.overlay.opaque=y) act in a lower layer as in an upper one.
// Mount it above the base: mount_overlay({layer, base.dir}, instance_dir). Needs root (whiteouts,
// trusted.* xattrs, ownership).
// verified_sha256: the archive's SHA-256 when the caller has just verified it (an image's
// manifest lists it), so a restore does not hash the archive again; an existing layer is then
// found without reading the archive, and a new one is still checked against it first.
Result<std::filesystem::path> diff_layer(const std::filesystem::path& tar_file,
                                         const std::filesystem::path& layers_dir,
                                         std::string_view verified_sha256 = {});

// A container's /dev as runc makes its tmpfs: the standard device nodes (0666), the
// /proc/self/fd links, ptmx, and mount points for pts, shm and mqueue, made in the existing,
// empty directory `dev`.
Status make_dev_tree(const std::filesystem::path& dev);

// That tree once, as a read-only overlay layer holding only /dev, marked opaque so that the
// base's own /dev stays hidden: layers_dir/dev-1/. Mounted between the image's diff and the
// base, the instance's root brings its /dev ready made, and a write to it is copied up into the
// instance's own upper like any other. Fails on a nodev filesystem, or where trusted.* xattrs
// can't be set (needs root).
inline constexpr const char* kDevLayerName = "dev-1";
Result<std::filesystem::path> dev_layer(const std::filesystem::path& layers_dir);

// Extracts a diff archive (what capture_diff's GNU tar writes: files, dirs, symlinks, hard
// links, 0/0 char devices, FIFOs, pax SCHILY.xattr.* records, GNU long names, numeric owners,
// modes, mtimes) into the existing directory dest, in-process. Entries are created relative to
// directory fds opened without following symlinks, so absolute names, "..", and paths through
// a symlink an earlier entry planted are refused; so are other devices and sparse files. As
// non-root, ownership and trusted.*/security.* xattrs are skipped (as GNU tar does).
Status extract_diff(const std::filesystem::path& tar_file, const std::filesystem::path& dest);

// The Debian mirror the host's apt uses (from /etc/apt/sources.list.d/*.sources or sources.list).
// PREWARM_DEBIAN_MIRROR, when set, takes precedence.
Result<std::string> host_debian_mirror();

// Building blocks of the above, exposed so they can be tested without the host's files.

// One apt source file: a name ending in ".sources" is deb822, anything else one-line format.
struct AptSourceFile {
  std::string name;
  std::string text;
};
// The first binary (Types: deb) URI serving a non-security suite, searching files in order.
Result<std::string> parse_debian_mirror(const std::vector<AptSourceFile>& files);

// Cache key of a debootstrap recipe: sha256 over suite, variant, sorted packages and mirror.
std::string debootstrap_key(const spec::RootfsSource& source, const std::string& mirror);

}  // namespace prewarm::rootfs
