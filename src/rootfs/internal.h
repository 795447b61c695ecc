// Helpers shared by the rootfs module's files; not part of its public interface.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/unique_fd.h"
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

// The extractor behind extract_diff, reading the archive from tar_fd ("where" names it).
Status extract_tar(int tar_fd, const std::filesystem::path& dest, const std::string& where);

// Whether dir looks like a root filesystem: it has bin/ or usr/ at its top.
bool looks_like_rootfs(const std::filesystem::path& dir);

Result<Base> prepare_tarball(const spec::RootfsSource& source,
                             const std::filesystem::path& cache_dir, const Progress& progress);
Result<Base> prepare_debootstrap(const spec::RootfsSource& source,
                                 const std::filesystem::path& cache_dir, const Progress& progress);

}  // namespace prewarm::rootfs::detail
