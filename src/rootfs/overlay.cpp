// Per-instance overlayfs mounts (shared read-only lower, private upper) and unmounting.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <system_error>
#include <vector>

#include "base/fs.h"
#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {
namespace {

bool is_mount_root(const std::filesystem::path& p) {
  struct statx stx {};
  if (::statx(AT_FDCWD, p.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) != 0) return false;
  return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
         (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

// Creates dir with `mode` when missing; an existing one keeps its mode (an upper dir made by
// apply_diff carries the captured root's mode).
Status ensure_dir(const std::filesystem::path& dir, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) == 0) {
    if (::chmod(dir.c_str(), mode) != 0) return Error::sys("chmod", errno, dir.string());
    return {};
  }
  if (errno != EEXIST) return Error::sys("mkdir", errno, dir.string());
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Error(dir.string() + " exists and is not a directory", ENOTDIR);
  return {};
}

// The legacy mount(2) option string separates with ',' and lowerdir layers with ':'; our own
// paths never need those, so refuse them rather than escape.
Status check_option_path(const std::filesystem::path& p) {
  if (p.string().find_first_of(",:\\") != std::string::npos)
    return Error("overlay path " + p.string() +
                     " contains ',', ':' or '\\', which overlayfs "
                     "options can't carry; use a path without them",
                 EINVAL);
  return {};
}

// An image names its base rootfs by host path, and images come from other nodes (pulls,
// imported archives): a crafted one must not get the host's own files as a container's root.
Status check_lower_is_a_rootfs(const std::filesystem::path& lower,
                               const std::filesystem::path& instance_dir) {
  std::error_code ec;
  std::filesystem::path real = std::filesystem::canonical(lower, ec);
  if (ec) return Error::sys("lower directory", ec.value(), lower.string());
  std::filesystem::path inst = std::filesystem::weakly_canonical(instance_dir, ec);
  const std::string shown =
      lower.string() + (real == lower ? "" : " (" + real.string() + ")");
  // "/", /var, the state dir, ...: anything holding prewarm's own files.
  auto [lit, iit] = std::mismatch(real.begin(), real.end(), inst.begin(), inst.end());
  if (lit == real.end() || (std::next(lit) == real.end() && lit->empty()))
    return Error("base rootfs " + shown + " contains prewarm's instance directory " +
                     inst.string() + "; a root filesystem must be a directory of its own",
                 EINVAL);
  static const char* const kSystemDirs[] = {"/bin",  "/boot", "/dev",  "/etc", "/home",
                                            "/lib",  "/lib64", "/opt", "/proc", "/root",
                                            "/run",  "/sbin", "/srv",  "/sys", "/tmp",
                                            "/usr",  "/var"};
  for (const char* d : kSystemDirs)
    if (real == d)
      return Error("base rootfs " + shown + " is a host system directory, not a root filesystem",
                   EINVAL);
  return {};
}

}  // namespace

Result<Overlay> mount_overlay(const std::filesystem::path& lower,
                              const std::filesystem::path& instance_dir) {
  return mount_overlay(std::vector<std::filesystem::path>{lower}, instance_dir);
}

Result<Overlay> mount_overlay(const std::vector<std::filesystem::path>& lowers,
                              const std::filesystem::path& instance_dir) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::absolute(instance_dir, ec).lexically_normal();
  Overlay ov;
  ov.upper = dir / "upper";
  ov.work = dir / "work";
  ov.merged = dir / "rootfs";
  const std::string what = "mount overlay at " + ov.merged.string();
  if (lowers.empty()) return Error(what + ": no lower directory given", EINVAL);
  for (const auto& l : lowers)
    ov.lowers.push_back(std::filesystem::absolute(l, ec).lexically_normal());
  ov.lower = ov.lowers.front();

  for (const auto& l : ov.lowers) {
    struct stat st {};
    if (::stat(l.c_str(), &st) != 0)
      return Error::sys("lower directory", errno, l.string()).with_context(what);
    if (!S_ISDIR(st.st_mode))
      return Error("lower " + l.string() + " is not a directory", ENOTDIR).with_context(what);
    // Every layer, not only the base: a diff layer could be a host directory just as well.
    if (Status s = check_lower_is_a_rootfs(l, dir); !s.ok())
      return std::move(s).error().with_context(what);
    if (Status s = check_option_path(l); !s.ok()) return std::move(s).error().with_context(what);
  }
  for (const auto* p : {&ov.upper, &ov.work}) {
    Status s = check_option_path(*p);
    if (!s.ok()) return std::move(s).error().with_context(what);
  }
  std::filesystem::create_directories(dir.parent_path(), ec);  // ensure_dir reports failures
  const bool fresh_upper = ::access(ov.upper.c_str(), F_OK) != 0;
  // The instance dir only needs to be traversable; 0755 also lets a user-namespaced runtime
  // reach the rootfs below it.
  for (auto [p, mode] :
       {std::pair{&dir, 0755}, {&ov.upper, 0755}, {&ov.work, 0700}, {&ov.merged, 0755}}) {
    Status s = ensure_dir(*p, static_cast<mode_t>(mode));
    if (!s.ok()) return std::move(s).error().with_context(what);
  }
  // The merged root's mode and owner are the upper's: a new upper takes the topmost layer's
  // (a diff layer carries the captured root's), as an upper made by apply_diff did.
  if (fresh_upper && ov.lowers.size() > 1) {
    struct stat top {};
    if (::stat(ov.lower.c_str(), &top) != 0 || ::chmod(ov.upper.c_str(), top.st_mode & 07777) != 0 ||
        ::lchown(ov.upper.c_str(), top.st_uid, top.st_gid) != 0)
      return Error::sys("copy the root's mode and owner to", errno, ov.upper.string())
          .with_context(what);
  }
  if (is_mount_root(ov.merged))
    return Error(what + ": something is already mounted there; unmount it first", EBUSY);

  // Plain options on purpose: CRIU restores with this overlay as the container's root and
  // must see an ordinary overlay mount. lowerdir lists layers topmost first, ':'-separated.
  std::string lowerdir;
  for (const auto& l : ov.lowers) lowerdir += (lowerdir.empty() ? "" : ":") + l.string();
  std::string opts = "lowerdir=" + lowerdir + ",upperdir=" + ov.upper.string() +
                     ",workdir=" + ov.work.string();
  if (opts.size() >= 4096)
    return Error(what + ": overlay options exceed a page (" + std::to_string(opts.size()) +
                     " bytes); use shorter layer paths",
                 EINVAL);
  if (::mount("overlay", ov.merged.c_str(), "overlay", 0, opts.c_str()) != 0) {
    int err = errno;
    Error e = Error::sys("mount overlay", err, ov.merged.string()).with_detail("options: " + opts);
    if (err == EINVAL)
      e = std::move(e).with_detail(
          "EINVAL usually means the upper/work directories sit on a filesystem that can't be an "
          "overlay upper (overlayfs itself, NFS, FUSE) or that upper and work are on different "
          "filesystems; the kernel log (dmesg) names the reason");
    if (err == EPERM) e = std::move(e).with_detail("mounting needs root (CAP_SYS_ADMIN)");
    return e;
  }
  return ov;
}

Status unmount(const std::filesystem::path& merged) {
  if (::umount2(merged.c_str(), UMOUNT_NOFOLLOW) == 0) return {};
  if (errno == EINVAL || errno == ENOENT) return {};  // not mounted, or gone
  if (errno == EBUSY) {
    // Open files keep it busy; detach now, the kernel frees it when the last user closes.
    if (::umount2(merged.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return {};
    if (errno == EINVAL || errno == ENOENT) return {};
  }
  return Error::sys("unmount", errno, merged.string());
}

}  // namespace prewarm::rootfs
