// Small filesystem helpers that return errors as values.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::fs {

Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes = 64 << 20);
// The rest of an open file (`path` names it in errors), as read_file.
Result<std::string> read_fd(int fd, const std::filesystem::path& path, size_t max_bytes);
// Writes via a temporary file in the same directory, fsync and rename: readers see the old
// content or the new one, never a torn file. durable=false skips the fsync, for state that a
// reboot makes meaningless anyway (an instance's record): still atomic if the process dies.
Status write_file_atomic(const std::filesystem::path& path, std::string_view content,
                         mode_t mode = 0600, bool durable = true);
Status write_file(const std::filesystem::path& path, std::string_view content, mode_t mode = 0644);
Status make_dirs(const std::filesystem::path& path, mode_t mode = 0700);
// Removes a tree; missing is fine.
Status remove_all(const std::filesystem::path& path);
std::string random_hex(size_t bytes);
// Bytes in the regular files of a tree (symlinks not followed); unreadable parts count 0.
uint64_t tree_bytes(const std::filesystem::path& dir);

// Makes `view` (emptied first, 0700) a directory of relative symlinks to the files of `src`,
// except those named in `skip` (the caller writes its own versions there). Relative, because
// CRIU opens some images after it has moved into the restored mount namespace and root, where
// an absolute link would point into the container; a relative one resolves from the view's
// directory fd, outside that root. Not hard links: a link changes the file's ctime, which makes
// the next start re-hash the image (its verification stamp records ctime).
Status symlink_view(const std::filesystem::path& src, const std::filesystem::path& view,
                    const std::vector<std::string>& skip = {});

// This process's mount points (/proc/self/mountinfo), in mount order.
std::vector<std::string> mount_points();
// Detaches every mount at or below `dir`, deepest first (a build's chroot mounts, or what a
// killed CRIU or runc left: a bind-mounted root, CRIU's cgroup yard), so the tree can be
// removed; EBUSY if any is still there after.
Status unmount_under(const std::filesystem::path& dir);

// Removes a directory tree (staging, scratch, a temporary work dir) when it goes out of scope,
// unless released; moving hands the duty over.
class RemoveOnExit {
 public:
  RemoveOnExit() = default;
  explicit RemoveOnExit(std::filesystem::path path) : path_(std::move(path)) {}
  RemoveOnExit(RemoveOnExit&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  RemoveOnExit& operator=(RemoveOnExit&&) = delete;
  ~RemoveOnExit() {
    if (!path_.empty()) (void)prewarm::fs::remove_all(path_);
  }
  const std::filesystem::path& path() const { return path_; }
  // The tree stays (it was renamed into place, or is someone else's now).
  void release() { path_.clear(); }

 private:
  std::filesystem::path path_;
};

// A staging directory (a bake's checkpoint before it is installed, an import's scratch, an image
// being unpacked, an image moved aside to be deleted): flock'ed by its maker for as long as
// this object lives. The kernel drops the lock when the maker dies, so a staging directory
// whose lock can be taken belongs to no live operation: remove_stale_staging clears exactly
// those. The lock follows the directory through renames. The tree is removed when the object
// goes (still under the lock), unless released.
class StagingDir {
 public:
  // A new directory dir/(prefix + random hex), 0700, locked before anything is put in it.
  static Result<StagingDir> create(const std::filesystem::path& dir, const std::string& prefix);
  // Locks an existing directory (waiting while another holds it) and renames it to `to`, where
  // it is removed when the object goes; on failure it stays where it was.
  static Result<StagingDir> move_aside(const std::filesystem::path& from,
                                       const std::filesystem::path& to);

  StagingDir(StagingDir&& o) noexcept
      : path_(std::exchange(o.path_, {})), fd_(std::move(o.fd_)),
        remove_(std::exchange(o.remove_, false)) {}
  StagingDir& operator=(StagingDir&&) = delete;
  ~StagingDir() {
    if (remove_ && !path_.empty()) (void)prewarm::fs::remove_all(path_);
  }
  const std::filesystem::path& path() const { return path_; }
  // Renames the directory; it stays locked and owned under its new name.
  Status rename_to(const std::filesystem::path& to);
  // The tree stays (it was renamed into place); the lock is held until this object goes.
  void release() { remove_ = false; }

 private:
  StagingDir(std::filesystem::path path, UniqueFd fd)
      : path_(std::move(path)), fd_(std::move(fd)) {}
  std::filesystem::path path_;
  UniqueFd fd_;  // holds the flock
  bool remove_ = true;
};

struct StaleStaging {
  uint64_t dirs = 0;
  uint64_t bytes = 0;
};
// Removes the directories directly in `dir` whose names start with one of `prefixes` and whose
// lock no one holds (see StagingDir): what killed bakes, imports and unpackings left.
Result<StaleStaging> remove_stale_staging(const std::filesystem::path& dir,
                                          const std::vector<std::string>& prefixes);

}  // namespace prewarm::fs
