// What the registry client needs from the store: importing downloaded blobs after checking
// their digest, reading an image's manifest to push it, and adding a pulled manifest once
// every blob it references is present.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {

using namespace detail;

Status Store::add_blob_file(const stdfs::path& tmp_path, const std::string& expected_digest) const {
  std::string where = "import blob " + expected_digest + " from " + tmp_path.string();
  if (!valid_digest(expected_digest)) {
    ::unlink(tmp_path.c_str());
    return Error(where + ": not a sha256 digest");
  }
  auto hex = sha256_file(tmp_path);
  if (!hex.ok()) {
    ::unlink(tmp_path.c_str());
    return std::move(hex).error().with_context(where);
  }
  if ("sha256:" + *hex != expected_digest) {
    ::unlink(tmp_path.c_str());
    return Error(where + ": the downloaded content hashes to sha256:" + *hex +
                 " (corrupted in transit or a wrong blob); it was discarded");
  }
  stdfs::path final_path = blob_file(root_, expected_digest);
  struct stat st {};
  if (::stat(final_path.c_str(), &st) == 0 && check_blob(root_, expected_digest, -1).empty()) {
    ::unlink(tmp_path.c_str());
    // Fresh mtime: gc's min_blob_age keeps it until the manifest that needs it is added.
    ::utimensat(AT_FDCWD, final_path.c_str(), nullptr, 0);
    return {};
  }
  {
    UniqueFd fd(::open(tmp_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid() || ::fsync(fd.get()) != 0) return Error::sys("fsync", errno, tmp_path.string());
    if (::fchmod(fd.get(), 0600) != 0) return Error::sys("chmod", errno, tmp_path.string());
  }
  if (::rename(tmp_path.c_str(), final_path.c_str()) == 0) return fsync_dir(blobs_dir(root_));
  if (errno != EXDEV) return Error::sys("rename", errno, final_path.string()).with_context(where);
  // Downloaded to another filesystem: copy it in (write_blob re-checks the digest).
  auto data = fs::read_file(tmp_path, size_t{1} << 40);
  if (!data.ok()) return std::move(data).error().with_context(where);
  PW_TRY(write_blob(root_, expected_digest, *data));
  ::unlink(tmp_path.c_str());
  return fsync_dir(blobs_dir(root_));
}

Result<std::pair<std::string, std::string>> Store::read_manifest(const std::string& name) const {
  PW_ASSIGN(IndexEntry e, find_entry(root_, name));
  PW_ASSIGN(std::string text,
            detail::read_blob(root_, e.digest, static_cast<int64_t>(e.size), kMaxJsonBytes));
  return std::make_pair(std::move(text), e.digest);
}

Result<StoredImage> Store::stored_image(const std::string& name) const {
  PW_ASSIGN(IndexEntry e, find_entry(root_, name));
  auto text = detail::read_blob(root_, e.digest, static_cast<int64_t>(e.size), kMaxJsonBytes);
  auto m = text.ok() ? parse_oci_manifest(*text) : Result<OciManifest>(text.error());
  if (!m.ok()) return std::move(m).error().with_context("stored image " + name);
  StoredImage out{e.digest, ""};
  if (auto it = m->annotations.find(kManifestSha256Annotation); it != m->annotations.end()) {
    out.manifest_json_sha256 = it->second;
    return out;
  }
  // Stored before the annotation existed: from the config, which holds manifest.json.
  auto loaded = load_image(root_, e.digest, static_cast<int64_t>(e.size));
  if (!loaded.ok()) return std::move(loaded).error().with_context("stored image " + name);
  out.manifest_json_sha256 = sha256_hex(loaded->config.manifest_json);
  return out;
}

Result<std::string> Store::add_manifest_blob(const std::string& manifest_json) const {
  auto m = parse_oci_manifest(manifest_json);
  if (!m.ok()) return std::move(m).error().with_context("store manifest");
  auto ctext = detail::read_blob(root_, m->config.digest, static_cast<int64_t>(m->config.size),
                                 kMaxJsonBytes);
  if (!ctext.ok()) return std::move(ctext).error().with_context("store manifest: its config");
  std::string digest = digest_of(manifest_json);
  PW_TRY(write_blob(root_, digest, manifest_json));
  PW_TRY(fsync_dir(blobs_dir(root_)));
  return digest;
}

Result<std::string> Store::add_manifest(const std::string& name,
                                        const std::string& manifest_json) const {
  PW_TRY(check_name(name));
  std::string where = "add manifest for " + name;
  auto m = parse_oci_manifest(manifest_json);
  if (!m.ok()) return std::move(m).error().with_context(where);
  PW_ASSIGN(Lease lease, this->lease());
  auto ctext = detail::read_blob(root_, m->config.digest, static_cast<int64_t>(m->config.size),
                                 kMaxJsonBytes);
  if (!ctext.ok()) return std::move(ctext).error().with_context(where + ": config");
  auto c = parse_config(*ctext);
  if (!c.ok()) return std::move(c).error().with_context(where + ": config " + m->config.digest);
  if (auto it = m->annotations.find(kManifestSha256Annotation);
      it != m->annotations.end() && it->second != sha256_hex(c->manifest_json))
    return Error(ErrorKind::kInvalidInput,
                 where + ": its annotation " + kManifestSha256Annotation + " (" + it->second +
                     ") is not the SHA-256 of the manifest.json its config holds (" +
                     sha256_hex(c->manifest_json) + "); refusing an inconsistent image");
  std::map<std::string, uint64_t> layers;
  for (const auto& l : m->layers) {
    struct stat st {};
    stdfs::path p = blob_file(root_, l.digest);
    if (::stat(p.c_str(), &st) != 0)
      return Error(where + ": layer " + l.digest + " is not in the store (pull it first)");
    if (static_cast<uint64_t>(st.st_size) != l.size)
      return Error(where + ": layer " + l.digest + " has " + std::to_string(st.st_size) +
                   " bytes in the store, the manifest says " + std::to_string(l.size));
    layers[l.digest] = l.size;
  }
  for (const auto& f : c->files)
    for (const auto& r : f.chunks)
      if (!layers.count(r.digest))
        return Error(where + ": pack " + r.digest + " of " + f.path +
                     " is not a layer of the manifest");
  std::string digest = digest_of(manifest_json);
  PW_TRY(write_blob(root_, digest, manifest_json));
  PW_TRY(fsync_dir(blobs_dir(root_)));
  PW_TRY(index_upsert(root_, make_index_entry(name, digest, manifest_json.size(), m->annotations)));
  // Readers of single pages (lazy restores) then need not parse the config; best effort.
  (void)load_chunk_table(root_, digest, static_cast<int64_t>(manifest_json.size()));
  return digest;
}

}  // namespace prewarm::store
