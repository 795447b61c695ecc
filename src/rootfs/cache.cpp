// The build-once cache behind tarball and debootstrap bases: an flock per key, a temporary
// directory per build, and an atomic rename into place.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <system_error>

#include "base/fs.h"
#include "base/log.h"
#include "rootfs/internal.h"

namespace prewarm::rootfs::detail {
namespace {

// Removes a build directory; refuses when something is still mounted inside it.
void discard(const std::filesystem::path& tmp) {
  Status st = fs::unmount_under(tmp);
  if (st.ok()) st = fs::remove_all(tmp);
  if (!st.ok()) log::warn("leaving " + tmp.string() + " behind: " + st.error().message());
}

// Builds interrupted by a crash leave <key>.tmp-* behind; with the lock held none is live.
void discard_stale(const std::filesystem::path& dir, const std::string& key) {
  std::error_code ec;
  const std::string prefix = key + ".tmp-";
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().filename().string().starts_with(prefix)) discard(entry.path());
  }
}

}  // namespace

Result<std::filesystem::path> build_cached(const std::filesystem::path& cache_dir,
                                           std::string_view kind, const std::string& key,
                                           const Builder& build) {
  const std::filesystem::path dir = cache_dir / kind;
  const std::filesystem::path dest = dir / key;
  std::error_code ec;
  // Entries appear only by rename, so one that exists is complete.
  if (std::filesystem::is_directory(dest, ec)) return dest;

  PW_TRY(fs::make_dirs(dir, 0755));
  const std::filesystem::path lock_path = dir / (key + ".lock");
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return Error::sys("open lock", errno, lock_path.string());
  while (::flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::sys("lock", errno, lock_path.string());
  }
  if (std::filesystem::is_directory(dest, ec)) return dest;  // built while we waited
  discard_stale(dir, key);

  std::string tmpl = (dir / (key + ".tmp-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::sys("mkdtemp", errno, tmpl);
  const std::filesystem::path tmp = tmpl;
  Status st;
  // mkdtemp makes 0700; the base becomes the container's "/", which must be 0755.
  if (::chmod(tmp.c_str(), 0755) != 0) st = Error::sys("chmod", errno, tmp.string());
  if (st.ok()) st = build(tmp);
  if (st.ok()) st = fs::unmount_under(tmp);
  if (st.ok() && ::rename(tmp.c_str(), dest.c_str()) != 0)
    st = Error::sys("rename", errno, dest.string());
  if (!st.ok()) {
    discard(tmp);
    return std::move(st).error();
  }
  return dest;
}

Result<std::filesystem::path> build_layer(const std::filesystem::path& layers_dir,
                                          const std::string& key, const Builder& build) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::absolute(layers_dir, ec).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // a trailing slash
  if (!dir.has_parent_path() || dir == dir.root_path())
    return Error("layers directory " + layers_dir.string() + " can't be \"/\"", EINVAL);
  return build_cached(dir.parent_path(), dir.filename().string(), key, build);
}

}  // namespace prewarm::rootfs::detail
