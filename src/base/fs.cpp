// Filesystem helpers.
#include "base/fs.h"

#include <fcntl.h>
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

}  // namespace prewarm::fs
