// Placing spec files into a root directory; every path is resolved inside that root with
// openat2(RESOLVE_IN_ROOT), so a symlink in the rootfs can never redirect a write to the host.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/fs.h"
#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {

namespace detail {

Result<UniqueFd> open_in_root(int root_fd, const std::string& rel, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<__u64>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  // EAGAIN: a concurrent rename raced with ".." resolution; the kernel asks us to retry.
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if ((errno == EINTR || errno == EAGAIN) && attempt < 16) continue;
    if (errno == ENOSYS)
      return Error("openat2 is not supported by this kernel (needs Linux 5.6+)", ENOSYS);
    return Error::sys("open", errno, "/" + rel);
  }
}

}  // namespace detail

namespace {

// Splits an absolute in-root path into its components, rejecting what can't name a file.
Result<std::vector<std::string>> split_path(const std::string& path) {
  if (path.empty() || path[0] != '/') return Error("must be an absolute path", EINVAL);
  if (path.find('\0') != std::string::npos) return Error("must not contain NUL", EINVAL);
  if (path.back() == '/') return Error("must name a file, not a directory", EINVAL);
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    std::string part = path.substr(start, slash - start);
    start = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return Error("must not contain \"..\"", EINVAL);
    parts.push_back(std::move(part));
  }
  if (parts.empty()) return Error("must name a file, not the root directory", EINVAL);
  return parts;
}

// Creates (0755) the missing directories above the last component, each inside the root.
Status make_parents(int root_fd, const std::vector<std::string>& parts) {
  PW_ASSIGN(UniqueFd parent, detail::open_in_root(root_fd, ".", O_PATH | O_DIRECTORY));
  std::string prefix;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!prefix.empty()) prefix += '/';
    prefix += parts[i];
    auto dir = detail::open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY);
    if (!dir.ok() && dir.error().errno_value() == ENOENT) {
      // parts[i] is a plain name and parent was resolved inside the root, so mkdirat is safe.
      if (::mkdirat(parent.get(), parts[i].c_str(), 0755) == 0) {
        UniqueFd made(::openat(parent.get(), parts[i].c_str(),
                               O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!made.valid() || ::fchmod(made.get(), 0755) != 0)
          return Error::sys("chmod", errno, "/" + prefix);
      } else if (errno != EEXIST) {
        return Error::sys("mkdir", errno, "/" + prefix);
      }
      dir = detail::open_in_root(root_fd, prefix, O_PATH | O_DIRECTORY);
      if (!dir.ok() && dir.error().errno_value() == ENOENT)
        return Error("/" + prefix + " is a symlink to a directory that does not exist", ENOENT);
    }
    if (!dir.ok()) return std::move(dir).error();
    parent = std::move(*dir);
  }
  return {};
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// A source opened for reading: a regular file only (not /dev/zero, not a FIFO that would block).
Result<UniqueFd> open_source(const std::filesystem::path& source, struct stat& st) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!in.valid()) return Error::sys("open source", errno, source.string());
  if (::fstat(in.get(), &st) != 0) return Error::sys("stat source", errno, source.string());
  if (!S_ISREG(st.st_mode))
    return Error(ErrorKind::kInvalidInput, "source " + source.string() + " is not a regular file");
  return in;
}

Status copy_from(const std::filesystem::path& source, int out_fd) {
  struct stat st {};
  PW_ASSIGN(UniqueFd in, open_source(source, st));
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("read source", errno, source.string());
    }
    if (n == 0) return {};
    PW_TRY(write_all(out_fd, std::string_view(buf, static_cast<size_t>(n))));
  }
}

Status place_one(const spec::FileEntry& file, int root_fd) {
  PW_ASSIGN(std::vector<std::string> parts, split_path(file.path));
  if (!file.content && !file.source) return Error("has neither content nor source", EINVAL);
  if (file.mode > 07777)
    return Error("mode " + std::to_string(file.mode) + " is not a file mode", EINVAL);
  PW_TRY(make_parents(root_fd, parts));
  std::string rel;
  for (const auto& p : parts) rel += (rel.empty() ? "" : "/") + p;
  // The last component may itself be a symlink (e.g. /etc/resolv.conf); RESOLVE_IN_ROOT keeps
  // following it inside the root.
  PW_ASSIGN(UniqueFd fd, detail::open_in_root(root_fd, rel, O_WRONLY | O_CREAT | O_TRUNC,
                                              static_cast<mode_t>(file.mode)));
  if (file.content) {
    PW_TRY(write_all(fd.get(), *file.content));
  } else {
    PW_TRY(copy_from(*file.source, fd.get()));
  }
  // An existing file keeps its old mode through O_CREAT, and umask trims new ones.
  if (::fchmod(fd.get(), static_cast<mode_t>(file.mode)) != 0) return Error::sys("chmod", errno);
  return {};
}

}  // namespace

Status inline_sources(std::vector<spec::FileEntry>& files) {
  size_t total = 0;
  for (auto& file : files) {
    if (!file.source) continue;
    const std::string what = "file \"" + file.path + "\" (source " + file.source->string() + ")";
    struct stat st {};
    PW_ASSIGN(UniqueFd in, open_source(*file.source, st));
    if (static_cast<uint64_t>(st.st_size) > kMaxInlineFileBytes)
      return Error(ErrorKind::kInvalidInput,
                   what + " is " + std::to_string(st.st_size) + " bytes; spec files may be at most " +
                       std::to_string(kMaxInlineFileBytes) + " (put larger files in the rootfs)");
    auto content = fs::read_fd(in.get(), *file.source, kMaxInlineFileBytes);
    if (!content.ok()) return std::move(content).error().with_context(what);
    total += content->size();
    if (total > kMaxInlineTotalBytes)
      return Error(ErrorKind::kInvalidInput,
                   "spec files add up to more than " + std::to_string(kMaxInlineTotalBytes) +
                       " bytes at " + what + " (put larger files in the rootfs)");
    file.content = std::move(content).value();
    file.source.reset();
  }
  return {};
}

Status place_files(const std::vector<spec::FileEntry>& files, const std::filesystem::path& root) {
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) return Error::sys("open root directory", errno, root.string());
  for (const auto& file : files) {
    Status st = place_one(file, root_fd.get());
    if (!st.ok())
      return std::move(st).error().with_context("place file \"" + file.path + "\" in " +
                                                root.string());
  }
  return {};
}

}  // namespace prewarm::rootfs
