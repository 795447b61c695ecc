// Rootfs sources (directory, tarball, debootstrap recipe), per-instance overlayfs, and the
// capture/re-application of the changes an app made to its rootfs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "spec/app_spec.h"

namespace prewarm::rootfs {

using Progress = std::function<void(const std::string&)>;

struct Base {
  std::filesystem::path dir;  // read-only lower directory shared by all instances
  std::string id;             // identity: "dir:<path>", "tar:<sha256>", "debootstrap:<key>"
};

// Resolves a source to a base directory. Tarballs are extracted once into
// cache_dir/tar/<sha256>; debootstrap recipes are built once into cache_dir/debootstrap/<key>
// (key = sha256 of suite, variant, sorted packages, mirror); both are built in a temporary
// directory and renamed into place, so an interrupted build leaves nothing half-made.
Result<Base> prepare_base(const spec::RootfsSource& source, const std::filesystem::path& cache_dir,
                          const Progress& progress = {});

// The directory of a base prewarm built ("tar:<sha256>" or "debootstrap:<key>", as Base::id)
// in cache_dir, derived from the id alone. kNotFound if it was not built here; kInvalidInput
// for any other id (a "dir:" base is a host path, which only the host that baked may use).
Result<std::filesystem::path> built_base_dir(std::string_view id,
                                             const std::filesystem::path& cache_dir);

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
