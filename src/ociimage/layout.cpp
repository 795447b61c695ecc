// The OCI image writer: the layer tar streams through zlib into its blob while both digests
// (of the tar: the diff id; of the gzip: the blob) are computed on the way; the JSON documents
// follow. Entries are written in sorted order with fixed mtimes, so the output is reproducible.
#include "ociimage/layout.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <nlohmann/json.hpp>
#include <system_error>
#include <vector>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/tar.h"
#include "base/unique_fd.h"

namespace prewarm::ociimage {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr const char* kManifestType = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kConfigType = "application/vnd.oci.image.config.v1+json";
constexpr const char* kLayerType = "application/vnd.oci.image.layer.v1.tar+gzip";
constexpr const char* kIndexType = "application/vnd.oci.image.index.v1+json";

// gzip (zlib's deflate with a gzip wrapper: no name, mtime 0, so reproducible) into an fd,
// hashing the compressed bytes.
class GzipFile {
 public:
  GzipFile(int fd, std::string what) : fd_(fd), what_(std::move(what)) {}
  ~GzipFile() {
    if (init_) deflateEnd(&z_);
  }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;

  Status init(int level) {
    if (deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return Error(ErrorKind::kInternal, "zlib: cannot start a gzip stream for " + what_);
    init_ = true;
    return ok_status();
  }
  Status write(const char* data, size_t n) { return pump(data, n, Z_NO_FLUSH); }
  Status finish() { return pump(nullptr, 0, Z_FINISH); }
  uint64_t bytes() const { return bytes_; }
  std::string digest() { return "sha256:" + hash_.final_hex(); }

 private:
  Status pump(const char* data, size_t n, int flush) {
    // SAFETY: zlib reads next_in without writing it; the cast only drops const for its API.
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    z_.avail_in = static_cast<uInt>(n);
    for (;;) {
      z_.next_out = reinterpret_cast<Bytef*>(buf_.data());
      z_.avail_out = static_cast<uInt>(buf_.size());
      int rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR)
        return Error(ErrorKind::kInternal, "zlib: deflate failed for " + what_);
      size_t have = buf_.size() - z_.avail_out;
      if (have > 0) {
        hash_.update(buf_.data(), have);
        PW_TRY(tar::write_all(fd_, buf_.data(), have, false, what_));
        bytes_ += have;
      }
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0))
        return ok_status();
    }
  }

  int fd_;
  std::string what_;
  z_stream z_{};
  bool init_ = false;
  std::array<char, 1 << 16> buf_{};
  Sha256Stream hash_;
  uint64_t bytes_ = 0;
};

// Adds the entries below `dir` (named `prefix` + name in the archive) in name order.
Status add_tree(tar::Writer& w, const stdfs::path& dir, const std::string& prefix, int64_t mtime,
                bool skip_special) {
  std::error_code ec;
  std::vector<std::string> names;
  for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  if (ec) return Error::sys("list directory", ec.value(), dir.string());
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    stdfs::path p = dir / n;
    std::string name = prefix + n;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return Error::sys("lstat", errno, p.string());
    tar::Meta meta{static_cast<unsigned>(st.st_mode & 07777), st.st_uid, st.st_gid, mtime};
    if (S_ISDIR(st.st_mode)) {
      PW_TRY(w.dir(name, meta));
      PW_TRY(add_tree(w, p, name + "/", mtime, skip_special));
    } else if (S_ISREG(st.st_mode)) {
      PW_TRY(w.file(name, p, static_cast<uint64_t>(st.st_size), meta));
    } else if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t len = ::readlink(p.c_str(), target.data(), target.size());
      if (len < 0) return Error::sys("readlink", errno, p.string());
      if (static_cast<size_t>(len) >= target.size())
        return Error(p.string() + " changed while being archived (its link target grew)");
      target.resize(static_cast<size_t>(len));
      PW_TRY(w.symlink(name, target, meta));
    } else if (!skip_special) {
      return Error(ErrorKind::kInvalidInput,
                   p.string() + " is a device, socket or FIFO; an image layer made by prewarm "
                                "holds only directories, files and symlinks (remove it from "
                                "the rootfs, or create it at run time)");
    }
  }
  return ok_status();
}

std::string hex_of(const std::string& digest) { return digest.substr(7); }

json string_array(const std::vector<std::string>& v) {
  json a = json::array();
  for (const auto& s : v) a.push_back(s);
  return a;
}

// Writes a blob named by its digest; returns {digest, size}.
Result<std::pair<std::string, uint64_t>> put_blob(const stdfs::path& blobs,
                                                  const std::string& data) {
  std::string digest = "sha256:" + sha256_hex(data);
  PW_TRY(fs::write_file(blobs / hex_of(digest), data, 0644));
  return std::pair{digest, static_cast<uint64_t>(data.size())};
}

Status check_inputs(const stdfs::path& rootfs, const WriteOptions& options) {
  if (options.name.empty())
    return Error(ErrorKind::kInvalidInput,
                 "an OCI image needs a name (e.g. prewarm.test/app:1) for its index.json");
  if (options.gzip_level < 1 || options.gzip_level > 9)
    return Error(ErrorKind::kInvalidInput,
                 "gzip level " + std::to_string(options.gzip_level) + " is not in 1..9");
  struct stat st {};
  if (::stat(rootfs.c_str(), &st) != 0)
    return Error::sys("stat", errno, rootfs.string()).with_context("OCI image rootfs");
  if (!S_ISDIR(st.st_mode))
    return Error(ErrorKind::kInvalidInput, rootfs.string() + " is not a directory (OCI image rootfs)");
  return ok_status();
}

// A scratch path next to `target` (same filesystem, so the final rename is atomic).
stdfs::path scratch_next_to(const stdfs::path& target, const std::string& what) {
  return target.parent_path() / ("." + target.filename().string() + "." + what + "-" +
                                 fs::random_hex(6));
}

// The layout's content into `dir` (an existing empty directory).
Result<WrittenImage> fill_layout(const stdfs::path& rootfs, const ImageConfig& config,
                                 const WriteOptions& options, const stdfs::path& dir) {
  WrittenImage out;
  stdfs::path blobs = dir / "blobs" / "sha256";
  PW_TRY(fs::make_dirs(blobs, 0755));

  // The layer.
  stdfs::path layer_tmp = dir / "layer.tar.gz.tmp";
  {
    UniqueFd fd(::open(layer_tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid()) return Error::sys("create", errno, layer_tmp.string());
    GzipFile gz(fd.get(), layer_tmp.string());
    PW_TRY(gz.init(options.gzip_level));
    Sha256Stream diff;
    tar::Writer w([&gz](const char* d, size_t n) { return gz.write(d, n); },
                  "layer of " + rootfs.string(), &diff);
    PW_TRY(add_tree(w, rootfs, "", options.mtime, options.skip_special_files));
    PW_TRY(w.finish());
    PW_TRY(gz.finish());
    if (::fsync(fd.get()) != 0) return Error::sys("fsync", errno, layer_tmp.string());
    out.diff_id = "sha256:" + diff.final_hex();
    out.layer_digest = gz.digest();
    out.layer_size = gz.bytes();
  }
  std::error_code ec;
  stdfs::rename(layer_tmp, blobs / hex_of(out.layer_digest), ec);
  if (ec) return Error::sys("rename", ec.value(), layer_tmp.string());

  // The config: only what the runtime reads, plus the layer's diff id.
  json cfg = json::object();
  if (!config.entrypoint.empty()) cfg["Entrypoint"] = string_array(config.entrypoint);
  if (!config.cmd.empty()) cfg["Cmd"] = string_array(config.cmd);
  if (!config.env.empty()) cfg["Env"] = string_array(config.env);
  if (!config.working_dir.empty()) cfg["WorkingDir"] = config.working_dir;
  if (!config.user.empty()) cfg["User"] = config.user;
  if (!config.exposed_ports.empty()) {
    json ports = json::object();
    for (const auto& p : config.exposed_ports) ports[p] = json::object();
    cfg["ExposedPorts"] = ports;
  }
  if (!config.labels.empty()) cfg["Labels"] = config.labels;
  json image_config = {
      {"architecture", config.architecture},
      {"os", config.os},
      {"config", cfg},
      {"rootfs", {{"type", "layers"}, {"diff_ids", json::array({out.diff_id})}}},
      {"history", json::array({{{"created_by", "prewarm ociimage: rootfs directory"}}})},
  };
  PW_ASSIGN(auto config_blob, put_blob(blobs, image_config.dump()));
  out.config_digest = config_blob.first;

  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kManifestType},
      {"config",
       {{"mediaType", kConfigType}, {"digest", config_blob.first}, {"size", config_blob.second}}},
      {"layers", json::array({{{"mediaType", kLayerType},
                               {"digest", out.layer_digest},
                               {"size", out.layer_size}}})},
  };
  PW_ASSIGN(auto manifest_blob, put_blob(blobs, manifest.dump()));
  out.manifest_digest = manifest_blob.first;
  out.manifest_size = manifest_blob.second;

  json index = {
      {"schemaVersion", 2},
      {"mediaType", kIndexType},
      {"manifests",
       json::array({{{"mediaType", kManifestType},
                     {"digest", out.manifest_digest},
                     {"size", out.manifest_size},
                     {"annotations",
                      {{"io.containerd.image.name", options.name},
                       {"org.opencontainers.image.ref.name", options.name}}}}})},
  };
  PW_TRY(fs::write_file(dir / "index.json", index.dump(), 0644));
  PW_TRY(fs::write_file(dir / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));
  return out;
}

}  // namespace

Result<WrittenImage> write_layout(const stdfs::path& rootfs, const ImageConfig& config,
                                  const WriteOptions& options, const stdfs::path& out_dir) {
  PW_TRY(check_inputs(rootfs, options));
  std::error_code ec;
  if (stdfs::symlink_status(out_dir, ec).type() != stdfs::file_type::not_found)
    return Error(ErrorKind::kConflict,
                 out_dir.string() + " exists; an OCI layout is written into a new directory");
  stdfs::path staging = scratch_next_to(out_dir, "tmp");
  PW_TRY(fs::make_dirs(staging, 0755));
  fs::RemoveOnExit cleanup(staging);
  PW_ASSIGN(auto written, fill_layout(rootfs, config, options, staging));
  stdfs::rename(staging, out_dir, ec);
  if (ec) return Error::sys("rename", ec.value(), staging.string() + " to " + out_dir.string());
  cleanup.release();
  return written;
}

Result<WrittenImage> write_archive(const stdfs::path& rootfs, const ImageConfig& config,
                                   const WriteOptions& options, const stdfs::path& out_tar) {
  PW_TRY(check_inputs(rootfs, options));
  stdfs::path layout = scratch_next_to(out_tar, "layout");
  PW_TRY(fs::make_dirs(layout, 0700));
  fs::RemoveOnExit cleanup_layout(layout);
  PW_ASSIGN(auto written, fill_layout(rootfs, config, options, layout));

  stdfs::path tmp = scratch_next_to(out_tar, "tar");
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return Error::sys("create", errno, tmp.string());
  fs::RemoveOnExit cleanup_tmp(tmp);
  tar::Writer w(fd.get(), false, tmp.string());
  const tar::Meta file_meta{0644, 0, 0, options.mtime};
  const tar::Meta dir_meta{0755, 0, 0, options.mtime};
  for (const char* name : {"oci-layout", "index.json"}) {
    PW_ASSIGN(std::string data, fs::read_file(layout / name));
    PW_TRY(w.bytes(name, data, file_meta));
  }
  PW_TRY(w.dir("blobs", dir_meta));
  PW_TRY(w.dir("blobs/sha256", dir_meta));
  std::vector<std::string> blobs;
  std::error_code ec;
  for (stdfs::directory_iterator it(layout / "blobs" / "sha256", ec), end; !ec && it != end;
       it.increment(ec))
    blobs.push_back(it->path().filename().string());
  if (ec) return Error::sys("list directory", ec.value(), (layout / "blobs/sha256").string());
  std::sort(blobs.begin(), blobs.end());
  for (const auto& b : blobs) {
    stdfs::path p = layout / "blobs" / "sha256" / b;
    auto size = stdfs::file_size(p, ec);
    if (ec) return Error::sys("stat", ec.value(), p.string());
    PW_TRY(w.file("blobs/sha256/" + b, p, size, file_meta));
  }
  PW_TRY(w.finish());
  if (::fsync(fd.get()) != 0) return Error::sys("fsync", errno, tmp.string());
  fd.reset();
  stdfs::rename(tmp, out_tar, ec);
  if (ec) return Error::sys("rename", ec.value(), tmp.string() + " to " + out_tar.string());
  cleanup_tmp.release();
  return written;
}

}  // namespace prewarm::ociimage
