// Filesystem helpers.
#include "base/fs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "base/unique_fd.h"

namespace prewarm::fs {

Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, path.string());
  return read_fd(fd.get(), path, max_bytes);
}

Result<std::string> read_fd(int fd, const std::filesystem::path& path, size_t max_bytes) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("read", errno, path.string());
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > max_bytes)
      return Error(path.string() + " is larger than the " + std::to_string(max_bytes) +
                   " bytes this reader accepts");
  }
  return out;
}

namespace {
Status write_all(int fd, std::string_view content, const std::filesystem::path& path) {
  while (!content.empty()) {
    ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", errno, path.string());
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}
}  // namespace

Status write_file(const std::filesystem::path& path, std::string_view content, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd.valid()) return Error::sys("create", errno, path.string());
  return write_all(fd.get(), content, path);
}

Status write_file_atomic(const std::filesystem::path& path, std::string_view content,
                         mode_t mode, bool durable) {
  std::filesystem::path tmp = path;
  tmp += ".tmp-" + random_hex(4);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd.valid()) return Error::sys("create", errno, tmp.string());
  Status st = write_all(fd.get(), content, tmp);
  if (st.ok() && durable && ::fsync(fd.get()) != 0) st = Error::sys("fsync", errno, tmp.string());
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = Error::sys("rename", errno, path.string());
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

Status make_dirs(const std::filesystem::path& path, mode_t mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Error::sys("mkdir", ec.value(), path.string());
  if (::chmod(path.c_str(), mode) != 0) return Error::sys("chmod", errno, path.string());
  return {};
}

Status remove_all(const std::filesystem::path& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec && ec.value() != ENOENT) return Error::sys("remove", ec.value(), path.string());
  return {};
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}

// Field 5 of each line, with its octal escapes (\040) undone.
std::vector<std::string> mount_points() {
  std::vector<std::string> out;
  auto text = read_file("/proc/self/mountinfo", 16 << 20);
  if (!text.ok()) return out;
  size_t start = 0;
  while (start < text->size()) {
    size_t nl = text->find('\n', start);
    if (nl == std::string::npos) nl = text->size();
    std::string_view line(text->data() + start, nl - start);
    start = nl + 1;
    size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string_view::npos; ++field) {
      pos = line.find(' ', pos);
      if (pos != std::string_view::npos) ++pos;
    }
    if (pos == std::string_view::npos) continue;
    std::string_view raw = line.substr(pos, line.find(' ', pos) - pos);
    std::string mp;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\\' && i + 3 < raw.size()) {
        int v = 0;
        bool octal = true;
        for (size_t j = 1; j <= 3; ++j) {
          char c = raw[i + j];
          if (c < '0' || c > '7') octal = false;
          v = v * 8 + (c - '0');
        }
        if (octal) {
          mp += static_cast<char>(v);
          i += 3;
          continue;
        }
      }
      mp += raw[i];
    }
    out.push_back(std::move(mp));
  }
  return out;
}

Status unmount_under(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::path canon = std::filesystem::weakly_canonical(dir, ec);
  if (ec) canon = dir;
  const std::string root = canon.string();
  auto under = [&] {
    std::vector<std::string> hits;
    for (auto& mp : mount_points()) {
      if (mp == root || mp.starts_with(root + "/")) hits.push_back(mp);
    }
    // Deepest first.
    std::sort(hits.begin(), hits.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    return hits;
  };
  for (const auto& mp : under()) (void)::umount2(mp.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
  auto left = under();
  if (!left.empty())
    return Error("could not unmount " + left.front() + " (and " + std::to_string(left.size() - 1) +
                     " more under " + root + ")",
                 EBUSY);
  return {};
}

namespace {

// Locks an open directory; then checks that `path` still names it, since whoever held the lock
// may have removed or renamed it meanwhile (kNotFound). kUnavailable: another holds it (only
// without wait).
Result<UniqueFd> lock_dir(UniqueFd fd, const std::filesystem::path& path, bool wait) {
  while (::flock(fd.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    if (errno == EWOULDBLOCK && !wait)
      return Error(ErrorKind::kUnavailable, path.string() + " is locked by a live operation");
    if (errno != EINTR) return Error::sys("flock", errno, path.string());
  }
  struct stat held {}, now {};
  if (::fstat(fd.get(), &held) != 0) return Error::sys("fstat", errno, path.string());
  if (::lstat(path.c_str(), &now) != 0 || held.st_ino != now.st_ino ||
      held.st_dev != now.st_dev || held.st_nlink == 0)
    return Error(ErrorKind::kNotFound, path.string() + " was removed or moved meanwhile");
  return fd;
}

Result<UniqueFd> open_dir(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, path.string());
  return fd;
}

}  // namespace

Status symlink_view(const std::filesystem::path& src, const std::filesystem::path& view,
                    const std::vector<std::string>& skip) {
  namespace stdfs = std::filesystem;
  PW_TRY(fs::remove_all(view));
  PW_TRY(fs::make_dirs(view, 0700));
  std::error_code ec;
  // One resolution for all links (per file it costs ~40 readlinks).
  const stdfs::path up = stdfs::relative(stdfs::absolute(src), stdfs::absolute(view), ec);
  if (ec || up.empty()) return Error::sys("relative path", ec ? ec.value() : EINVAL, src.string());
  for (const auto& e : stdfs::directory_iterator(src, ec)) {
    const std::string name = e.path().filename().string();
    if (std::find(skip.begin(), skip.end(), name) != skip.end()) continue;
    stdfs::path link = view / name;
    stdfs::create_symlink(up / name, link, ec);
    if (ec) return Error::sys("symlink", ec.value(), link.string());
  }
  if (ec) return Error::sys("read directory", ec.value(), src.string());
  return {};
}

uint64_t tree_bytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
      total += static_cast<uint64_t>(st.st_size);
  }
  return total;
}

Result<StagingDir> StagingDir::create(const std::filesystem::path& dir, const std::string& prefix) {
  // A gc may take the lock of the fresh, empty directory before its maker does and remove it:
  // then the maker finds it gone and tries another name.
  for (int attempt = 0;; ++attempt) {
    std::filesystem::path path = dir / (prefix + random_hex(4));
    if (::mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST && attempt < 3) continue;
      return Error::sys("mkdir", errno, path.string());
    }
    auto fd = open_dir(path);
    if (!fd.ok() && fd.error().errno_value() == ENOENT && attempt < 3) continue;
    if (!fd.ok()) return std::move(fd).error();
    auto locked = lock_dir(std::move(fd).value(), path, true);
    if (!locked.ok() && locked.error().kind() == ErrorKind::kNotFound && attempt < 3) continue;
    if (!locked.ok()) return std::move(locked).error();
    return StagingDir(std::move(path), std::move(locked).value());
  }
}

Result<StagingDir> StagingDir::move_aside(const std::filesystem::path& from,
                                          const std::filesystem::path& to) {
  PW_ASSIGN(UniqueFd fd, open_dir(from));
  PW_ASSIGN(UniqueFd locked, lock_dir(std::move(fd), from, true));
  if (::rename(from.c_str(), to.c_str()) != 0) return Error::sys("rename", errno, from.string());
  return StagingDir(to, std::move(locked));
}

Status StagingDir::rename_to(const std::filesystem::path& to) {
  if (::rename(path_.c_str(), to.c_str()) != 0) return Error::sys("rename", errno, path_.string());
  path_ = to;
  return {};
}

Result<StaleStaging> remove_stale_staging(const std::filesystem::path& dir,
                                          const std::vector<std::string>& prefixes) {
  StaleStaging out;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::filesystem::path& p = it->path();
    std::string name = p.filename().string();
    bool staging = false;
    for (const auto& prefix : prefixes) staging = staging || name.rfind(prefix, 0) == 0;
    struct stat st {};
    if (!staging || ::lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    auto fd = open_dir(p);
    if (!fd.ok()) continue;  // gone meanwhile
    auto locked = lock_dir(std::move(fd).value(), p, false);
    if (!locked.ok()) continue;  // a live operation's, or gone meanwhile
    uint64_t bytes = tree_bytes(p);
    PW_TRY(fs::remove_all(p));  // under the lock
    ++out.dirs;
    out.bytes += bytes;
  }
  if (ec && ec.value() != ENOENT) return Error::sys("read", ec.value(), dir.string());
  return out;
}

}  // namespace prewarm::fs
