// Export of prewarm images as container checkpoint archives (CRI-O/kubelet and Podman layout).
//
// Format sources (read, not copied):
// - checkpointctl lib/metadata.go: member names and ContainerConfig's JSON fields (id, name,
//   rootfsImage, rootfsImageRef, rootfsImageName, runtime, createdTime, checkpointedTime,
//   restoredTime, restored).
// - checkpointctl internal/utils.go, internal/container.go: `show` needs a "checkpoint"
//   directory entry, config.dump and spec.dump (found by substring); with
//   io.container.manager=cri-o it reads io.kubernetes.cri-o.Metadata (JSON with "name") and
//   io.kubernetes.cri-o.Created; `inspect --stats` reads a top-level stats-dump.
// - checkpointctl lib/annotations.go: org.criu.checkpoint.* engine and host annotations.
// - CRI-O internal/lib/checkpoint.go: an export is an uncompressed tar, 0600, of stats-dump,
//   dump.log, checkpoint/, config.dump, spec.dump, bind.mounts, rootfs-diff.tar, deleted.files.
// - CRI-O server/container_restore.go: restore parses spec.dump's io.kubernetes.cri-o.Annotations
//   as a JSON map; internal/annotations/annotations.go: io.kubernetes.cri-o.* keys and the
//   io.kubernetes.cri-o.annotations.checkpoint.* keys of checkpoint images.
// - Podman libpod exportCheckpoint: adds network.status, volumes/, devshm-checkpoint.tar,
//   compresses with none/gzip/zstd; its spec.dump says io.container.manager=libpod.
#include "image/k8s_archive.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "image/compress.h"
#include "image/image.h"
#include "image/k8s_internal.h"
#include "base/tar.h"
#include "oci/config.h"
#include "spec/app_spec.h"

namespace prewarm::image {
namespace k8s {

bool is_rfc3339(const std::string& s) {
  auto digits = [&](size_t pos, size_t n) {
    if (pos + n > s.size()) return false;
    for (size_t i = pos; i < pos + n; ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  };
  if (s.size() < 20 || !digits(0, 4) || s[4] != '-' || !digits(5, 2) || s[7] != '-' ||
      !digits(8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(11, 2) || s[13] != ':' ||
      !digits(14, 2) || s[16] != ':' || !digits(17, 2))
    return false;
  size_t i = 19;
  if (s[i] == '.') {
    size_t start = ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == start) return false;
  }
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) return i + 1 == s.size();
  return i + 6 == s.size() && (s[i] == '+' || s[i] == '-') && digits(i + 1, 2) &&
         s[i + 3] == ':' && digits(i + 4, 2);
}

std::string archive_name(const std::string& image_path) {
  if (starts_with(image_path, std::string(kCheckpointDir) + "/") || image_path == kRootfsDiff)
    return image_path;
  return std::string(kArchivePrewarmDir) + "/" + image_path;
}

}  // namespace k8s

namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace k8s;

int64_t rfc3339_seconds(const std::string& s) {
  if (!is_rfc3339(s)) return 0;
  std::tm tm{};
  tm.tm_year = std::stoi(s.substr(0, 4)) - 1900;
  tm.tm_mon = std::stoi(s.substr(5, 2)) - 1;
  tm.tm_mday = std::stoi(s.substr(8, 2));
  tm.tm_hour = std::stoi(s.substr(11, 2));
  tm.tm_min = std::stoi(s.substr(14, 2));
  tm.tm_sec = std::stoi(s.substr(17, 2));
  return std::max<int64_t>(0, ::timegm(&tm));
}

// config.dump: checkpointctl's ContainerConfig (the subset of what CRI-O and Podman write that
// checkpointctl and CRI-O's restore read).
std::string config_dump(const Manifest& m, const std::string& id) {
  std::string created = is_rfc3339(m.created) ? m.created : "0001-01-01T00:00:00Z";
  json j = {{"id", id},
            {"name", m.name},
            {"rootfsImageName", m.rootfs_id},
            {"runtime", "runc"},
            {"createdTime", created},
            {"checkpointedTime", created},
            {"restoredTime", "0001-01-01T00:00:00Z"},
            {"restored", false}};
  return j.dump(2) + "\n";
}

// spec.dump: the OCI runtime spec prewarm runs the app with (placeholder root, and no network
// namespace path: both are per instance), annotated the way CRI-O annotates its containers.
std::string spec_dump(const Manifest& m, const spec::AppSpec& app, const std::string& id) {
  oci::ContainerConfig cfg;
  cfg.rootfs = "rootfs";
  cfg.argv = app.argv();
  cfg.env = app.env;
  cfg.cwd = app.working_dir;
  cfg.hostname = app.name;
  cfg.cgroups_path = "/prewarm-" + m.name;
  json j = json::parse(oci::make_config_json(cfg));
  for (auto& ns : j["linux"]["namespaces"])
    if (ns.contains("path") && ns["path"] == "") ns.erase("path");

  const std::map<std::string, std::string> a = {
      // CRI-O internal/annotations; checkpointctl shows Metadata's name and Created.
      {"io.container.manager", "cri-o"},
      {"io.kubernetes.cri-o.Metadata", json{{"name", m.name}}.dump()},
      {"io.kubernetes.cri-o.Annotations", "{}"},  // CRI-O's restore parses it as JSON
      {"io.kubernetes.cri-o.Labels", "{}"},
      {"io.kubernetes.cri-o.Created", m.created},
      {"io.kubernetes.cri-o.ContainerID", id},
      {"io.kubernetes.cri-o.ContainerName", m.name},
      {"io.kubernetes.cri-o.ContainerType", "container"},
      {"io.kubernetes.cri-o.ImageName", m.rootfs_id},
      {"io.kubernetes.container.name", m.name},
      // CRI-O's checkpoint image annotations (CheckpointAnnotation*).
      {"io.kubernetes.cri-o.annotations.checkpoint.name", m.name},
      {"io.kubernetes.cri-o.annotations.checkpoint.rootfsImageName", m.rootfs_id},
      {"io.kubernetes.cri-o.annotations.checkpoint.criu.version", m.host.criu_version},
      // checkpointctl lib/annotations.go.
      {"org.criu.checkpoint.engine.name", "prewarm"},
      {"org.criu.checkpoint.container.name", m.name},
      {"org.criu.checkpoint.rootfsImageName", m.rootfs_id},
      {"org.criu.checkpoint.runtime.name", "runc"},
      {"org.criu.checkpoint.runtime.version", m.host.runc_version},
      {"org.criu.checkpoint.criu.version", m.host.criu_version},
      {"org.criu.checkpoint.host.arch", m.host.arch},
      {"org.criu.checkpoint.host.kernel", m.host.kernel},
  };
  json annotations = json::object();
  for (const auto& [k, v] : a)
    if (!v.empty()) annotations[k] = v;
  j["annotations"] = annotations;
  return j.dump(2) + "\n";
}

Status write_archive(tar::Sink sink, const stdfs::path& image_dir, const Manifest& m,
                     const std::string& manifest_text, const spec::AppSpec& app,
                     const std::string& what, Sha256Stream* hash) {
  tar::Writer w(std::move(sink), what, hash);
  const tar::Meta meta{0600, 0, 0, rfc3339_seconds(m.created)};
  const tar::Meta dir_meta{0700, 0, 0, meta.mtime};
  const std::string id = sha256_hex(manifest_text);  // a stable 64-hex "container ID"
  const std::string ckpt = std::string(kCheckpointDir) + "/";
  const std::string own = std::string(kArchivePrewarmDir) + "/";

  std::set<std::string> dirs_done;
  auto parents = [&](const std::string& name) -> Status {
    for (size_t s = name.find('/'); s != std::string::npos; s = name.find('/', s + 1))
      if (dirs_done.insert(name.substr(0, s)).second) PW_TRY(w.dir(name.substr(0, s), dir_meta));
    return {};
  };
  // CRI-O's order: checkpoint/ first (checkpointctl needs its directory entry), then metadata.
  // prewarm's manifest comes right after that entry: an importer that has read it knows every
  // file's size before the file's bytes arrive, and refuses any other size at once.
  PW_TRY(parents(ckpt));
  PW_TRY(parents(own));
  PW_TRY(w.bytes(own + kManifestFile, manifest_text, meta));
  const FileDigest* stats = nullptr;
  for (const auto& f : m.files) {
    if (!starts_with(f.path, ckpt)) continue;
    if (f.path == ckpt + kStatsDump) stats = &f;
    PW_TRY(parents(f.path));
    PW_TRY(w.file(f.path, image_dir / f.path, f.size, meta));
  }
  PW_TRY(w.bytes(kConfigDump, config_dump(m, id), meta));
  PW_TRY(w.bytes(kSpecDump, spec_dump(m, app, id), meta));
  // CRIU writes stats-dump into its work dir; CRI-O and Podman ship it at the top level, where
  // checkpointctl inspect --stats looks. The copy under checkpoint/ stays for a lossless import.
  if (stats) PW_TRY(w.file(kStatsDump, image_dir / stats->path, stats->size, meta));
  for (const auto& f : m.files)
    if (f.path == kRootfsDiff) PW_TRY(w.file(kRootfsDiff, image_dir / f.path, f.size, meta));

  for (const auto& f : m.files) {
    std::string name = archive_name(f.path);
    if (!starts_with(name, own)) continue;
    PW_TRY(parents(name));
    PW_TRY(w.file(name, image_dir / f.path, f.size, meta));
  }
  return w.finish();
}

}  // namespace

Result<Compression> parse_compression(std::string_view name) {
  if (name == "none") return Compression::kNone;
  if (name == "gzip") return Compression::kGzip;
  if (name == "zstd") return Compression::kZstd;
  return Error("compression " + std::string(name) + ": use none, gzip or zstd");
}

Status export_archive(const stdfs::path& image_dir, const stdfs::path& out_tar,
                      const ExportOptions& opts) {
  const std::string what = "export " + image_dir.string() + " to " + out_tar.string();
  VerifyOptions vo;
  vo.stamp_dir = opts.stamp_dir;
  auto verified = open_verified(image_dir, vo);
  if (!verified.ok()) return std::move(verified).error().with_context(what);
  const Manifest& m = *verified;
  PW_ASSIGN(std::string manifest_text,
            fs::read_file(image_dir / kManifestFile, kMaxManifestBytes));
  auto app = stored_spec(m);
  if (!app.ok()) return std::move(app).error().with_context(what + ": the image's spec");

  // Written into the image, the archive would become an unlisted file of it.
  std::error_code ec;
  stdfs::path parent = out_tar.has_parent_path() ? out_tar.parent_path() : stdfs::path(".");
  auto inside = stdfs::weakly_canonical(parent, ec).lexically_relative(
      stdfs::weakly_canonical(image_dir, ec));
  if (!inside.empty() && *inside.begin() != "..")
    return Error(what + ": the archive cannot be written inside the image it exports");

  stdfs::path tmp = parent / ("." + out_tar.filename().string() + ".tmp-" + fs::random_hex(4));
  UniqueFd file(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!file.valid()) return Error::sys("create", errno, tmp.string()).with_context(what);
  struct Unlink {
    stdfs::path p;
    ~Unlink() {
      if (!p.empty()) ::unlink(p.c_str());
    }
  } unlink_tmp{tmp};

  Sha256Stream tar_hash;
  Sha256Stream* hash = opts.tar_sha256 ? &tar_hash : nullptr;
  if (opts.compression == Compression::kNone) {
    const int fd = file.get();
    PW_TRY(write_archive(
        [&](const char* d, size_t n) { return tar::write_all(fd, d, n, false, tmp.string()); },
        image_dir, m, manifest_text, *app, what, hash));
  } else {
    // In-process gzip/zstd: the tar streams through the compressor into the file.
    PW_ASSIGN(auto z, Compressor::make(opts.compression, file.get(), tmp.string()));
    PW_TRY(write_archive([&](const char* d, size_t n) { return z->write(d, n); }, image_dir, m,
                         manifest_text, *app, what, hash));
    PW_TRY(z->finish());
  }
  if (::fsync(file.get()) != 0) return Error::sys("fsync", errno, tmp.string());
  file.reset();
  if (::rename(tmp.c_str(), out_tar.c_str()) != 0)
    return Error::sys("rename", errno, out_tar.string()).with_context(what);
  unlink_tmp.p.clear();
  if (opts.tar_sha256) *opts.tar_sha256 = tar_hash.final_hex();
  return {};
}

}  // namespace prewarm::image
