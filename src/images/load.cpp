// Image loading for instance starts.
#include "images/load.h"

#include "base/fs.h"
#include "image/image.h"
#include "images/images.h"
#include "registry/registry.h"
#include "rootfs/rootfs.h"
#include "spec/image_ref.h"
#include "spec/names.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;

// An image base missing here is pulled again, pinned to the manifest digest the checkpoint was
// baked on (so a moved tag cannot change it), when the image came from a registry; an OCI
// layout is a host path, used only by images made here. Otherwise `missing` stands.
Status unpack_image_base(const Context& ctx, LoadedImage& img, const std::string& what,
                         Error missing) {
  const auto& recorded = img.manifest.rootfs_image;
  if (!recorded || img.spec.rootfs.kind != spec::RootfsKind::kImage)
    return std::move(missing).with_context(what);
  auto ref = spec::parse_image_ref(img.spec.rootfs.image, "/");
  if (!ref.ok()) return std::move(missing).with_context(what);
  std::string pinned;
  if (ref->transport == spec::ImageTransport::kRegistry) {
    auto r = registry::parse_reference(ref->registry_ref);
    if (!r.ok()) return std::move(missing).with_context(what);
    r->tag.clear();
    r->digest = recorded->manifest_digest;
    pinned = r->to_string();
  } else if (made_here(ctx, img.dir)) {
    pinned = ref->to_string();
  } else {
    return std::move(missing).with_context(what);
  }
  ctx.say(what + " is not on this host; pulling " + pinned);
  auto base = rootfs::prepare_image_base(pinned, ctx.cache_dir / "rootfs", registry_options(ctx),
                                         [&](const std::string& m) { ctx.say(m); });
  if (!base.ok())
    return std::move(base).error().with_context(what + " is not on this host, and pulling it failed");
  if (base->id != img.manifest.rootfs_id)
    return Error(ErrorKind::kIncompatibleHost,
                 what + " is not on this host, and " + pinned + " now names " + base->id +
                     " instead (the layout changed since the bake)");
  img.manifest.rootfs_dir = base->dir.string();
  return {};
}

// The base the checkpoint was baked on, found from the manifest's rootfs id, never from a path
// the image names: an image from elsewhere could name any host directory (/etc, a home) and
// have it mounted as the container's root. A base prewarm builds (tarball, debootstrap) is
// looked up in this host's cache by its digest; a debootstrap recipe is built if missing (the
// recipe names packages, not host paths; the mirror is this host's), an image base is pulled by
// its manifest digest (unpack_image_base). A directory base is used
// only by images this host made (baked here, or imported over a rootfs the operator named).
Status resolve_base(const Context& ctx, LoadedImage& img) {
  const std::string& id = img.manifest.rootfs_id;
  const std::string what = "image " + img.name + ": its base rootfs " + id;
  const stdfs::path cache = ctx.cache_dir / "rootfs";
  if (id.rfind("dir:", 0) == 0) {
    if (!made_here(ctx, img.dir))
      return Error(ErrorKind::kInvalidInput,
                   what + " is a host directory, and the image was not made on this host: "
                          "images from a registry or an archive may use only bases prewarm "
                          "builds (a tarball or debootstrap rootfs)");
    const std::string dir = id.substr(4);
    if (img.manifest.rootfs_dir != dir)
      return Error(ErrorKind::kInvalidInput,
                   what + " does not match the directory its manifest names (" +
                       img.manifest.rootfs_dir + ")");
    if (!stdfs::is_directory(dir))
      return Error(ErrorKind::kNotFound, what + " does not exist on this host; provide that "
                                               "directory (the image was baked from it)");
    return {};
  }
  auto built = rootfs::built_base_dir(id, cache);
  if (built.ok()) {
    img.manifest.rootfs_dir = built->string();
    return {};
  }
  if (built.error().kind() != ErrorKind::kNotFound) return std::move(built).error().with_context(what);
  if (id.starts_with("image:")) return unpack_image_base(ctx, img, what, std::move(built).error());
  const bool rebuildable = img.spec.rootfs.kind == spec::RootfsKind::kDebootstrap ||
                           (img.spec.rootfs.kind == spec::RootfsKind::kTarball && made_here(ctx, img.dir));
  if (!rebuildable)
    return Error(ErrorKind::kNotFound,
                 what + " is not in this host's rootfs cache (" + cache.string() +
                     "); bake the image once on this host from its tarball to build it");
  ctx.say(what + " is not on this host; building it from the spec");
  auto base = rootfs::prepare_base(img.spec.rootfs, cache, [&](const std::string& m) { ctx.say(m); });
  if (!base.ok()) return std::move(base).error().with_context(what + " is missing");
  if (base->id != id)
    return Error(ErrorKind::kIncompatibleHost,
                 what + " is missing, and building it gave " + base->id + " instead");
  img.manifest.rootfs_dir = base->dir.string();
  return {};
}

// Images carry their files' contents (bake reads every `source` in); a stored spec that still
// names a host file would read it on whichever node starts the image.
Status check_self_contained(const LoadedImage& img) {
  for (const auto& f : img.spec.files)
    if (f.source)
      return Error(ErrorKind::kInvalidInput,
                   "image " + img.name + ": its spec places \"" + f.path + "\" from host file " +
                       f.source->string() +
                       "; images must carry their files' contents (bake them with this prewarm)");
  return {};
}

}  // namespace

// lazy_copy.cpp: the image as a lazy copy, when it has no unpacked copy here and a restore
// with `paging` would be lazy; nullopt otherwise.
Result<std::optional<LoadedImage>> open_lazy_copy(const Context& ctx, const std::string& name,
                                                  const std::string& paging);

std::string identity(const LoadedImage& img) {
  return img.store_digest.empty() ? image::to_json(img.manifest) : img.store_digest;
}

Result<LoadedImage> load_image(const Context& ctx, const std::string& name,
                               const LoadOptions& options) {
  PW_TRY(spec::check_name(name, "image name"));
  if (options.paging) {
    PW_ASSIGN(std::optional<LoadedImage> lazy, open_lazy_copy(ctx, name, *options.paging));
    if (lazy) {
      auto mounts = image::foreign_mounts(lazy->dir);
      if (!mounts.ok()) return std::move(mounts).error().with_context("image " + name);
      lazy->foreign_mounts = std::move(mounts).value();
      PW_TRY(check_self_contained(*lazy));
      if (options.need_base) PW_TRY(resolve_base(ctx, *lazy));
      return std::move(*lazy);
    }
  }
  LoadedImage img;
  img.name = name;
  img.dir = ctx.image_dir(name);
  PW_ASSIGN(img.store_digest, ensure_unpacked(ctx, name));
  image::VerifyOptions vo;
  vo.stamp_dir = ctx.stamps_dir();
  PW_ASSIGN(img.manifest, image::open_verified(img.dir, vo));
  auto parsed = image::stored_spec(img.manifest);
  if (!parsed.ok())
    return std::move(parsed).error().with_context("image " + name + ": stored spec is invalid");
  img.spec = std::move(parsed).value();
  auto mounts = image::foreign_mounts(img.dir);
  if (!mounts.ok()) return std::move(mounts).error().with_context("image " + name);
  img.foreign_mounts = std::move(mounts).value();
  PW_TRY(check_self_contained(img));
  if (options.need_base) PW_TRY(resolve_base(ctx, img));
  return img;
}

}  // namespace prewarm::images
