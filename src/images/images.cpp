// Store, unpacked copies and registry transfers, glued together.
#include "images/images.h"

#include "images/load.h"
#include "images/pulling.h"

#include <nlohmann/json.hpp>
#include <set>

#include "base/fault.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "criu/criu.h"
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

enum class UnpackedState { kCurrent, kStale, kEdited };

std::string read_store_digest(const stdfs::path& dir) {
  auto text = fs::read_file(dir / image::kStoreDigestFile, 256);
  if (!text.ok()) return "";
  std::string d = *text;
  while (!d.empty() && (d.back() == '\n' || d.back() == ' ')) d.pop_back();
  return d;
}

// Whether the unpacked copy at dir is the image the store holds: the store digest it records
// must be the stored one (else it is stale: a crash between the index update of a pull or bake
// and the unpacking), and its manifest.json, which vouches for every other file, must be the
// stored one byte for byte (else it was edited). A copy without a record (a bake's, stored
// before the record existed) is current when its manifest.json matches.
Result<UnpackedState> check_unpacked(const stdfs::path& dir, const store::StoredImage& stored) {
  const std::string recorded = read_store_digest(dir);
  if (!recorded.empty() && recorded != stored.manifest_digest) return UnpackedState::kStale;
  PW_ASSIGN(std::string sha, sha256_file(dir / image::kManifestFile));
  if (sha == stored.manifest_json_sha256) return UnpackedState::kCurrent;
  return recorded.empty() ? UnpackedState::kStale : UnpackedState::kEdited;
}

std::string describe_unpacked(const std::string& name, const stdfs::path& dir,
                              const store::StoredImage& stored, UnpackedState state) {
  if (state == UnpackedState::kEdited)
    return "unpacked " + name + ": " + (dir / image::kManifestFile).string() +
           " is not the manifest.json the store holds for " + stored.manifest_digest +
           " (it was edited)";
  std::string recorded = read_store_digest(dir);
  return "unpacked " + name + ": " + dir.string() + " is stale (unpacked from " +
         (recorded.empty() ? std::string("an older version") : recorded) +
         ", the store now holds " + stored.manifest_digest + ")";
}

// Unpacked copies under images/ whose image the store no longer has (an interrupted rmi).
// Only copies that record a store digest: a bake or import writes its copy before storing it.
std::vector<std::string> orphaned_copies(const Context& ctx,
                                         const std::vector<store::ListEntry>& stored) {
  std::set<std::string> names;
  for (const auto& e : stored) names.insert(e.name);
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx.images_dir(), ec)) {
    std::string n = e.path().filename().string();
    if (n.empty() || n[0] == '.' || names.count(n) || !spec::check_name(n, "image name").ok())
      continue;
    if (!read_store_digest(e.path()).empty()) out.push_back(n);
  }
  return out;
}

}  // namespace

Result<std::vector<registry::Blob>> manifest_blobs(const std::string& manifest_json) {
  json m = json::parse(manifest_json, nullptr, false);
  if (!m.is_object() || !m.contains("config") || !m.contains("layers") || !m["layers"].is_array())
    return Error(ErrorKind::kInvalidInput, "not an OCI image manifest");
  std::vector<registry::Blob> blobs;
  auto add = [&](const json& d) -> Status {
    if (!d.is_object() || !d.contains("digest") || !d.contains("size"))
      return Error(ErrorKind::kInvalidInput, "manifest descriptor without digest or size");
    registry::Blob b;
    b.digest = d["digest"].get<std::string>();
    if (!d["size"].is_number_unsigned())
      return Error(ErrorKind::kInvalidInput,
                   "manifest descriptor size " + d["size"].dump() + " is not a byte count");
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

std::filesystem::path lazy_copies_dir(const Context& ctx) { return ctx.state_dir / "lazy-copies"; }

std::string digest_hex(const std::string& digest) {
  auto colon = digest.find(':');
  return colon == std::string::npos ? digest : digest.substr(colon + 1);
}

Result<store::Store> open_store(const Context& ctx) {
  return store::Store::open(ctx.state_dir / "store");
}

Result<store::PutResult> store_image(const Context& ctx, const std::string& name) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::PutResult r, st.put(ctx.image_dir(name), name));
  PW_TRY(record_store_digest(ctx.image_dir(name), r.manifest_digest));
  return r;
}

Status record_store_digest(const stdfs::path& image_dir, const std::string& manifest_digest) {
  return fs::write_file_atomic(image_dir / image::kStoreDigestFile, manifest_digest + "\n", 0600);
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

Result<std::string> ensure_unpacked(const Context& ctx, const std::string& name) {
  PW_TRY(spec::check_name(name, "image name"));
  PW_ASSIGN(store::Store st, open_store(ctx));
  const stdfs::path dir = ctx.image_dir(name);
  const bool unpacked = stdfs::exists(dir / image::kManifestFile);
  auto stored = st.stored_image(name);
  if (!stored.ok()) {
    if (stored.error().kind() != ErrorKind::kNotFound)
      return std::move(stored).error().with_context("image " + name);
    if (unpacked)
      return Error(ErrorKind::kNotFound,
                   "image '" + name + "' is not in the store, but its unpacked copy " +
                       dir.string() + " is (left by an interrupted `prewarm rmi`?); refusing to "
                       "start it. `prewarm rmi " + name + "` or `prewarm gc` removes the copy");
    return Error(ErrorKind::kNotFound, "no image named '" + name + "' (run `prewarm bake SPEC.yaml` or `prewarm pull "
                 "REGISTRY/REPO:TAG` first; `prewarm images` lists images)");
  }
  if (unpacked) {
    PW_ASSIGN(UnpackedState state, check_unpacked(dir, *stored));
    if (state == UnpackedState::kCurrent) return stored->manifest_digest;
    if (state == UnpackedState::kEdited)
      return Error(ErrorKind::kInvalidInput,
                   describe_unpacked(name, dir, *stored, state) +
                       "; refusing to start it. Remove " + dir.string() +
                       " and it is unpacked again from the store");
    ctx.say(describe_unpacked(name, dir, *stored, state) + "; unpacking it again");
  } else {
    ctx.say("unpacking " + name + " from the store");
  }
  store::MaterializeOptions mo;
  mo.replace = true;
  auto r = st.materialize(name, dir, mo);
  if (!r.ok()) return std::move(r).error().with_context("unpacking image " + name);
  PW_TRY(stamp_unpacked(ctx, name));
  // The index may have moved on while we unpacked: check what was unpacked.
  PW_ASSIGN(UnpackedState state, check_unpacked(dir, *stored));
  if (state != UnpackedState::kCurrent)
    return Error(ErrorKind::kConflict, describe_unpacked(name, dir, *stored, state) +
                                           " (it was replaced while being unpacked); try again");
  return stored->manifest_digest;
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
  // Its lazy copy (only the store's image had one); gc removes those of an interrupted rmi.
  if (auto stored = st.stored_image(name); stored.ok())
    PW_TRY(fs::remove_all(lazy_copies_dir(ctx) / digest_hex(stored->manifest_digest)));
  Status s = st.remove(name);
  if (!s.ok() && !had_unpacked) return s;
  fault_point("rmi.after_index_update");
  return fs::remove_all(ctx.image_dir(name));
}

Result<GcReport> collect_garbage(const Context& ctx, const std::set<std::string>& keep,
                                 bool drop_partials) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  // No grace period: every prewarm writer (bake's put, pull, import) holds a store lease while
  // its blobs are not yet referenced, and gc waits for leases.
  store::GcOptions go;
  go.min_blob_age = std::chrono::seconds(0);
  if (drop_partials) go.temp_file_age = std::chrono::seconds(0);
  GcReport r;
  PW_ASSIGN(r.store, st.gc(keep, go));
  // Unpacked copies of images an interrupted rmi took out of the store.
  PW_ASSIGN(auto entries, st.list());
  for (const auto& n : orphaned_copies(ctx, entries)) {
    ctx.say("removing " + ctx.image_dir(n).string() + ": its image is no longer in the store");
    PW_TRY(fs::remove_all(ctx.image_dir(n)));
  }
  // Lazy copies of images the store no longer has.
  std::set<std::string> stored_hex;
  for (const auto& e : entries) stored_hex.insert(digest_hex(e.manifest_digest));
  for (const auto& d : pulling_digests(ctx)) stored_hex.insert(digest_hex(d));  // not indexed yet
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(lazy_copies_dir(ctx), ec)) {
    const std::string n = e.path().filename().string();
    if (n.empty() || n[0] == '.' || stored_hex.count(n)) continue;
    ctx.say("removing " + e.path().string() + ": its image is no longer in the store");
    PW_TRY(fs::remove_all(e.path()));
  }
  // Staging dirs of bakes, imports, unpackings and checkpoint-image transfers that were killed
  // (a bake's holds a whole checkpoint). Live ones are locked by their maker. Image names never
  // start with '.', so every dot-directory in images/ is one.
  for (const auto& [dir, prefixes] :
       {std::pair<stdfs::path, std::vector<std::string>>{ctx.images_dir(), {"."}},
        {ctx.state_dir, {".tmp-push-", ".tmp-pull-"}},
        {lazy_copies_dir(ctx), {"."}}}) {
    PW_ASSIGN(fs::StaleStaging swept, fs::remove_stale_staging(dir, prefixes));
    r.staging.dirs += swept.dirs;
    r.staging.bytes += swept.bytes;
  }
  // CRIU's scratch dirs of host checks a killed prewarm left in the temp dir.
  PW_ASSIGN(r.criu_scratch, criu::remove_stale_scratch());
  return r;
}

Result<std::string> verify_images(const Context& ctx, const std::string& name) {
  if (!name.empty()) PW_TRY(spec::check_name(name, "image name"));
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::VerifyReport report, name.empty() ? st.verify_all() : st.verify(name));
  std::string out = "store: " + std::to_string(report.images) + " image(s), " +
                    std::to_string(report.blobs) + " blob(s), " +
                    std::to_string(report.bytes / 1000000) + " MB checked";
  std::string problems = report.describe();
  auto problem = [&](const std::string& p) { problems += (problems.empty() ? "" : "\n") + p; };
  PW_ASSIGN(auto images, list_images(ctx));
  for (const auto& i : images) {
    if ((!name.empty() && i.name != name) || !i.unpacked) continue;
    const stdfs::path dir = ctx.image_dir(i.name);
    auto stored = st.stored_image(i.name);
    if (!stored.ok()) {
      problem(stored.error().message());
      continue;
    }
    auto state = check_unpacked(dir, *stored);
    if (!state.ok()) {
      problem(state.error().message());
      continue;
    }
    if (*state != UnpackedState::kCurrent) {
      problem(describe_unpacked(i.name, dir, *stored, *state) +
              (*state == UnpackedState::kStale ? " (the next run unpacks it again)" : ""));
      continue;
    }
    image::VerifyOptions vo;
    vo.force_full = true;
    vo.stamp_dir = ctx.stamps_dir();
    auto m = image::open_verified(dir, vo);
    if (!m.ok()) problem(m.error().message());
    else out += "\nunpacked " + i.name + ": ok";
  }
  PW_ASSIGN(auto entries, st.list());
  for (const auto& n : orphaned_copies(ctx, entries))
    if (name.empty() || n == name)
      problem("unpacked " + n + ": " + ctx.image_dir(n).string() +
              " has no image in the store (left by an interrupted rmi; `prewarm rmi " + n +
              "` or `prewarm gc` removes it)");
  if (!problems.empty())
    return Error(ErrorKind::kInvalidInput, "verification failed").with_detail(problems);
  return out;
}

registry::Options registry_options(const Context& ctx) {
  registry::Options o;
  o.progress = [&ctx](const std::string& m) { ctx.say(m); };
  o.username = ctx.config.registry_user;
  o.password = ctx.config.registry_password;
  o.stall_timeout = ctx.config.registry_timeout;
  return o;
}

Status push_image(const Context& ctx, const std::string& name, const std::string& ref_text,
                  const registry::Options& opts) {
  PW_TRY(spec::check_name(name, "image name"));
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
  // Held for the whole pull: a restore of the name waits for the part it needs first.
  PW_ASSIGN(PullMarker marker, PullMarker::take(ctx, name));
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
  // What the store would refuse to read, refused before a byte of it is downloaded.
  for (size_t i = 0; i < blobs->size(); ++i) {
    const registry::Blob& b = (*blobs)[i];
    const uint64_t max = i == 0 ? store::kMaxJsonBytes : store::kMaxPackBytes;
    if (b.size > max)
      return Error(ErrorKind::kInvalidInput,
                   "pull " + ref.to_string() + ": its " + (i == 0 ? "config " : "layer ") +
                       b.digest + " declares " + std::to_string(b.size) + " bytes, more than the " +
                       std::to_string(max) + " a prewarm image's " +
                       (i == 0 ? "config" : "pack") + " may have; refusing it before downloading");
  }
  std::map<std::string, registry::Blob> missing;  // by digest
  for (auto& b : *blobs) {
    if (st.has_blob(b.digest)) continue;
    // A fixed download path per blob, so an interrupted pull resumes where it stopped.
    b.path = st.root() / "blobs" / "sha256" / (".tmp-pull-" + b.digest.substr(7));
    missing.emplace(b.digest, b);
  }
  ctx.say("pulling " + ref.to_string() + ": " + std::to_string(missing.size()) + " of " +
          std::to_string(blobs->size()) + " blobs missing here");
  // Each blob goes into the store as soon as it is verified: a restore that starts during the
  // pull reads the packs that have arrived.
  auto fetch = [&](const std::vector<std::string>& digests) -> Status {
    std::vector<registry::Blob> wanted;
    for (const auto& d : digests)
      if (auto it = missing.find(d); it != missing.end()) {
        wanted.push_back(it->second);
        missing.erase(it);
      }
    if (wanted.empty()) return {};
    return registry::pull_blobs(ref, wanted, opts, [&](const registry::Blob& b) {
      return st.add_blob_file(b.path, b.digest);
    });
  };
  // The config first: which files the image has, and in which packs.
  PW_TRY(fetch({(*blobs)[0].digest}));
  auto staged = st.add_manifest_blob(pm.json);
  if (!staged.ok()) return std::move(staged).error().with_context("pull " + ref.to_string());
  auto reader = store::ImageReader::open(st, *staged);
  if (!reader.ok()) return std::move(reader).error().with_context("pull " + ref.to_string());
  PW_TRY(marker.staged(*staged));
  // An image restored lazily (a large one, by default) is not unpacked: its lazy copy has the
  // small files and the working set, and restores read the rest straight from the store. Its
  // packs come first: the image can be restored before the last pack arrives.
  auto lazy_copy = make_default_lazy_copy(ctx, *reader, fetch);
  if (!lazy_copy.ok()) return std::move(lazy_copy).error().with_context("pull " + ref.to_string());
  if (*lazy_copy) {
    PW_TRY(marker.restorable(*staged, **lazy_copy));
    if (!missing.empty())
      ctx.say("image " + name + " can be restored now (lazily); pulling its other " +
              std::to_string(missing.size()) + " blob(s)");
  }
  std::vector<std::string> rest;
  for (const auto& b : *blobs)
    if (missing.count(b.digest)) rest.push_back(b.digest);
  PW_TRY(fetch(rest));
  auto added = st.add_manifest(name, pm.json);
  if (!added.ok()) return std::move(added).error().with_context("pull " + ref.to_string());
  if (*lazy_copy) {
    PW_TRY(fs::remove_all(ctx.image_dir(name)));  // a copy of what the name held before
    ctx.say("pulled " + name + ": not unpacked; restores are lazy, straight from the store");
    return name;
  }
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
