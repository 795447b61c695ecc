// The JSON documents of a stored image: its OCI image manifest and its config blob (the
// image's manifest.json plus the chunk list of every file), with the checks that make a
// tampered or inconsistent document an error naming the field.
#include <nlohmann/json.hpp>
#include <set>

#include "store/internal.h"
#include "store/store.h"

#ifndef PREWARM_VERSION
#define PREWARM_VERSION "unknown"
#endif

namespace prewarm::store::detail {
namespace {

using nlohmann::json;

constexpr const char* kConfigMagic = "prewarm.store.config";
constexpr int kConfigVersion = 2;  // 2: chunks are frames in packs
// Format 1 stored every chunk as a blob of its own (one zstd frame: a pack of one), with this
// layer media type; such images stay readable, and new images reuse their chunks.
constexpr const char* kLegacyChunkMediaType = "application/vnd.prewarm.checkpoint.chunk.v1.zstd";
// No chunk the chunker makes comes near this; it bounds what a tampered config can make
// materialize allocate.
constexpr uint64_t kMaxChunkBytes = 16 << 20;

json descriptor_json(const Descriptor& d) {
  return {{"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}};
}

}  // namespace

Result<uint64_t> descriptor_size(const json& size, const std::string& where, uint64_t max_size) {
  // JSON has one number type: -1 would wrap to 2^64-1, 1e3 or 7.5 are no byte counts.
  if (!size.is_number_unsigned() || size.get<uint64_t>() > max_size)
    return Error(ErrorKind::kInvalidInput,
                 where + ".size: " + size.dump() + " is not a byte count from 0 to " +
                     std::to_string(max_size));
  return size.get<uint64_t>();
}

uint64_t json_unsigned(const json& j, uint64_t max) {
  if (!j.is_number_unsigned() || j.get<uint64_t>() > max)
    throw json::type_error::create(302, "expected an unsigned integer", &j);
  return j.get<uint64_t>();
}

namespace {

Result<Descriptor> parse_descriptor(const json& j, const std::string& where,
                                    const char* media_type, uint64_t max_size) {
  if (!j.is_object()) return Error(where + ": not an object");
  Descriptor d;
  try {
    d.media_type = j.at("mediaType").get<std::string>();
    d.digest = j.at("digest").get<std::string>();
    PW_ASSIGN(d.size, descriptor_size(j.at("size"), where, max_size));
  } catch (const json::exception&) {
    return Error(where + ": mediaType, digest or size missing or of the wrong type");
  }
  if (d.media_type != media_type)
    return Error(where + ".mediaType: '" + d.media_type + "', expected " + media_type);
  if (!valid_digest(d.digest)) return Error(where + ".digest: '" + d.digest + "' is not sha256");
  return d;
}

bool is_hex64(const std::string& s) { return s.size() == 64 && valid_digest("sha256:" + s); }

}  // namespace

std::string to_json(const OciManifest& m) {
  json layers = json::array();
  for (const auto& l : m.layers) layers.push_back(descriptor_json(l));
  json j = {{"schemaVersion", 2},
            {"mediaType", kManifestMediaType},
            {"artifactType", kArtifactType},
            {"config", descriptor_json(m.config)},
            {"layers", layers},
            {"annotations", m.annotations}};
  return j.dump();
}

Result<OciManifest> parse_oci_manifest(std::string_view text) {
  if (text.size() > kMaxJsonBytes) return Error("image manifest: larger than 16 MiB");
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error("image manifest: not valid JSON");
  // value() with a default of another type throws when a key holds the wrong type; comparing
  // as json never does (found by fuzz/oci_manifest.cpp).
  if (j.value("schemaVersion", json()) != 2) return Error("image manifest: schemaVersion is not 2");
  if (j.value("mediaType", json()) != kManifestMediaType)
    return Error("image manifest: mediaType is not " + std::string(kManifestMediaType));
  if (j.value("artifactType", json()) != kArtifactType)
    return Error("image manifest: artifactType is not " + std::string(kArtifactType) +
                 " (not a prewarm checkpoint image)");
  OciManifest m;
  if (!j.contains("config")) return Error("image manifest: config missing");
  PW_ASSIGN(m.config, parse_descriptor(j["config"], "image manifest: config", kConfigMediaType,
                                       kMaxJsonBytes));
  if (!j.contains("layers") || !j["layers"].is_array())
    return Error("image manifest: layers is not a list");
  for (size_t i = 0; i < j["layers"].size(); ++i) {
    const json& l = j["layers"][i];
    const char* type = l.is_object() && l.value("mediaType", json()) == kLegacyChunkMediaType
                           ? kLegacyChunkMediaType
                           : kPackMediaType;
    PW_ASSIGN(Descriptor d,
              parse_descriptor(l, "image manifest: layers[" + std::to_string(i) + "]", type,
                               kMaxPackBytes));
    m.layers.push_back(std::move(d));
  }
  if (j.contains("annotations")) {
    try {
      m.annotations = j["annotations"].get<std::map<std::string, std::string>>();
    } catch (const json::exception&) {
      return Error("image manifest: annotations is not a map of strings");
    }
  }
  return m;
}

std::string to_json(const ImageConfig& c) {
  json files = json::array();
  for (const auto& f : c.files) {
    json chunks = json::array();
    for (const auto& ch : f.chunks)
      chunks.push_back({{"digest", ch.digest},
                        {"offset", ch.offset},
                        {"length", ch.length},
                        {"sha256", ch.sha256},
                        {"packOffset", ch.pack_offset},
                        {"packLength", ch.pack_length}});
    files.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}, {"chunks", chunks}});
  }
  json j = {{"magic", kConfigMagic},
            {"formatVersion", kConfigVersion},
            {"chunker",
             {{"algorithm", kChunkerName},
              {"minSize", c.chunker.min_size},
              {"avgSize", c.chunker.avg_size},
              {"maxSize", c.chunker.max_size}}},
            {"compression", {{"algorithm", "zstd"}, {"level", c.zstd_level}}},
            {"manifest", c.manifest_json},
            {"files", files}};
  return j.dump();
}

Result<ImageConfig> parse_config(std::string_view text) {
  const std::string where = "image config: ";
  if (text.size() > kMaxJsonBytes) return Error(where + "larger than 16 MiB");
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error(where + "not valid JSON");
  if (j.value("magic", json()) != kConfigMagic) return Error(where + "magic is not " + kConfigMagic);
  const json version_j = j.value("formatVersion", json());
  const int version = version_j.is_number_integer() ? version_j.get<int>() : 0;
  if (version != kConfigVersion && version != 1)
    return Error(where + "formatVersion is not 1 or " + std::to_string(kConfigVersion) +
                 " (stored by a newer prewarm?)");
  ImageConfig c;
  try {
    const json& ch = j.at("chunker");
    c.chunker.min_size = static_cast<uint32_t>(json_unsigned(ch.at("minSize"), UINT32_MAX));
    c.chunker.avg_size = static_cast<uint32_t>(json_unsigned(ch.at("avgSize"), UINT32_MAX));
    c.chunker.max_size = static_cast<uint32_t>(json_unsigned(ch.at("maxSize"), UINT32_MAX));
    const json& level = j.at("compression").at("level");
    if (!level.is_number_integer()) return Error(where + "compression.level is not an integer");
    c.zstd_level = level.get<int>();
    c.manifest_json = j.at("manifest").get<std::string>();
  } catch (const json::exception&) {
    return Error(where + "chunker, compression or manifest missing or of the wrong type");
  }
  auto parsed = image::parse_manifest(c.manifest_json);
  if (!parsed.ok()) return std::move(parsed).error().with_context("image config: embedded");
  const image::Manifest& m = *parsed;
  if (!j.contains("files") || !j["files"].is_array()) return Error(where + "files is not a list");
  const json& files = j["files"];
  if (files.size() != m.files.size())
    return Error(where + "lists " + std::to_string(files.size()) + " files, its manifest " +
                 std::to_string(m.files.size()));
  for (size_t i = 0; i < files.size(); ++i) {
    std::string at = where + "files[" + std::to_string(i) + "]";
    FileEntry f;
    try {
      f.path = files[i].at("path").get<std::string>();
      f.size = json_unsigned(files[i].at("size"));
      f.sha256 = files[i].at("sha256").get<std::string>();
      const json& chunks = files[i].at("chunks");
      if (!chunks.is_array()) return Error(at + ".chunks: not a list");
      for (const json& cj : chunks) {
        ChunkRef r;
        r.digest = cj.at("digest").get<std::string>();
        r.offset = json_unsigned(cj.at("offset"));
        r.length = json_unsigned(cj.at("length"));
        r.sha256 = cj.at("sha256").get<std::string>();
        if (version >= 2) {
          r.pack_offset = json_unsigned(cj.at("packOffset"));
          r.pack_length = json_unsigned(cj.at("packLength"));
        }  // else the whole blob, once its size is known (load_image)
        f.chunks.push_back(std::move(r));
      }
    } catch (const json::exception&) {
      return Error(at + ": a field is missing or of the wrong type");
    }
    const image::FileDigest& mf = m.files[i];
    if (f.path != mf.path || f.size != mf.size || f.sha256 != mf.sha256)
      return Error(at + " (" + f.path + "): does not match the embedded manifest's entry for " +
                   mf.path);
    if (f.path == image::kManifestFile) return Error(at + ": path " + f.path + " is reserved");
    uint64_t off = 0;
    for (size_t k = 0; k < f.chunks.size(); ++k) {
      const ChunkRef& r = f.chunks[k];
      std::string cat = at + ".chunks[" + std::to_string(k) + "]";
      if (!valid_digest(r.digest)) return Error(cat + ".digest: not sha256");
      if (!is_hex64(r.sha256)) return Error(cat + ".sha256: not a SHA-256 hex digest");
      if (r.offset != off)
        return Error(cat + ": offset " + std::to_string(r.offset) + ", expected " +
                     std::to_string(off) + " (gap or overlap)");
      if (r.length == 0 || r.length > kMaxChunkBytes)
        return Error(cat + ": length " + std::to_string(r.length) + " out of range");
      if (version >= 2 && (r.pack_length == 0 || r.pack_length > kMaxChunkBytes + (1 << 16)))
        return Error(cat + ": packLength " + std::to_string(r.pack_length) + " out of range");
      off += r.length;
    }
    if (off != f.size)
      return Error(at + " (" + f.path + "): chunks cover " + std::to_string(off) + " bytes of " +
                   std::to_string(f.size));
    c.files.push_back(std::move(f));
  }
  return c;
}

Result<LoadedImage> load_image(const stdfs::path& root, const std::string& manifest_digest,
                               int64_t manifest_size) {
  LoadedImage img;
  img.manifest_digest = manifest_digest;
  PW_ASSIGN(std::string mtext, read_blob(root, manifest_digest, manifest_size, kMaxJsonBytes));
  auto m = parse_oci_manifest(mtext);
  if (!m.ok()) return std::move(m).error().with_context("manifest " + manifest_digest);
  img.manifest = std::move(m).value();
  for (const auto& l : img.manifest.layers) img.layer_sizes[l.digest] = l.size;
  const Descriptor& cd = img.manifest.config;
  auto ctext = read_blob(root, cd.digest, static_cast<int64_t>(cd.size), kMaxJsonBytes);
  if (!ctext.ok())
    return std::move(ctext).error().with_context("config of manifest " + manifest_digest);
  auto c = parse_config(*ctext);
  if (!c.ok()) return std::move(c).error().with_context("config " + cd.digest);
  img.config = std::move(c).value();
  for (auto& f : img.config.files)
    for (auto& r : f.chunks) {
      auto it = img.layer_sizes.find(r.digest);
      if (it == img.layer_sizes.end())
        return Error("config " + cd.digest + ": pack " + r.digest + " of " + f.path +
                     " is not a layer of manifest " + manifest_digest);
      if (r.pack_length == 0) r.pack_length = it->second;  // format 1: a chunk is a blob
      if (r.pack_offset > it->second || r.pack_length > it->second - r.pack_offset)
        return Error("config " + cd.digest + ": a chunk of " + f.path + " lies outside pack " +
                     r.digest + " (" + std::to_string(it->second) + " bytes)");
    }
  return img;
}

std::string criu_version_number(const std::string& dotted) {
  int part[3] = {0, 0, 0};
  size_t pos = 0;
  for (int i = 0; i < 3 && pos < dotted.size(); ++i) {
    size_t end = pos;
    while (end < dotted.size() && std::isdigit(static_cast<unsigned char>(dotted[end]))) ++end;
    if (end == pos) break;
    part[i] = std::stoi(dotted.substr(pos, std::min<size_t>(end - pos, 6)));
    if (end >= dotted.size() || dotted[end] != '.') break;
    pos = end + 1;
  }
  return std::to_string(part[0] * 10000 + part[1] * 100 + part[2]);
}

std::map<std::string, std::string> image_annotations(const std::string& name,
                                                     const image::Manifest& m, uint64_t raw_bytes,
                                                     const std::string& manifest_sha256) {
  // Go's names for the architecture, as Podman/CRI-O record it.
  std::string arch = m.host.arch == "x86_64"    ? "amd64"
                     : m.host.arch == "aarch64" ? "arm64"
                                                : m.host.arch;
  std::map<std::string, std::string> a = {
      {"io.kubernetes.cri-o.annotations.checkpoint.name", name},
      {"org.criu.checkpoint.engine.name", "prewarm"},
      {"org.criu.checkpoint.engine.version", PREWARM_VERSION},
      {"org.criu.checkpoint.runtime.name", "runc"},
      {"org.criu.checkpoint.runtime.version", m.host.runc_version},
      {"org.criu.checkpoint.host.arch", arch},
      {"org.criu.checkpoint.host.kernel", m.host.kernel},
      {kCreatedAnnotation, m.created},
      {"org.prewarm.rootfs.id", m.rootfs_id},
      {kRawSizeAnnotation, std::to_string(raw_bytes)},
      {kManifestSha256Annotation, manifest_sha256},
  };
  if (!m.host.criu_version.empty())
    a["org.criu.checkpoint.criu.version"] = criu_version_number(m.host.criu_version);
  return a;
}

}  // namespace prewarm::store::detail
