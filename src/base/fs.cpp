// Filesystem helpers.
#include "base/fs.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/unique_fd.h"

namespace prewarm::fs {

Result<std::string> read_file(const std::filesystem::path& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, path.string());
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
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
  const std::string prefix = dir.lexically_normal().string();
  std::vector<std::string> below;
  for (auto& mp : mount_points())
    if (mp == prefix || (mp.size() > prefix.size() && mp.compare(0, prefix.size(), prefix) == 0 &&
                         mp[prefix.size()] == '/'))
      below.push_back(std::move(mp));
  // Later mounts sit on top of earlier ones: undo them in reverse.
  for (auto it = below.rbegin(); it != below.rend(); ++it)
    if (::umount2(it->c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
      return Error::sys("unmount", errno, *it);
  return {};
}

}  // namespace prewarm::fs
