// In-process extraction of a rootfs diff archive (what GNU tar writes for capture_diff) and of
// OCI image layers: every entry is created with *at() calls relative to a directory fd that was
// opened without following any symlink, so nothing an earlier entry (or layer) planted can
// redirect a later one.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <unordered_set>
#include <string>
#include <vector>

#include "base/log.h"
#include "base/tar.h"
#include "base/unique_fd.h"
#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {
namespace {

// Directories beneath the destination, no symlink followed on the way (RESOLVE_NO_SYMLINKS:
// a parent that is a symlink is refused, not resolved), ".." and absolute names are refused
// by tar::clean_name before we get here and by RESOLVE_BENEATH again.
Result<UniqueFd> open_dir_beneath(int root_fd, const std::string& rel, const std::string& where) {
  if (rel.empty()) {
    int fd = ::fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return Error::sys("dup", errno, where);
    return UniqueFd(fd);
  }
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if ((errno == EINTR || errno == EAGAIN) && attempt < 16) continue;
    if (errno == ELOOP || errno == ENOTDIR || errno == EXDEV)
      return Error(where + ": " + rel +
                       " is not a directory of the archive (a symlink or file stands there); "
                       "refusing to follow it",
                   EINVAL);
    if (errno == ENOSYS)
      return Error("openat2 is not supported by this kernel (needs Linux 5.6+)", ENOSYS);
    return Error::sys("open", errno, where + ": " + rel);
  }
}

struct Split {
  std::string parent, leaf;
};
Split split(const std::string& rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

Status remove_at(int dir_fd, const std::string& name, const std::string& shown);

// The names in a directory (not "." and "..").
Result<std::vector<std::string>> list_dir(int dir_fd, const std::string& shown) {
  int fd = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Error::sys("dup", errno, shown);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    ::close(fd);
    return Error::sys("read directory", err, shown);
  }
  ::rewinddir(d);  // the dup shares the original's position
  std::vector<std::string> names;
  errno = 0;
  while (dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return Error::sys("read directory", err, shown);
  return names;
}

// Removes name and, if it is a directory, everything beneath it, relative to dir_fd and
// never following a symlink; missing is fine.
Status remove_at(int dir_fd, const std::string& name, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return Error::sys("stat", errno, shown);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd d(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!d.valid()) return Error::sys("open", errno, shown);
    PW_ASSIGN(std::vector<std::string> names, list_dir(d.get(), shown));
    for (const auto& n : names) PW_TRY(remove_at(d.get(), n, shown + "/" + n));
    if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0) return Error::sys("remove", errno, shown);
    return {};
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT)
    return Error::sys("remove", errno, shown);
  return {};
}

// Makes room for a new entry: a non-directory of the same name is replaced (GNU tar does the
// same); a directory is kept when the entry is one too. An empty directory is replaced by a
// non-directory; a full one only in an image layer (`recursive`), where it comes from a layer
// below.
Status clear_leaf(int dir_fd, const std::string& leaf, bool want_dir, const std::string& shown,
                  bool recursive = false) {
  struct stat st {};
  if (::fstatat(dir_fd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return Error::sys("stat", errno, shown);
  }
  if (S_ISDIR(st.st_mode)) {
    if (want_dir) return {};
    if (recursive) return remove_at(dir_fd, leaf, shown);
    if (::unlinkat(dir_fd, leaf.c_str(), AT_REMOVEDIR) != 0)
      return Error::sys("replace directory", errno, shown);
    return {};
  }
  if (::unlinkat(dir_fd, leaf.c_str(), 0) != 0) return Error::sys("replace", errno, shown);
  return {};
}

bool privileged_xattr(const std::string& name) {
  return name.rfind("trusted.", 0) == 0 || name.rfind("security.", 0) == 0;
}

// Ownership, then mode (chown clears set-id bits), then xattrs (chown clears
// security.capability). fd is an O_PATH or real fd of the object itself.
Status apply_meta(int fd, const tar::Entry& e, bool is_link, bool set_mode,
                  const std::string& shown) {
  const bool root = ::geteuid() == 0;
  if (root && ::fchownat(fd, "", static_cast<uid_t>(e.uid), static_cast<gid_t>(e.gid),
                         AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
    return Error::sys("chown", errno, shown);
  if (set_mode && !is_link) {
    // SAFETY: /proc/self/fd/N of an O_PATH fd names exactly this inode; chmod can't take
    // AT_EMPTY_PATH on this kernel ABI, and fd came from a no-follow open.
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::chmod(proc.c_str(), e.mode & 07777) != 0) return Error::sys("chmod", errno, shown);
  }
  for (const auto& [name, value] : e.xattrs) {
    if (!root && privileged_xattr(name)) continue;  // only root can set them; tar skips them too
    std::string proc = "/proc/self/fd/" + std::to_string(fd);
    if (::setxattr(proc.c_str(), name.c_str(), value.data(), value.size(), 0) != 0) {
      // user.* can't live on symlinks; GNU tar warns and goes on.
      if (is_link && (errno == EPERM || errno == ENOTSUP)) continue;
      return Error::sys("set xattr " + name + " on", errno, shown);
    }
  }
  return {};
}

Status set_times(int dir_fd, const std::string& leaf, const tar::Entry& e,
                 const std::string& shown) {
  timespec ts[2];
  ts[0].tv_sec = 0;
  ts[0].tv_nsec = UTIME_OMIT;
  ts[1].tv_sec = static_cast<time_t>(e.mtime);
  ts[1].tv_nsec = static_cast<long>(e.mtime_nsec);
  const char* name = leaf.empty() ? "" : leaf.c_str();
  int flags = leaf.empty() ? AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW;
  if (::utimensat(dir_fd, name, ts, flags) != 0) return Error::sys("set mtime", errno, shown);
  return {};
}

Result<UniqueFd> open_path(int dir_fd, const std::string& leaf, const std::string& shown) {
  UniqueFd fd(::openat(dir_fd, leaf.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, shown);
  return fd;
}

std::string kind(char type) {
  switch (type) {
    case '3': return "character device";
    case '4': return "block device";
    case '7': return "contiguous file";
    default: return std::string("entry of tar type '") + type + "'";
  }
}

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

// An OCI whiteout entry (rel is "dir/.wh.NAME" or "dir/.wh..wh..opq"): removes what lower
// layers left there, sparing what this layer created (`created`, relative paths).
Status apply_whiteout(int root_fd, const std::string& parent_rel, const std::string& leaf,
                      const std::unordered_set<std::string>& created, const std::string& dest,
                      const std::string& where) {
  auto parent = open_dir_beneath(root_fd, parent_rel, where);
  if (!parent.ok()) {
    // Nothing below to hide when the directory does not exist (yet).
    if (parent.error().errno_value() == ENOENT) return {};
    return std::move(parent).error();
  }
  const std::string prefix = parent_rel.empty() ? "" : parent_rel + "/";
  const std::string shown_dir = dest + (parent_rel.empty() ? "" : "/" + parent_rel);
  if (leaf == kOpaqueMarker) {
    PW_ASSIGN(std::vector<std::string> names, list_dir(parent->get(), shown_dir));
    for (const auto& n : names)
      if (!created.contains(prefix + n)) PW_TRY(remove_at(parent->get(), n, shown_dir + "/" + n));
    return {};
  }
  const std::string name = leaf.substr(kWhiteoutPrefix.size());
  // ".wh..wh.*" other than the opaque marker are aufs bookkeeping: nothing to do.
  if (name.starts_with(kWhiteoutPrefix)) return {};
  if (name.empty() || name == "." || name == "..")
    return Error(where + ": whiteout " + prefix + leaf + " names no entry");
  if (created.contains(prefix + name)) return {};
  return remove_at(parent->get(), name, shown_dir + "/" + name);
}

}  // namespace

namespace detail {

Status extract_tar(tar::Reader& r, const std::filesystem::path& dest, const ExtractOptions& opts) {
  const std::string where = r.at();
  UniqueFd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) return Error::sys("open", errno, dest.string());
  const bool layer = opts.image_layer;
  std::unordered_set<std::string> created;  // this layer's entries, which its whiteouts spare
  // Directories get their mode and mtime last: their contents change the mtime, and a
  // read-only mode would keep a non-root extractor from filling them.
  struct DirFinish {
    std::string rel;
    tar::Entry e;
  };
  std::vector<DirFinish> dirs;
  for (;;) {
    PW_ASSIGN(std::optional<tar::Entry> e, r.next());
    if (!e) break;
    PW_ASSIGN(std::string rel, tar::clean_name(e->name, r.at()));
    const std::string shown = dest.string() + "/" + rel;
    if (e->sparse)
      return Error(r.at() + ": entry " + e->name +
                   " is a sparse file, which the diff extractor does not handle");
    if (rel.empty()) {  // "./": the destination itself
      if (e->type != '5') return Error(r.at() + ": the archive root is not a directory");
      PW_TRY(apply_meta(root.get(), *e, false, false, dest.string()));
      dirs.push_back({rel, std::move(*e)});
      continue;
    }
    auto [parent_rel, leaf] = split(rel);
    if (layer && leaf.starts_with(kWhiteoutPrefix)) {
      PW_TRY(apply_whiteout(root.get(), parent_rel, leaf, created, dest.string(), r.at()));
      continue;
    }
    PW_ASSIGN(UniqueFd parent, open_dir_beneath(root.get(), parent_rel, r.at()));
    const int pfd = parent.get();
    if (layer) {
      // With its parents: a directory this layer puts something in is not a lower layer's alone.
      for (size_t slash = rel.find('/'); slash != std::string::npos; slash = rel.find('/', slash + 1))
        created.insert(rel.substr(0, slash));
      created.insert(rel);
      if (e->type == '7') e->type = '0';
    }

    switch (e->type) {
      case '5': {
        PW_TRY(clear_leaf(pfd, leaf, true, shown));
        if (::mkdirat(pfd, leaf.c_str(), 0700) != 0 && errno != EEXIST)
          return Error::sys("mkdir", errno, shown);
        UniqueFd d(::openat(pfd, leaf.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!d.valid()) return Error::sys("open", errno, shown);
        PW_TRY(apply_meta(d.get(), *e, false, false, shown));
        dirs.push_back({rel, std::move(*e)});
        continue;  // mode and mtime at the end
      }
      case '0':
      case '\0': {
        PW_TRY(clear_leaf(pfd, leaf, false, shown, layer));
        UniqueFd f(::openat(pfd, leaf.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!f.valid()) return Error::sys("create", errno, shown);
        PW_TRY(r.copy_to(f.get(), shown));
        PW_TRY(apply_meta(f.get(), *e, false, true, shown));
        break;
      }
      case '2': {
        PW_TRY(clear_leaf(pfd, leaf, false, shown, layer));
        // The target is stored verbatim and never followed here: inside the container it
        // resolves against the container's root.
        if (::symlinkat(e->link.c_str(), pfd, leaf.c_str()) != 0)
          return Error::sys("symlink", errno, shown);
        PW_ASSIGN(UniqueFd p, open_path(pfd, leaf, shown));
        PW_TRY(apply_meta(p.get(), *e, true, false, shown));
        break;
      }
      case '1': {
        PW_ASSIGN(std::string target, tar::clean_name(e->link, r.at()));
        if (target.empty()) return Error(r.at() + ": hard link " + e->name + " to the root");
        auto [tparent_rel, tleaf] = split(target);
        PW_ASSIGN(UniqueFd tparent, open_dir_beneath(root.get(), tparent_rel, r.at()));
        struct stat st {};
        if (::fstatat(tparent.get(), tleaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
          return Error(r.at() + ": hard link " + e->name + " names " + e->link +
                       ", which is not earlier in the archive");
        if (S_ISDIR(st.st_mode))
          return Error(r.at() + ": hard link " + e->name + " names a directory");
        if (tparent_rel == parent_rel && tleaf == leaf) continue;
        PW_TRY(clear_leaf(pfd, leaf, false, shown, layer));
        // flags 0: a symlink target is linked itself, never followed.
        if (::linkat(tparent.get(), tleaf.c_str(), pfd, leaf.c_str(), 0) != 0)
          return Error::sys("link", errno, shown);
        continue;  // shares the target's inode and metadata
      }
      case '4':
        if (!layer)
          return Error(r.at() + ": entry " + e->name + " is a " + kind(e->type) +
                       ", which a rootfs diff does not hold; refusing it");
        [[fallthrough]];
      case '3':
      case '6': {
        const bool device = e->type == '3' || e->type == '4';
        // A diff holds character devices only as overlayfs whiteouts (0/0): it has no business
        // making device nodes that would give a container access to host hardware. An image
        // layer may (a base image's /dev entries), as an image unpacked by any runtime would.
        if (layer && device && ::geteuid() != 0) {
          log::warn(r.at() + ": skipping device " + e->name + " (only root can make devices)");
          created.erase(rel);
          continue;
        }
        if (!layer && e->type == '3' && (e->dev_major != 0 || e->dev_minor != 0))
          return Error(r.at() + ": entry " + e->name + " is a character device " +
                       std::to_string(e->dev_major) + ":" + std::to_string(e->dev_minor) +
                       "; a rootfs diff may only hold 0:0 ones (overlayfs whiteouts)");
        PW_TRY(clear_leaf(pfd, leaf, false, shown, layer));
        const mode_t type = e->type == '3' ? S_IFCHR : e->type == '4' ? S_IFBLK : S_IFIFO;
        const dev_t dev = device ? makedev(e->dev_major, e->dev_minor) : makedev(0, 0);
        if (::mknodat(pfd, leaf.c_str(), type | (e->mode & 07777), dev) != 0) {
          const char* op = !device ? "mkfifo" : layer ? "create device" : "create whiteout";
          Error err = Error::sys(op, errno, shown);
          if (errno == EPERM) err = std::move(err).with_detail("whiteouts need root (CAP_MKNOD)");
          return err;
        }
        PW_ASSIGN(UniqueFd p, open_path(pfd, leaf, shown));
        PW_TRY(apply_meta(p.get(), *e, false, true, shown));
        break;
      }
      default:
        return Error(r.at() + ": entry " + e->name + " is a " + kind(e->type) +
                     ", which a rootfs diff does not hold; refusing it");
    }
    PW_TRY(set_times(pfd, leaf, *e, shown));
  }
  // Deepest first, so setting a parent's mtime comes after its children's changes.
  std::sort(dirs.begin(), dirs.end(),
            [](const DirFinish& a, const DirFinish& b) { return a.rel.size() > b.rel.size(); });
  for (const auto& d : dirs) {
    const std::string shown = dest.string() + "/" + d.rel;
    auto opened = open_dir_beneath(root.get(), d.rel, where);
    // A later entry of a layer may have replaced the directory (with a file, or by a whiteout).
    if (!opened.ok() && layer) continue;
    PW_ASSIGN(UniqueFd fd, std::move(opened));
    if (::fchmod(fd.get(), d.e.mode & 07777) != 0) return Error::sys("chmod", errno, shown);
    PW_TRY(set_times(fd.get(), "", d.e, shown));
  }
  return {};
}

}  // namespace detail

Status extract_diff(const std::filesystem::path& tar_file, const std::filesystem::path& dest) {
  const std::string where = "rootfs diff " + tar_file.string();
  UniqueFd in(::open(tar_file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::sys("open", errno, tar_file.string());
  tar::Reader r(in.get(), where);
  Status st = detail::extract_tar(r, dest);
  if (!st.ok()) return std::move(st).error().with_context("extract into " + dest.string());
  return {};
}

}  // namespace prewarm::rootfs
