// Container image bases: an image's layers unpacked in order, once per manifest digest, into
// cache_dir/image/<hex>, with OCI whiteouts, by the same extractor as rootfs diffs.
#include <fcntl.h>
#include <unistd.h>

#include <memory>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/tar.h"
#include "image/compress.h"
#include "rootfs/internal.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;

// What one layer may expand to; gzip and zstd reach ratios of 1000:1 and more.
constexpr uint64_t kMaxLayerExpandedBytes = uint64_t{64} << 30;

std::string short_digest(std::string_view digest) {
  return std::string(digest.substr(0, std::min<size_t>(digest.size(), 7 + 12)));
}

std::string human_size(uint64_t bytes) {
  if (bytes >= (1 << 20)) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (1 << 10)) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " bytes";
}

Status unpack_layer_named(const stdfs::path& blob, std::string_view media_type,
                          const stdfs::path& dest, std::string_view diff_id,
                          const std::string& what) {
  PW_ASSIGN(image::Compression c, detail::layer_compression(media_type));
  UniqueFd in(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::sys("open", errno, blob.string());
  std::unique_ptr<image::Decompressor> dec;
  if (c != image::Compression::kNone) {
    PW_ASSIGN(dec, image::Decompressor::make(c, in.get(), kMaxLayerExpandedBytes, what));
  }
  // The tar stream as the extractor reads it, hashed on the way: the config's diff_id covers
  // exactly the bytes that were unpacked.
  Sha256Stream hash;
  tar::Source source = [&](char* buf, size_t n) -> Result<size_t> {
    Result<size_t> got = dec ? dec->read(buf, n) : tar::read_full(in.get(), buf, n, what);
    if (got.ok()) hash.update(buf, *got);
    return got;
  };
  tar::Reader r(source, what);
  PW_TRY(detail::extract_tar(r, dest, {.image_layer = true}));
  // What follows the end-of-archive marker (padding, the compressed stream's trailer) is part
  // of the layer too: read it all, so the stream is checked to its end and hashed whole.
  std::vector<char> rest(1 << 16);
  for (;;) {
    PW_ASSIGN(size_t got, source(rest.data(), rest.size()));
    if (got == 0) break;
  }
  if (!diff_id.empty()) {
    std::string got = "sha256:" + hash.final_hex();
    if (got != diff_id)
      return Error(ErrorKind::kInvalidInput,
                   what + ": its content hashes to " + got + ", not the " + std::string(diff_id) +
                       " the image config lists for it",
                   EBADMSG);
  }
  return {};
}

}  // namespace

std::string image_base_id(std::string_view manifest_digest) {
  return "image:" + std::string(manifest_digest);
}

Status unpack_layer(const stdfs::path& blob, std::string_view media_type, const stdfs::path& dest,
                    std::string_view diff_id) {
  return unpack_layer_named(blob, media_type, dest, diff_id, "image layer " + blob.string());
}

Result<ImageInfo> resolve_image(std::string_view reference, const registry::Options& opts) {
  PW_ASSIGN(auto source, detail::ImageSource::open(reference, opts));
  PW_ASSIGN(detail::ResolvedImage img, source->resolve());
  return ImageInfo{source->reference(), img.manifest_digest, img.config.digest};
}

Result<Base> prepare_image_base(std::string_view reference, const stdfs::path& cache_dir,
                                const registry::Options& opts, const Progress& progress) {
  registry::Options o = opts;
  if (!o.progress && progress) o.progress = progress;
  PW_ASSIGN(auto source, detail::ImageSource::open(reference, o));
  PW_ASSIGN(detail::ResolvedImage img, source->resolve());
  const std::string hex = img.manifest_digest.substr(img.manifest_digest.find(':') + 1);
  const std::string& what = source->what();

  auto build = [&](const stdfs::path& tmp) -> Status {
    // Downloads (and layers copied out of an archive) go beside the build, named by the image,
    // so a pull cut short by a crash resumes; it goes when this build does.
    const stdfs::path scratch = cache_dir / "image" / (hex + ".download");
    PW_TRY(fs::make_dirs(scratch, 0700));
    fs::RemoveOnExit remove_scratch(scratch);
    PW_ASSIGN(std::string config,
              source->read_blob(img.config, detail::kMaxImageConfigBytes, scratch));
    PW_ASSIGN(std::vector<std::string> diff_ids,
              detail::parse_image_config(config, img.layers.size(), what));
    PW_ASSIGN(std::vector<stdfs::path> files, source->layer_files(img.layers, scratch));
    for (size_t i = 0; i < img.layers.size(); ++i) {
      const auto& d = img.layers[i];
      const std::string layer = what + ": layer " + std::to_string(i + 1) + " of " +
                                std::to_string(img.layers.size()) + " (" + short_digest(d.digest) +
                                ")";
      if (progress) progress("unpacking " + layer + ", " + human_size(d.size));
      PW_TRY(unpack_layer_named(files[i], d.media_type, tmp, diff_ids.empty() ? "" : diff_ids[i],
                                layer));
    }
    if (!detail::looks_like_rootfs(tmp))
      return Error(ErrorKind::kInvalidInput,
                   what + " does not hold a root filesystem (no bin/ or usr/ at its top)");
    return {};
  };
  auto dir = detail::build_cached(cache_dir, "image", hex, build);
  if (!dir.ok()) return std::move(dir).error().with_context("rootfs.image " + source->reference());
  return Base{std::move(*dir), image_base_id(img.manifest_digest),
              ImageInfo{source->reference(), img.manifest_digest, img.config.digest}};
}

}  // namespace prewarm::rootfs
