// Image loading for instance starts.
#include "images/load.h"

#include "base/fs.h"
#include "image/image.h"
#include "images/images.h"
#include "rootfs/rootfs.h"
#include "spec/names.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;

// The checkpoint expects the base rootfs it was baked on. On another node (a pulled image), a
// tarball or debootstrap base is rebuilt from the spec's recipe; it must come out the same.
Status ensure_rootfs(const Context& ctx, LoadedImage& img) {
  if (stdfs::exists(img.manifest.rootfs_dir)) return {};
  std::string what = "image " + img.name + ": its rootfs " + img.manifest.rootfs_dir;
  if (img.spec.rootfs.kind == spec::RootfsKind::kDirectory)
    return Error(ErrorKind::kNotFound, what + " does not exist on this host; provide that directory (the image "
                        "was baked from it)");
  ctx.say(what + " is not on this host; preparing it from the spec");
  auto base = rootfs::prepare_base(img.spec.rootfs, ctx.cache_dir / "rootfs",
                                   [&](const std::string& m) { ctx.say(m); });
  if (!base.ok()) return std::move(base).error().with_context(what + " is missing");
  if (base->id != img.manifest.rootfs_id)
    return Error(ErrorKind::kIncompatibleHost, what + " is missing, and rebuilding it gave " + base->id + " instead of " +
                 img.manifest.rootfs_id);
  img.manifest.rootfs_dir = base->dir.string();
  return {};
}

}  // namespace

Result<LoadedImage> load_image(const Context& ctx, const std::string& name) {
  PW_TRY(spec::check_name(name, "image name"));
  LoadedImage img;
  img.name = name;
  img.dir = ctx.image_dir(name);
  PW_TRY(ensure_unpacked(ctx, name));
  PW_ASSIGN(store::Store st, open_store(ctx));
  if (auto m = st.read_manifest(name); m.ok()) img.store_digest = m->second;
  image::VerifyOptions vo;
  vo.stamp_dir = ctx.stamps_dir();
  PW_ASSIGN(img.manifest, image::open_verified(img.dir, vo));
  auto parsed = spec::parse_spec(img.manifest.spec_yaml, "/");
  if (!parsed.ok())
    return std::move(parsed).error().with_context("image " + name + ": stored spec is invalid");
  img.spec = std::move(parsed).value();
  auto mounts = image::foreign_mounts(img.dir);
  if (!mounts.ok()) return std::move(mounts).error().with_context("image " + name);
  img.foreign_mounts = std::move(mounts).value();
  PW_TRY(ensure_rootfs(ctx, img));
  return img;
}

}  // namespace prewarm::images
