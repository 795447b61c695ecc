// Pushing an image as a CRI-O/Podman checkpoint image, and pulling one (made by prewarm, CRI-O,
// Podman or containerd) into the store: the image's one layer is a checkpoint archive, so both
// directions go through export_archive / import_image.
#include "base/fs.h"
#include "base/sha256.h"
#include "images/checkpoint_image.h"
#include "images/images.h"
#include "image/checkpoint_image.h"
#include "image/image.h"
#include "image/k8s_archive.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;

// A private scratch directory under the state dir (same filesystem as the store), removed
// with everything in it; gc removes it if this process dies.
Result<fs::StagingDir> scratch_dir(const Context& ctx, const std::string& what) {
  return fs::StagingDir::create(ctx.state_dir, ".tmp-" + what + "-");
}

Result<registry::Blob> file_blob(const stdfs::path& path, const std::string& media_type) {
  PW_ASSIGN(std::string hex, sha256_file(path));
  std::error_code ec;
  uint64_t size = stdfs::file_size(path, ec);
  if (ec) return Error::sys("stat", ec.value(), path.string());
  return registry::Blob{"sha256:" + hex, size, media_type, path};
}

}  // namespace

Status push_checkpoint_image(const Context& ctx, const std::string& name, const std::string& ref_text,
                             const registry::Options& opts) {
  PW_ASSIGN(registry::Reference ref, registry::parse_reference(ref_text));
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::Lease lease, st.lease());
  PW_TRY(ensure_unpacked(ctx, name));
  image::VerifyOptions vo;
  vo.stamp_dir = ctx.stamps_dir();
  PW_ASSIGN(image::Manifest m, image::open_verified(ctx.image_dir(name), vo));
  PW_ASSIGN(fs::StagingDir tmp, scratch_dir(ctx, "push"));

  ctx.say("packing " + name + " as a checkpoint image (one archive layer, zstd)");
  const stdfs::path zst = tmp.path() / "layer.tar.zst";
  image::ExportOptions eo;
  eo.compression = image::Compression::kZstd;
  eo.stamp_dir = ctx.stamps_dir();
  std::string diff_hex;
  eo.tar_sha256 = &diff_hex;
  PW_TRY(image::export_archive(ctx.image_dir(name), zst, eo));
  PW_ASSIGN(registry::Blob layer, file_blob(zst, image::kOciLayerZstdMediaType));

  image::CheckpointImageJson j = image::make_checkpoint_image(
      m, name, {layer.media_type, layer.digest, layer.size}, "sha256:" + diff_hex);
  const stdfs::path config = tmp.path() / "config.json";
  PW_TRY(fs::write_file_atomic(config, j.config, 0600));
  PW_ASSIGN(registry::Blob config_blob, file_blob(config, image::kOciImageConfigMediaType));
  ctx.say("pushing " + name + " to " + ref.to_string() + " as a checkpoint image (" +
          std::to_string(layer.size / 1000000) + " MB layer)");
  return registry::push(ref, {config_blob, layer}, j.manifest, image::kOciImageManifestMediaType,
                        opts);
}

Result<std::string> pull_checkpoint_image(const Context& ctx, const registry::Reference& ref,
                                          const image::CheckpointImageInfo& info,
                                          const std::string& name, const stdfs::path& rootfs,
                                          const registry::Options& opts) {
  ctx.say("pulling " + ref.to_string() + ": a " + info.engine + " checkpoint image of '" +
          info.container_name + "' (" + std::to_string(info.layer.size / 1000000) + " MB)");
  PW_ASSIGN(fs::StagingDir tmp, scratch_dir(ctx, "pull"));
  registry::Blob layer{info.layer.digest, info.layer.size, info.layer.media_type,
                       tmp.path() / "layer"};
  PW_TRY(registry::pull_blobs(ref, {layer}, opts));
  auto imported = import_image(ctx, layer.path, name, rootfs);
  if (!imported.ok())
    return std::move(imported).error().with_context("pull " + ref.to_string());
  for (const auto& w : imported->warnings) ctx.say("warning: " + w);
  return imported->name;
}

}  // namespace prewarm::images
