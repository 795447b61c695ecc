// index.json: the OCI image index naming every stored image (ref.name annotation), rewritten
// atomically under the exclusive STORE/.lock; list and remove.
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace detail {

using nlohmann::json;

Result<std::vector<IndexEntry>> read_index(const stdfs::path& root) {
  stdfs::path p = root / kIndexFile;
  auto text = fs::read_file(p, kMaxJsonBytes);
  if (!text.ok()) return std::move(text).error().with_context("store index");
  std::string where = "store index " + p.string() + ": ";
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Error(where + "not valid JSON");
  if (!j.contains("schemaVersion") || j["schemaVersion"] != 2)
    return Error(where + "schemaVersion is not 2");
  if (!j.contains("manifests") || !j["manifests"].is_array())
    return Error(where + "manifests is not a list");
  std::vector<IndexEntry> out;
  for (size_t i = 0; i < j["manifests"].size(); ++i) {
    const json& m = j["manifests"][i];
    std::string at = where + "manifests[" + std::to_string(i) + "]: ";
    if (!m.is_object()) return Error(at + "not an object");
    IndexEntry e;
    try {
      e.media_type = m.at("mediaType").get<std::string>();
      e.digest = m.at("digest").get<std::string>();
      e.size = json_unsigned(m.at("size"));
      if (m.contains("artifactType")) e.artifact_type = m["artifactType"].get<std::string>();
      if (m.contains("annotations"))
        e.annotations = m["annotations"].get<std::map<std::string, std::string>>();
    } catch (const json::exception&) {
      return Error(at + "mediaType, digest, size or annotations missing or of the wrong type");
    }
    if (!valid_digest(e.digest)) return Error(at + "digest '" + e.digest + "' is not sha256");
    if (auto it = e.annotations.find(kRefNameAnnotation); it != e.annotations.end())
      e.name = it->second;
    out.push_back(std::move(e));
  }
  return out;
}

Status write_index(const stdfs::path& root, const std::vector<IndexEntry>& entries) {
  json manifests = json::array();
  for (const auto& e : entries) {
    json m = {{"mediaType", e.media_type}, {"digest", e.digest}, {"size", e.size}};
    if (!e.artifact_type.empty()) m["artifactType"] = e.artifact_type;
    if (!e.annotations.empty()) m["annotations"] = e.annotations;
    manifests.push_back(std::move(m));
  }
  json j = {{"schemaVersion", 2}, {"mediaType", kIndexMediaType}, {"manifests", manifests}};
  return fs::write_file_atomic(root / kIndexFile, j.dump(2) + "\n", 0600);
}

Status index_upsert(const stdfs::path& root, IndexEntry entry) {
  PW_ASSIGN(UniqueFd lock, lock_file(root / kLockFile, true));
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root));
  std::erase_if(entries, [&](const IndexEntry& e) { return e.name == entry.name; });
  entries.push_back(std::move(entry));
  return write_index(root, entries);
}

IndexEntry make_index_entry(const std::string& name, const std::string& digest, uint64_t size,
                            const std::map<std::string, std::string>& manifest_annotations) {
  IndexEntry e;
  e.name = name;
  e.artifact_type = kArtifactType;
  e.digest = digest;
  e.size = size;
  e.annotations[kRefNameAnnotation] = name;
  if (auto it = manifest_annotations.find(kCreatedAnnotation); it != manifest_annotations.end())
    e.annotations[kCreatedAnnotation] = it->second;
  return e;
}

Result<IndexEntry> find_entry(const stdfs::path& root, const std::string& name) {
  PW_TRY(check_name(name));
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root));
  for (auto& e : entries)
    if (e.name == name) return std::move(e);
  return Error("no image named '" + name + "' in the store " + root.string(), ENOENT);
}

}  // namespace detail

using namespace detail;

Status Store::remove(const std::string& name) const {
  PW_TRY(check_name(name));
  PW_ASSIGN(UniqueFd lock, lock_file(root_ / kLockFile, true));
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root_));
  size_t before = entries.size();
  std::erase_if(entries, [&](const IndexEntry& e) { return e.name == name; });
  if (entries.size() == before)
    return Error("no image named '" + name + "' in the store " + root_.string(), ENOENT);
  return write_index(root_, entries);
}

Result<std::vector<ListEntry>> Store::list() const {
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root_));
  std::vector<ListEntry> out;
  for (const auto& e : entries) {
    if (e.name.empty()) continue;
    ListEntry l;
    l.name = e.name;
    l.manifest_digest = e.digest;
    auto text = detail::read_blob(root_, e.digest, static_cast<int64_t>(e.size), kMaxJsonBytes);
    auto m = text.ok() ? parse_oci_manifest(*text) : Result<OciManifest>(text.error());
    if (!m.ok()) {
      l.problem = m.error().message();
    } else {
      l.created =
          m->annotations.count(kCreatedAnnotation) ? m->annotations[kCreatedAnnotation] : "";
      if (auto it = m->annotations.find(kRawSizeAnnotation); it != m->annotations.end())
        l.raw_bytes = std::strtoull(it->second.c_str(), nullptr, 10);
      l.stored_bytes = m->config.size;
      for (const auto& d : m->layers) l.stored_bytes += d.size;
    }
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace prewarm::store
