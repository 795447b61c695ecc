// Store, unpacked copies and registry transfers, glued together.
#include "images/images.h"

#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "base/fs.h"
#include "base/sha256.h"
#include "images/checkpoint_image.h"
#include "spec/names.h"
#include "image/image.h"
#include "image/k8s_archive.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

// materialize checked every file against its SHA-256: record that, so the first restore
// doesn't hash the whole image again.
Status stamp_unpacked(const Context& ctx, const std::string& name) {
  image::VerifyOptions vo;
  vo.stamp_dir = ctx.stamps_dir();
  vo.content_just_verified = true;
  auto m = image::open_verified(ctx.image_dir(name), vo);
  if (!m.ok()) return std::move(m).error().with_context("unpacked image " + name);
  return {};
}

}  // namespace

Result<std::vector<registry::Blob>> manifest_blobs(const std::string& manifest_json) {
  json m = json::parse(manifest_json, nullptr, false);
  if (!m.is_object() || !m.contains("config") || !m.contains("layers") || !m["layers"].is_array())
    return Error(ErrorKind::kInvalidInput, "not an OCI image manifest");
  std::vector<registry::Blob> blobs;
  auto add = [&](const json& d) -> Status {
    if (!d.is_object() || !d.contains("digest") || !d.contains("size") ||
        !d["size"].is_number_unsigned())
      return Error(ErrorKind::kInvalidInput, "manifest descriptor without digest or size");
    registry::Blob b;
    b.digest = d["digest"].get<std::string>();
    b.size = d["size"].get<uint64_t>();
    b.media_type = d.value("mediaType", "");
    if (!registry::is_valid_digest(b.digest)) return Error(ErrorKind::kInvalidInput, "bad digest " + b.digest);
    blobs.push_back(std::move(b));
    return {};
  };
  try {
    PW_TRY(add(m["config"]));
    for (const auto& l : m["layers"]) PW_TRY(add(l));
  } catch (const json::exception& e) {
    return Error(std::string("malformed manifest: ") + e.what());
  }
  return blobs;
}

Result<store::Store> open_store(const Context& ctx) {
  return store::Store::open(ctx.state_dir / "store");
}

Result<store::PutResult> store_image(const Context& ctx, const std::string& name) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  return st.put(ctx.image_dir(name), name);
}

namespace {

Result<std::filesystem::path> made_here_stamp(const Context& ctx,
                                              const std::filesystem::path& image_dir) {
  PW_ASSIGN(std::string sha, sha256_file(image_dir / image::kManifestFile));
  return ctx.stamps_dir() / ("made-here-" + sha);
}

}  // namespace

Status mark_made_here(const Context& ctx, const std::filesystem::path& image_dir) {
  PW_ASSIGN(std::filesystem::path stamp, made_here_stamp(ctx, image_dir));
  return fs::write_file_atomic(stamp, "", 0600, /*durable=*/true);
}

bool made_here(const Context& ctx, const std::filesystem::path& image_dir) {
  auto stamp = made_here_stamp(ctx, image_dir);
  std::error_code ec;
  return stamp.ok() && std::filesystem::exists(*stamp, ec);
}

Status ensure_unpacked(const Context& ctx, const std::string& name) {
  PW_TRY(spec::check_name(name, "image name"));
  if (stdfs::exists(ctx.image_dir(name) / image::kManifestFile)) return {};
  PW_ASSIGN(store::Store st, open_store(ctx));
  auto entries = st.list();
  if (!entries.ok()) return std::move(entries).error();
  bool known = false;
  for (const auto& e : *entries) known = known || e.name == name;
  if (!known)
    return Error(ErrorKind::kNotFound, "no image named '" + name + "' (run `prewarm bake SPEC.yaml` or `prewarm pull "
                 "REGISTRY/REPO:TAG` first; `prewarm images` lists images)");
  ctx.say("unpacking " + name + " from the store");
  store::MaterializeOptions mo;
  mo.replace = true;
  auto r = st.materialize(name, ctx.image_dir(name), mo);
  if (!r.ok()) return std::move(r).error().with_context("unpacking image " + name);
  return stamp_unpacked(ctx, name);
}

Result<std::vector<ImageInfo>> list_images(const Context& ctx) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(auto entries, st.list());
  std::vector<ImageInfo> out;
  for (const auto& e : entries) {
    ImageInfo i;
    i.name = e.name;
    i.created = e.created;
    i.manifest_digest = e.manifest_digest;
    i.raw_bytes = e.raw_bytes;
    i.stored_bytes = e.stored_bytes;
    i.problem = e.problem;
    i.unpacked = stdfs::exists(ctx.image_dir(e.name) / image::kManifestFile);
    out.push_back(std::move(i));
  }
  return out;
}

Status remove_image(const Context& ctx, const std::string& name) {
  PW_TRY(spec::check_name(name, "image name"));
  PW_ASSIGN(store::Store st, open_store(ctx));
  bool had_unpacked = stdfs::exists(ctx.image_dir(name));
  Status s = st.remove(name);
  if (!s.ok() && !had_unpacked) return s;
  return fs::remove_all(ctx.image_dir(name));
}

Result<store::GcResult> collect_garbage(const Context& ctx, const std::set<std::string>& keep,
                                        bool drop_partials) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  // No grace period: every prewarm writer (bake's put, pull, import) holds a store lease while
  // its blobs are not yet referenced, and gc waits for leases.
  store::GcOptions go;
  go.min_blob_age = std::chrono::seconds(0);
  if (drop_partials) go.temp_file_age = std::chrono::seconds(0);
  PW_ASSIGN(store::GcResult r, st.gc(keep, go));
  // Scratch dirs of checkpoint-image pushes and pulls that were killed. Live ones hold a store
  // lease, so st.gc waited for them; the age check covers one that started since.
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx.state_dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(".tmp-push-", 0) != 0 && n.rfind(".tmp-pull-", 0) != 0) continue;
    struct stat sb {};
    if (::lstat(e.path().c_str(), &sb) != 0 || !S_ISDIR(sb.st_mode) ||
        std::time(nullptr) - sb.st_mtime < 3600)
      continue;
    if (fs::remove_all(e.path()).ok()) ++r.removed_temp_files;
  }
  return r;
}

Result<std::string> verify_images(const Context& ctx, const std::string& name) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::VerifyReport report, name.empty() ? st.verify_all() : st.verify(name));
  std::string out = "store: " + std::to_string(report.images) + " image(s), " +
                    std::to_string(report.blobs) + " blob(s), " +
                    std::to_string(report.bytes / 1000000) + " MB checked";
  std::string problems = report.describe();
  PW_ASSIGN(auto images, list_images(ctx));
  for (const auto& i : images) {
    if ((!name.empty() && i.name != name) || !i.unpacked) continue;
    image::VerifyOptions vo;
    vo.force_full = true;
    vo.stamp_dir = ctx.stamps_dir();
    auto m = image::open_verified(ctx.image_dir(i.name), vo);
    if (!m.ok()) problems += (problems.empty() ? "" : "\n") + m.error().message();
    else out += "\nunpacked " + i.name + ": ok";
  }
  if (!problems.empty())
    return Error(ErrorKind::kInvalidInput, "verification failed").with_detail(problems);
  return out;
}

registry::Options registry_options(const Context& ctx) {
  registry::Options o;
  o.progress = [&ctx](const std::string& m) { ctx.say(m); };
  o.username = ctx.config.registry_user;
  o.password = ctx.config.registry_password;
  return o;
}

Status push_image(const Context& ctx, const std::string& name, const std::string& ref_text,
                  const registry::Options& opts) {
  PW_ASSIGN(registry::Reference ref, registry::parse_reference(ref_text));
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::Lease lease, st.lease());
  auto manifest = st.read_manifest(name);
  if (!manifest.ok())
    return std::move(manifest).error().with_context("push " + name + " (is it in `prewarm images`?)");
  PW_ASSIGN(auto blobs, manifest_blobs(manifest->first));
  for (auto& b : blobs) {
    PW_ASSIGN(b.path, st.blob_path(b.digest));
  }
  ctx.say("pushing " + name + " to " + ref.to_string() + " (" + std::to_string(blobs.size()) +
          " blobs)");
  return registry::push(ref, blobs, manifest->first, store::kManifestMediaType, opts);
}

Result<std::string> pull_image(const Context& ctx, const std::string& ref_text, std::string name,
                               const registry::Options& opts, const stdfs::path& rootfs) {
  PW_ASSIGN(registry::Reference ref, registry::parse_reference(ref_text));
  if (name.empty()) name = spec::to_name(ref.repository.substr(ref.repository.rfind('/') + 1));
  PW_TRY(spec::check_name(name, "image name"));
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::Lease lease, st.lease());
  PW_ASSIGN(registry::PulledManifest pm, registry::get_manifest(ref, opts));
  auto checkpoint_image = image::checkpoint_image_info(pm.json);
  if (!checkpoint_image.ok())
    return std::move(checkpoint_image).error().with_context("pull " + ref.to_string());
  if (*checkpoint_image)
    return pull_checkpoint_image(ctx, ref, **checkpoint_image, name, rootfs, opts);
  // Anything else must be prewarm's own format; say so before downloading a byte of it.
  if (json m = json::parse(pm.json, nullptr, false);
      !m.is_object() || m.value("artifactType", json()) != store::kArtifactType)
    return Error(ErrorKind::kInvalidInput, "pull " + ref.to_string() + ": not a checkpoint image (" +
                 (m.is_object() ? "media type " + pm.media_type : std::string("not JSON")) +
                 ", neither prewarm's artifactType " + store::kArtifactType +
                 " nor a CRI-O/Podman checkpoint annotation); an ordinary container image is a "
                 "rootfs, not a checkpoint");
  auto blobs = manifest_blobs(pm.json);
  if (!blobs.ok())
    return std::move(blobs).error().with_context("pull " + ref.to_string() +
                                                 ": not a prewarm checkpoint image");
  std::vector<registry::Blob> wanted;
  for (auto& b : *blobs) {
    if (st.has_blob(b.digest)) continue;
    // A fixed download path per blob, so an interrupted pull resumes where it stopped.
    b.path = st.root() / "blobs" / "sha256" / (".tmp-pull-" + b.digest.substr(7));
    wanted.push_back(b);
  }
  ctx.say("pulling " + ref.to_string() + ": " + std::to_string(wanted.size()) + " of " +
          std::to_string(blobs->size()) + " blobs missing here");
  PW_TRY(registry::pull_blobs(ref, wanted, opts));
  for (const auto& b : wanted) PW_TRY(st.add_blob_file(b.path, b.digest));
  auto added = st.add_manifest(name, pm.json);
  if (!added.ok()) return std::move(added).error().with_context("pull " + ref.to_string());
  store::MaterializeOptions mo;
  mo.replace = true;
  auto r = st.materialize(name, ctx.image_dir(name), mo);
  if (!r.ok()) return std::move(r).error().with_context("unpacking pulled image " + name);
  PW_TRY(stamp_unpacked(ctx, name));
  return name;
}

Status export_image(const Context& ctx, const std::string& name, const stdfs::path& out,
                    const std::string& compression) {
  PW_TRY(ensure_unpacked(ctx, name));
  image::ExportOptions eo;
  PW_ASSIGN(eo.compression, image::parse_compression(compression));
  eo.stamp_dir = ctx.stamps_dir();
  return image::export_archive(ctx.image_dir(name), out, eo);
}

Result<ImportResult> import_image(const Context& ctx, const stdfs::path& archive, std::string name,
                                  const stdfs::path& rootfs) {
  if (name.empty()) {
    name = archive.filename().string();
    name = spec::to_name(name.substr(0, name.find('.')));
  }
  PW_TRY(spec::check_name(name, "image name"));
  if (stdfs::exists(ctx.image_dir(name)))
    return Error(ErrorKind::kConflict, "an image named '" + name + "' exists already (choose another with --name, or "
                 "`prewarm rmi " + name + "`)");
  image::ImportOptions io;
  io.name = name;
  if (!rootfs.empty()) io.rootfs_dir = stdfs::absolute(rootfs);
  PW_ASSIGN(image::ImportedImage imported, image::import_archive(archive, ctx.image_dir(name), io));
  // A foreign checkpoint's manifest is written here, over the rootfs the operator named; a
  // prewarm archive's comes from elsewhere.
  Status marked = imported.foreign ? mark_made_here(ctx, ctx.image_dir(name)) : Status();
  auto put = marked.ok() ? store_image(ctx, name) : Result<store::PutResult>(marked.error());
  if (!put.ok()) {
    (void)fs::remove_all(ctx.image_dir(name));
    return std::move(put).error().with_context("import " + archive.string());
  }
  return ImportResult{name, imported.foreign, imported.warnings};
}

}  // namespace prewarm::images
