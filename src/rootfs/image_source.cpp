// Where a container image's manifests and blobs come from (a registry, an OCI image layout or
// an archive of one), and resolving a reference through tags and indexes to one manifest.
// Every document and blob is checked against its digest before anything reads it.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/tar.h"
#include "rootfs/internal.h"
#include "spec/image_ref.h"

namespace prewarm::rootfs::detail {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";
constexpr std::string_view kDockerSchema1 = "application/vnd.docker.distribution.manifest.v1";
constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";

std::string hex_of(const std::string& digest) { return digest.substr(digest.find(':') + 1); }

// A blob larger than the caller reads is refused before any of it is fetched.
Status check_declared_size(const std::string& what, const Descriptor& d, size_t max) {
  if (d.size > max)
    return Error(ErrorKind::kInvalidInput, what + ": blob " + d.digest + " declares " +
                                               std::to_string(d.size) + " bytes, more than " +
                                               std::to_string(max) + "; refusing it");
  return {};
}

Status check_content(const std::string& what, const Descriptor& d, std::string_view data) {
  if (data.size() != d.size)
    return Error(ErrorKind::kInvalidInput,
                 what + ": " + d.digest + " is " + std::to_string(data.size()) +
                     " bytes, not the " + std::to_string(d.size) + " its descriptor declares",
                 EBADMSG);
  std::string got = "sha256:" + sha256_hex(data);
  if (got != d.digest)
    return Error(ErrorKind::kInvalidInput,
                 what + ": blob " + d.digest + " has the wrong content (it hashes to " + got + ")",
                 EBADMSG);
  return {};
}

// Hashes n bytes of fd from offset `at`, copying them to out_fd when it is valid.
Result<std::string> hash_range(int fd, uint64_t at, uint64_t n, int out_fd,
                               const std::string& shown) {
  Sha256Stream h;
  std::vector<char> buf(1 << 20);
  while (n > 0) {
    ssize_t got = ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), n), static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Error::sys("read", errno, shown);
    if (got == 0) return Error(shown + ": ends early", EIO);
    h.update(buf.data(), static_cast<size_t>(got));
    if (out_fd >= 0) PW_TRY(tar::write_all(out_fd, buf.data(), static_cast<size_t>(got), false, shown));
    at += static_cast<uint64_t>(got);
    n -= static_cast<uint64_t>(got);
  }
  return "sha256:" + h.final_hex();
}

Status check_hash(const std::string& what, const Descriptor& d, const std::string& got) {
  if (got != d.digest)
    return Error(ErrorKind::kInvalidInput,
                 what + ": blob " + d.digest + " has the wrong content (it hashes to " + got +
                     "); refusing it",
                 EBADMSG);
  return {};
}

// The descriptor index.json lists for `tag` (its ref.name annotation), or its only one.
Result<Descriptor> pick_tagged(const std::string& what, const std::string& index_text,
                               const std::string& tag) {
  json index = json::parse(index_text, nullptr, false);
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
    return Error(ErrorKind::kInvalidInput, what + ": index.json is not an OCI image index");
  std::vector<std::string> names;
  std::vector<Descriptor> untagged;
  for (size_t i = 0; i < index["manifests"].size(); ++i) {
    const json& m = index["manifests"][i];
    std::string where = what + ": index.json manifests[" + std::to_string(i) + "]";
    PW_ASSIGN(Descriptor d, parse_descriptor(m, where));
    std::string name;
    if (m.contains("annotations") && m["annotations"].is_object()) {
      auto it = m["annotations"].find(std::string(kRefNameAnnotation));
      if (it != m["annotations"].end() && it->is_string()) name = it->get<std::string>();
    }
    if (!tag.empty() && name == tag) return d;
    if (!name.empty()) names.push_back(name);
    untagged.push_back(std::move(d));
  }
  if (tag.empty() && untagged.size() == 1) return untagged.front();
  std::string listed;
  for (const auto& n : names) listed += (listed.empty() ? "" : ", ") + n;
  if (tag.empty())
    return Error(ErrorKind::kInvalidInput,
                 what + ": the layout holds " + std::to_string(untagged.size()) +
                     " images; name one with :TAG (tags: " + (listed.empty() ? "none" : listed) +
                     ")");
  return Error(ErrorKind::kNotFound, what + ": the layout has no image tagged \"" + tag +
                                         "\" (tags: " + (listed.empty() ? "none" : listed) + ")");
}

// A registry, through the registry client (auth, TLS, retries, resumed downloads, limits).
class RegistrySource : public ImageSource {
 public:
  RegistrySource(registry::Reference ref, const registry::Options& opts)
      : ImageSource(ref.to_string()), ref_(std::move(ref)), opts_(opts) {}

  Result<std::string> read_blob(const Descriptor& d, size_t max, const stdfs::path& scratch) override {
    PW_TRY(check_declared_size(what(), d, max));
    const stdfs::path path = scratch / hex_of(d.digest);
    PW_TRY(registry::pull_blobs(ref_, {{d.digest, d.size, d.media_type, path}}, opts_));
    return fs::read_file(path, max);
  }

  Result<std::vector<stdfs::path>> layer_files(const std::vector<Descriptor>& layers,
                                               const stdfs::path& scratch) override {
    std::vector<registry::Blob> blobs;
    std::vector<stdfs::path> out;
    for (const auto& d : layers) {
      out.push_back(scratch / hex_of(d.digest));
      blobs.push_back({d.digest, d.size, d.media_type, out.back()});
    }
    PW_TRY(registry::pull_blobs(ref_, blobs, opts_));
    return out;
  }

 protected:
  Result<registry::PulledManifest> top() override { return registry::get_manifest(ref_, opts_); }
  Result<registry::PulledManifest> manifest(const Descriptor& d) override {
    registry::Reference by_digest = ref_;
    by_digest.digest = d.digest;
    PW_ASSIGN(registry::PulledManifest m, registry::get_manifest(by_digest, opts_));
    if (m.media_type.empty()) m.media_type = d.media_type;
    return m;
  }

 private:
  registry::Reference ref_;
  registry::Options opts_;
};

// An OCI image layout directory: index.json and blobs/sha256/<hex>, read in place.
class LayoutSource : public ImageSource {
 public:
  explicit LayoutSource(const spec::ImageRef& ref) : ImageSource(ref.to_string()), ref_(ref) {}

  Status check() {
    auto layout = fs::read_file(ref_.path / "oci-layout", 4096);
    if (!layout.ok()) {
      if (layout.error().errno_value() == ENOENT)
        return Error(ErrorKind::kNotFound, what() + ": " + ref_.path.string() +
                                               " is not an OCI image layout (it has no oci-layout "
                                               "file)");
      return std::move(layout).error().with_context(what());
    }
    json j = json::parse(*layout, nullptr, false);
    if (!j.is_object() || !j.contains("imageLayoutVersion") ||
        !j["imageLayoutVersion"].is_string())
      return Error(ErrorKind::kInvalidInput, what() + ": its oci-layout file is not valid");
    return {};
  }

  Result<std::string> read_blob(const Descriptor& d, size_t max, const stdfs::path&) override {
    PW_TRY(check_declared_size(what(), d, max));
    PW_ASSIGN(UniqueFd fd, open_blob(d));
    PW_ASSIGN(std::string data, fs::read_fd(fd.get(), blob_path(d), max));
    PW_TRY(check_content(what(), d, data));
    return data;
  }

  Result<std::vector<stdfs::path>> layer_files(const std::vector<Descriptor>& layers,
                                               const stdfs::path&) override {
    std::vector<stdfs::path> out;
    for (const auto& d : layers) {
      PW_ASSIGN(UniqueFd fd, open_blob(d));
      PW_ASSIGN(std::string got, hash_range(fd.get(), 0, d.size, -1, blob_path(d).string()));
      PW_TRY(check_hash(what(), d, got));
      out.push_back(blob_path(d));
    }
    return out;
  }

 protected:
  Result<registry::PulledManifest> top() override {
    auto index = fs::read_file(ref_.path / "index.json", registry::kMaxManifestBytes);
    if (!index.ok()) return std::move(index).error().with_context(what() + ": index.json");
    PW_ASSIGN(Descriptor d, pick_tagged(what(), *index, ref_.tag));
    return manifest(d);
  }
  Result<registry::PulledManifest> manifest(const Descriptor& d) override {
    PW_ASSIGN(std::string text, read_blob(d, registry::kMaxManifestBytes, {}));
    return registry::PulledManifest{std::move(text), d.digest, d.media_type};
  }

 private:
  stdfs::path blob_path(const Descriptor& d) const {
    return ref_.path / "blobs" / "sha256" / hex_of(d.digest);
  }
  // The blob file itself (a symlink is not followed), of the declared size.
  Result<UniqueFd> open_blob(const Descriptor& d) const {
    const stdfs::path p = blob_path(d);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT)
        return Error(ErrorKind::kNotFound, what() + ": blob " + d.digest + " is missing (" +
                                               p.string() + ")");
      return Error::sys("open", errno, p.string()).with_context(what());
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::sys("stat", errno, p.string());
    if (!S_ISREG(st.st_mode))
      return Error(ErrorKind::kInvalidInput, what() + ": " + p.string() + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) != d.size)
      return Error(ErrorKind::kInvalidInput,
                   what() + ": blob " + d.digest + " is " + std::to_string(st.st_size) +
                       " bytes, not the " + std::to_string(d.size) + " its descriptor declares",
                   EBADMSG);
    return fd;
  }

  spec::ImageRef ref_;
};

// A tar of an OCI image layout (what `skopeo copy ... oci-archive:` writes), read in place: one
// pass finds where each member's data lies, then blobs are read from there.
class ArchiveSource : public ImageSource {
 public:
  explicit ArchiveSource(const spec::ImageRef& ref) : ImageSource(ref.to_string()), ref_(ref) {}

  Status scan() {
    fd_.reset(::open(ref_.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_.valid()) {
      if (errno == ENOENT)
        return Error(ErrorKind::kNotFound, what() + ": " + ref_.path.string() + " does not exist");
      return Error::sys("open", errno, ref_.path.string()).with_context(what());
    }
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) return Error::sys("stat", errno, ref_.path.string());
    if (!S_ISREG(st.st_mode))
      return Error(ErrorKind::kInvalidInput, what() + ": " + ref_.path.string() +
                                                 " is not a file (oci-archive: names a tar of "
                                                 "an OCI image layout; use oci: for a directory)");
    tar::Reader r(fd_.get(), what());
    for (size_t count = 0;; ++count) {
      if (count > 100000) return Error(ErrorKind::kInvalidInput, what() + ": too many members");
      PW_ASSIGN(std::optional<tar::Entry> e, r.next());
      if (!e) break;
      if (e->type != '0' && e->type != '\0') continue;
      PW_ASSIGN(std::string name, tar::clean_name(e->name, r.at()));
      members_[name] = {r.header_offset() + tar::kBlock, e->size};
    }
    if (!members_.contains("oci-layout"))
      return Error(ErrorKind::kInvalidInput,
                   what() + ": " + ref_.path.string() +
                       " is not an archive of an OCI image layout (it has no oci-layout file)");
    return {};
  }

  Result<std::string> read_blob(const Descriptor& d, size_t max, const stdfs::path&) override {
    PW_TRY(check_declared_size(what(), d, max));
    PW_ASSIGN(Member m, blob(d));
    PW_ASSIGN(std::string data, read_member(m, d.size));
    PW_TRY(check_content(what(), d, data));
    return data;
  }

  Result<std::vector<stdfs::path>> layer_files(const std::vector<Descriptor>& layers,
                                               const stdfs::path& scratch) override {
    PW_TRY(fs::make_dirs(scratch, 0700));
    std::vector<stdfs::path> out;
    for (const auto& d : layers) {
      PW_ASSIGN(Member m, blob(d));
      const stdfs::path path = scratch / hex_of(d.digest);
      UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!f.valid()) return Error::sys("create", errno, path.string());
      PW_ASSIGN(std::string got, hash_range(fd_.get(), m.offset, m.size, f.get(),
                                            ref_.path.string() + " member blobs/sha256/" +
                                                hex_of(d.digest)));
      PW_TRY(check_hash(what(), d, got));
      out.push_back(path);
    }
    return out;
  }

 protected:
  Result<registry::PulledManifest> top() override {
    auto it = members_.find("index.json");
    if (it == members_.end())
      return Error(ErrorKind::kInvalidInput, what() + ": the archive has no index.json");
    if (it->second.size > registry::kMaxManifestBytes)
      return Error(ErrorKind::kInvalidInput, what() + ": its index.json is larger than 4 MiB");
    PW_ASSIGN(std::string index, read_member(it->second, it->second.size));
    PW_ASSIGN(Descriptor d, pick_tagged(what(), index, ref_.tag));
    return manifest(d);
  }
  Result<registry::PulledManifest> manifest(const Descriptor& d) override {
    PW_ASSIGN(std::string text, read_blob(d, registry::kMaxManifestBytes, {}));
    return registry::PulledManifest{std::move(text), d.digest, d.media_type};
  }

 private:
  struct Member {
    uint64_t offset = 0, size = 0;
  };
  Result<Member> blob(const Descriptor& d) const {
    auto it = members_.find("blobs/sha256/" + hex_of(d.digest));
    if (it == members_.end())
      return Error(ErrorKind::kNotFound, what() + ": blob " + d.digest + " is not in the archive");
    if (it->second.size != d.size)
      return Error(ErrorKind::kInvalidInput,
                   what() + ": blob " + d.digest + " is " + std::to_string(it->second.size) +
                       " bytes, not the " + std::to_string(d.size) + " its descriptor declares",
                   EBADMSG);
    return it->second;
  }
  Result<std::string> read_member(const Member& m, uint64_t n) const {
    std::string data(n, '\0');
    for (uint64_t done = 0; done < n;) {
      ssize_t got = ::pread(fd_.get(), data.data() + done, n - done,
                            static_cast<off_t>(m.offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return Error::sys("read", errno, ref_.path.string());
      if (got == 0) return Error(what() + ": the archive ends inside a member", EIO);
      done += static_cast<uint64_t>(got);
    }
    return data;
  }

  spec::ImageRef ref_;
  UniqueFd fd_;
  std::map<std::string, Member> members_;
};

bool is_index(std::string_view t) { return t == registry::kOciIndex || t == registry::kDockerManifestList; }
bool is_manifest(std::string_view t) {
  return t == registry::kOciManifest || t == registry::kDockerManifest;
}

// The index entry for linux on this host's architecture.
Result<Descriptor> pick_platform(const std::string& what, const json& index) {
  if (!index.contains("manifests") || !index["manifests"].is_array())
    return Error(ErrorKind::kInvalidInput, what + ": the index has no manifests list");
  const std::string arch = oci_arch();
  std::string seen;
  for (size_t i = 0; i < index["manifests"].size(); ++i) {
    const json& m = index["manifests"][i];
    PW_ASSIGN(Descriptor d, parse_descriptor(m, what + ": index manifests[" + std::to_string(i) + "]"));
    std::string os, a;
    if (m.contains("platform") && m["platform"].is_object()) {
      const json& p = m["platform"];
      if (p.contains("os") && p["os"].is_string()) os = p["os"].get<std::string>();
      if (p.contains("architecture") && p["architecture"].is_string())
        a = p["architecture"].get<std::string>();
    }
    if (os == "linux" && a == arch) return d;
    if (!os.empty() || !a.empty()) seen += (seen.empty() ? "" : ", ") + os + "/" + a;
  }
  return Error(ErrorKind::kNotFound,
               what + ": the image index has no linux/" + arch + " image (it has: " +
                   (seen.empty() ? "no platform entries" : seen) + ")");
}

}  // namespace

std::string oci_arch() {
  utsname u{};
  if (::uname(&u) != 0) return "amd64";
  const std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m == "i686" || m == "i386") return "386";
  return m;
}

Result<Descriptor> parse_descriptor(const json& j, const std::string& where) {
  if (!j.is_object()) return Error(ErrorKind::kInvalidInput, where + ": not a descriptor");
  Descriptor d;
  if (j.contains("mediaType")) {
    if (!j["mediaType"].is_string())
      return Error(ErrorKind::kInvalidInput, where + ".mediaType: not a string");
    d.media_type = j["mediaType"].get<std::string>();
  }
  if (!j.contains("digest") || !j["digest"].is_string() ||
      !registry::is_valid_digest(j["digest"].get<std::string>()))
    return Error(ErrorKind::kInvalidInput, where + ".digest: not sha256:<64 lowercase hex>");
  d.digest = j["digest"].get<std::string>();
  if (!j.contains("size") || !j["size"].is_number_unsigned())
    return Error(ErrorKind::kInvalidInput, where + ".size: not a byte count");
  d.size = j["size"].get<uint64_t>();
  return d;
}

Result<image::Compression> layer_compression(std::string_view t) {
  for (std::string_view prefix : {"application/vnd.oci.image.layer.v1.tar",
                                  "application/vnd.oci.image.layer.nondistributable.v1.tar",
                                  "application/vnd.docker.image.rootfs.diff.tar",
                                  "application/vnd.docker.image.rootfs.foreign.diff.tar"}) {
    if (!t.starts_with(prefix)) continue;
    std::string_view rest = t.substr(prefix.size());
    if (rest.empty()) return image::Compression::kNone;
    if (rest == "+gzip" || rest == ".gzip") return image::Compression::kGzip;
    if (rest == "+zstd") return image::Compression::kZstd;
  }
  return Error(ErrorKind::kInvalidInput,
               "layer media type \"" + std::string(t) +
                   "\" is not one prewarm unpacks (tar, tar+gzip or tar+zstd image layers)");
}

Result<std::vector<std::string>> parse_image_config(std::string_view text, size_t layers,
                                                    const std::string& what) {
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Error(ErrorKind::kInvalidInput, what + ": its config is not a JSON object");
  auto str = [&](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
  };
  const std::string os = str("os"), arch = str("architecture");
  if ((!os.empty() && os != "linux") || (!arch.empty() && arch != oci_arch()))
    return Error(ErrorKind::kIncompatibleHost,
                 what + ": the image is for " + os + "/" + arch + ", this host runs linux/" +
                     oci_arch());
  std::vector<std::string> diff_ids;
  if (!j.contains("rootfs")) return diff_ids;
  const json& r = j["rootfs"];
  if (!r.is_object() || !r.contains("diff_ids") || !r["diff_ids"].is_array())
    return Error(ErrorKind::kInvalidInput, what + ": config rootfs.diff_ids is not a list");
  for (const auto& d : r["diff_ids"]) {
    if (!d.is_string() || !registry::is_valid_digest(d.get<std::string>()))
      return Error(ErrorKind::kInvalidInput,
                   what + ": config rootfs.diff_ids holds something other than sha256 digests");
    diff_ids.push_back(d.get<std::string>());
  }
  if (diff_ids.size() != layers)
    return Error(ErrorKind::kInvalidInput,
                 what + ": the config lists " + std::to_string(diff_ids.size()) +
                     " diff_ids for the manifest's " + std::to_string(layers) + " layers");
  return diff_ids;
}

Result<std::unique_ptr<ImageSource>> ImageSource::open(std::string_view reference,
                                                       const registry::Options& opts) {
  std::error_code ec;
  stdfs::path cwd = stdfs::current_path(ec);
  if (ec) cwd = "/";
  auto ref = spec::parse_image_ref(reference, cwd);
  if (!ref.ok()) return std::move(ref).error().with_context("image");
  switch (ref->transport) {
    case spec::ImageTransport::kRegistry: {
      PW_ASSIGN(registry::Reference r, registry::parse_reference(ref->registry_ref));
      return std::unique_ptr<ImageSource>(std::make_unique<RegistrySource>(std::move(r), opts));
    }
    case spec::ImageTransport::kOciLayout: {
      auto s = std::make_unique<LayoutSource>(*ref);
      PW_TRY(s->check());
      return std::unique_ptr<ImageSource>(std::move(s));
    }
    case spec::ImageTransport::kOciArchive: {
      auto s = std::make_unique<ArchiveSource>(*ref);
      PW_TRY(s->scan());
      return std::unique_ptr<ImageSource>(std::move(s));
    }
  }
  return Error(ErrorKind::kInvalidInput, "image: unknown transport");
}

Result<ResolvedImage> ImageSource::resolve() {
  PW_ASSIGN(registry::PulledManifest doc, top());
  // An index may name indexes; two levels are more than any real image uses.
  for (int depth = 0; depth < 3; ++depth) {
    json j = json::parse(doc.json, nullptr, false);
    if (!j.is_object())
      return Error(ErrorKind::kInvalidInput, what() + ": manifest " + doc.digest + " is not a JSON object");
    std::string type = doc.media_type;
    if ((type.empty() || type == "application/json") && j.contains("mediaType") &&
        j["mediaType"].is_string())
      type = j["mediaType"].get<std::string>();
    if (type.empty() || type == "application/json")
      type = j.contains("manifests") ? registry::kOciIndex
             : j.contains("layers")  ? registry::kOciManifest
                                     : "";
    if (type.starts_with(kDockerSchema1))
      return Error(ErrorKind::kInvalidInput,
                   what() + ": it is a Docker schema 1 manifest, which prewarm does not read; "
                            "push the image again with a current tool (schema 2 or OCI)");
    if (is_index(type)) {
      PW_ASSIGN(Descriptor d, pick_platform(what(), j));
      PW_ASSIGN(doc, manifest(d));
      continue;
    }
    if (!is_manifest(type))
      return Error(ErrorKind::kInvalidInput,
                   what() + ": manifest " + doc.digest + " has media type \"" + type +
                       "\", which is not an image manifest or index");
    ResolvedImage out;
    out.manifest_digest = doc.digest;
    PW_ASSIGN(out.config, parse_descriptor(j.contains("config") ? j["config"] : json(),
                                           what() + ": manifest config"));
    if (out.config.media_type != kOciConfig && out.config.media_type != kDockerConfig)
      return Error(ErrorKind::kInvalidInput,
                   what() + ": its config has media type \"" + out.config.media_type +
                       "\": it is not a container image (a prewarm checkpoint or another "
                       "artifact?)");
    if (!j.contains("layers") || !j["layers"].is_array())
      return Error(ErrorKind::kInvalidInput, what() + ": its manifest has no layers list");
    if (j["layers"].empty() || j["layers"].size() > kMaxImageLayers)
      return Error(ErrorKind::kInvalidInput,
                   what() + ": its manifest has " + std::to_string(j["layers"].size()) +
                       " layers (1 to " + std::to_string(kMaxImageLayers) + " are accepted)");
    for (size_t i = 0; i < j["layers"].size(); ++i) {
      PW_ASSIGN(Descriptor d,
                parse_descriptor(j["layers"][i], what() + ": layers[" + std::to_string(i) + "]"));
      if (auto c = layer_compression(d.media_type); !c.ok())
        return std::move(c).error().with_context(what() + ": layers[" + std::to_string(i) + "]");
      out.layers.push_back(std::move(d));
    }
    return out;
  }
  return Error(ErrorKind::kInvalidInput, what() + ": indexes nested more than twice");
}

}  // namespace prewarm::rootfs::detail
