// Resolving a rootfs source to a base directory; the directory kind lives here, the built
// kinds in tarball.cpp, debootstrap.cpp and image.cpp.
#include <sys/stat.h>

#include <system_error>

#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {

namespace detail {

bool looks_like_rootfs(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const char* top : {"bin", "usr"}) {
    if (std::filesystem::is_directory(dir / top, ec)) return true;
  }
  return false;
}

}  // namespace detail

namespace {

Result<Base> prepare_directory(const spec::RootfsSource& source) {
  const std::string what = "rootfs.directory " + source.path.string();
  if (source.path.empty()) return Error("rootfs.directory: no path given", EINVAL);
  struct stat st {};
  if (::stat(source.path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Error(what + ": does not exist", ENOENT);
    return Error::sys("stat", errno, source.path.string()).with_context("rootfs.directory");
  }
  if (!S_ISDIR(st.st_mode)) return Error(what + ": is not a directory", ENOTDIR);
  if (!detail::looks_like_rootfs(source.path))
    return Error(what +
                     ": does not look like a root filesystem (no bin/ or usr/ in it); "
                     "point it at the directory that contains bin/, etc/ and usr/",
                 ENOENT);
  std::error_code ec;
  std::filesystem::path abs = std::filesystem::canonical(source.path, ec);
  if (ec)
    return Error::sys("resolve", ec.value(), source.path.string()).with_context("rootfs.directory");
  return Base{abs, "dir:" + abs.string(), std::nullopt};
}

}  // namespace

Result<std::filesystem::path> built_base_dir(std::string_view id,
                                             const std::filesystem::path& cache_dir) {
  const size_t colon = id.find(':');
  const std::string_view kind = id.substr(0, colon == std::string_view::npos ? 0 : colon);
  std::string_view key = colon == std::string_view::npos ? "" : id.substr(colon + 1);
  // An image base is named by its manifest digest, "image:sha256:<hex>".
  const bool image = kind == "image";
  if (image && key.starts_with("sha256:")) key.remove_prefix(7);
  else if (image) key = {};
  const bool hex = key.size() == 64 && key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
  if ((kind != "tar" && kind != "debootstrap" && !image) || !hex)
    return Error(ErrorKind::kInvalidInput,
                 "rootfs id \"" + std::string(id) + "\" names no base prewarm builds");
  std::filesystem::path dir = cache_dir / kind / key;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    if (image)
      return Error(ErrorKind::kNotFound,
                   "base " + std::string(id) + " is not on this host: its cache (" +
                       (cache_dir / "image").string() + ") lacks the image with manifest digest sha256:" +
                       std::string(key) + "; pull that image (e.g. bake or prepare from REPO@sha256:" +
                       std::string(key) + ")");
    return Error(ErrorKind::kNotFound, "base " + std::string(id) + " is not built on this host");
  }
  return dir;
}

Result<Base> prepare_base(const spec::RootfsSource& source, const std::filesystem::path& cache_dir,
                          const Progress& progress, const registry::Options& registry) {
  switch (source.kind) {
    case spec::RootfsKind::kDirectory:
      return prepare_directory(source);
    case spec::RootfsKind::kTarball:
      return detail::prepare_tarball(source, cache_dir, progress);
    case spec::RootfsKind::kDebootstrap:
      return detail::prepare_debootstrap(source, cache_dir, progress);
    case spec::RootfsKind::kImage:
      return prepare_image_base(source.image, cache_dir, registry, progress);
  }
  return Error("rootfs: unknown source kind", EINVAL);
}

}  // namespace prewarm::rootfs
