// Small filesystem helpers that return errors as values.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace prewarm::fs {

Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes = 64 << 20);
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

// This process's mount points (/proc/self/mountinfo), in mount order.
std::vector<std::string> mount_points();
// Detaches every mount at or below `dir`, deepest first (what a killed CRIU or runc left, e.g.
// a bind-mounted root or CRIU's cgroup yard), so the tree can be removed.
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

}  // namespace prewarm::fs
