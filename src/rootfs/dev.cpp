// A container's /dev as runc makes it, as a directory tree: per instance, or once as a shared
// read-only overlay layer.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/fs.h"
#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {

Status make_dev_tree(const std::filesystem::path& dev) {
  struct Node {
    const char* name;
    unsigned major, minor;
  };
  for (const Node& n : {Node{"null", 1, 3}, Node{"zero", 1, 5}, Node{"full", 1, 7},
                        Node{"random", 1, 8}, Node{"urandom", 1, 9}, Node{"tty", 5, 0}}) {
    auto p = dev / n.name;
    if (::mknod(p.c_str(), S_IFCHR | 0666, makedev(n.major, n.minor)) != 0)
      return Error::sys("mknod", errno, p.string());
    if (::chmod(p.c_str(), 0666) != 0) return Error::sys("chmod", errno, p.string());
  }
  for (const auto& [name, target] :
       {std::pair{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
        {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"}}) {
    auto p = dev / name;
    if (::symlink(target, p.c_str()) != 0) return Error::sys("symlink", errno, p.string());
  }
  for (const char* sub : {"pts", "shm", "mqueue"}) {
    auto p = dev / sub;
    if (::mkdir(p.c_str(), 0755) != 0) return Error::sys("mkdir", errno, p.string());
  }
  return {};
}

Result<std::filesystem::path> dev_layer(const std::filesystem::path& layers_dir) {
  const std::string what = "make the /dev layer in " + layers_dir.string();
  // Device nodes on a nodev filesystem can't be opened, through an overlay or not.
  PW_TRY(fs::make_dirs(layers_dir, 0755));
  struct statvfs vfs {};
  if (::statvfs(layers_dir.c_str(), &vfs) != 0)
    return Error::sys("statvfs", errno, layers_dir.string());
  if (vfs.f_flag & ST_NODEV) return Error(what + ": its filesystem is mounted nodev", EPERM);
  auto layer = detail::build_layer(layers_dir, kDevLayerName,
                                   [](const std::filesystem::path& tmp) -> Status {
                                     const auto dev = tmp / "dev";
                                     if (::mkdir(dev.c_str(), 0755) != 0)
                                       return Error::sys("mkdir", errno, dev.string());
                                     // Opaque: the base's own /dev (console, ...) stays hidden.
                                     // First, so a filesystem without trusted.* xattrs fails
                                     // before anything is made.
                                     if (::setxattr(dev.c_str(), "trusted.overlay.opaque", "y", 1,
                                                    0) != 0)
                                       return Error::sys("mark opaque", errno, dev.string());
                                     return make_dev_tree(dev);
                                   });
  if (!layer.ok()) return std::move(layer).error().with_context(what);
  return layer;
}

}  // namespace prewarm::rootfs
