// In-process extraction of a rootfs diff archive (what GNU tar writes for capture_diff): every
// entry is created with *at() calls relative to a directory fd that was opened without
// following any symlink, so nothing an earlier entry planted can redirect a later one.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

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

// Makes room for a new entry: a non-directory of the same name is replaced (GNU tar does the
// same); a directory is kept when the entry is one too.
Status clear_leaf(int dir_fd, const std::string& leaf, bool want_dir, const std::string& shown) {
  struct stat st {};
  if (::fstatat(dir_fd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return Error::sys("stat", errno, shown);
  }
  if (S_ISDIR(st.st_mode)) {
    if (want_dir) return {};
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

}  // namespace

namespace detail {

Status extract_tar(int tar_fd, const std::filesystem::path& dest, const std::string& where) {
  UniqueFd root(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root.valid()) return Error::sys("open", errno, dest.string());
  tar::Reader r(tar_fd, where);
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
    PW_ASSIGN(UniqueFd parent, open_dir_beneath(root.get(), parent_rel, r.at()));
    const int pfd = parent.get();

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
        PW_TRY(clear_leaf(pfd, leaf, false, shown));
        UniqueFd f(::openat(pfd, leaf.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!f.valid()) return Error::sys("create", errno, shown);
        PW_TRY(r.copy_to(f.get(), shown));
        PW_TRY(apply_meta(f.get(), *e, false, true, shown));
        break;
      }
      case '2': {
        PW_TRY(clear_leaf(pfd, leaf, false, shown));
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
        PW_TRY(clear_leaf(pfd, leaf, false, shown));
        // flags 0: a symlink target is linked itself, never followed.
        if (::linkat(tparent.get(), tleaf.c_str(), pfd, leaf.c_str(), 0) != 0)
          return Error::sys("link", errno, shown);
        continue;  // shares the target's inode and metadata
      }
      case '3':
      case '6': {
        // Character devices only as overlayfs whiteouts (0/0): a diff has no business making
        // device nodes that would give a container access to host hardware.
        if (e->type == '3' && (e->dev_major != 0 || e->dev_minor != 0))
          return Error(r.at() + ": entry " + e->name + " is a character device " +
                       std::to_string(e->dev_major) + ":" + std::to_string(e->dev_minor) +
                       "; a rootfs diff may only hold 0:0 ones (overlayfs whiteouts)");
        PW_TRY(clear_leaf(pfd, leaf, false, shown));
        mode_t m = (e->type == '3' ? S_IFCHR : S_IFIFO) | (e->mode & 07777);
        if (::mknodat(pfd, leaf.c_str(), m, makedev(0, 0)) != 0) {
          Error err = Error::sys(e->type == '3' ? "create whiteout" : "mkfifo", errno, shown);
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
    PW_ASSIGN(UniqueFd fd, open_dir_beneath(root.get(), d.rel, where));
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
  Status st = detail::extract_tar(in.get(), dest, where);
  if (!st.ok()) return std::move(st).error().with_context("extract into " + dest.string());
  return {};
}

}  // namespace prewarm::rootfs
