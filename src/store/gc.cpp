// Garbage collection: mark every blob reachable from the indexed manifests and the protected
// ones, sweep the rest of blobs/sha256 and stale temporary files. Runs with both locks held
// exclusively, so no put, materialize, verify or leased pull is in flight.
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace {

using namespace detail;
using nlohmann::json;

class Marker {
 public:
  explicit Marker(const stdfs::path& root) : root_(root) {}

  // Marks a manifest (or index) and everything it references. A manifest that cannot be read
  // stops the gc: without it, what its image needs is unknown.
  Status mark(const std::string& digest, int64_t size, bool must_exist, const std::string& who,
              int depth = 0) {
    if (!live_.insert(digest).second) return {};
    auto text = read_blob(root_, digest, size, kMaxJsonBytes);
    if (!text.ok()) {
      if (!must_exist && text.error().errno_value() == ENOENT) return {};
      return Error("gc: cannot read manifest " + digest + " of " + who + ": " +
                   text.error().message() +
                   "; nothing was removed (remove that image, or "
                   "store or pull it again, then rerun gc)");
    }
    json j = json::parse(*text, nullptr, false);
    if (!j.is_object())
      return Error("gc: manifest " + digest + " of " + who + " is not JSON; nothing was removed");
    auto ref_of = [&](const json& d) -> Result<std::string> {
      if (!d.is_object() || !d.contains("digest") || !d["digest"].is_string() ||
          !valid_digest(d["digest"].get<std::string>()))
        return Error("gc: manifest " + digest + " of " + who +
                     " has a descriptor without a valid digest; nothing was removed");
      return d["digest"].get<std::string>();
    };
    std::vector<const json*> blobs;
    if (j.contains("config")) blobs.push_back(&j["config"]);
    for (const char* list : {"layers", "blobs"})
      if (j.contains(list) && j[list].is_array())
        for (const auto& d : j[list]) blobs.push_back(&d);
    for (const json* d : blobs) {
      PW_ASSIGN(std::string ref, ref_of(*d));
      live_.insert(ref);
    }
    // A nested index: its manifests and what they reference.
    if (j.contains("manifests") && j["manifests"].is_array() && depth < 4)
      for (const auto& d : j["manifests"]) {
        PW_ASSIGN(std::string ref, ref_of(d));
        PW_TRY(mark(ref, -1, true, who, depth + 1));
      }
    return {};
  }
  bool live(const std::string& digest) const { return live_.count(digest) != 0; }

 private:
  stdfs::path root_;
  std::set<std::string> live_;
};

double age_seconds(const struct stat& st) {
  return std::difftime(std::time(nullptr), st.st_mtim.tv_sec);
}

}  // namespace

Result<GcResult> Store::gc(const std::set<std::string>& protected_manifest_digests,
                           const GcOptions& opts) const {
  // Order: gc lock, then index lock (put takes them in the same order).
  PW_ASSIGN(UniqueFd gc_lock, lock_file(root_ / kGcLockFile, true));
  PW_ASSIGN(UniqueFd index_lock, lock_file(root_ / kLockFile, true));
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root_));
  Marker marker(root_);
  for (const auto& e : entries)
    PW_TRY(marker.mark(e.digest, static_cast<int64_t>(e.size), true,
                       e.name.empty() ? "an index entry" : "image " + e.name));
  for (const auto& d : protected_manifest_digests) {
    if (!valid_digest(d)) return Error("gc: protected manifest '" + d + "' is not a sha256 digest");
    PW_TRY(marker.mark(d, -1, false, "a protected manifest"));
  }

  GcResult r;
  auto temp_age = static_cast<double>(opts.temp_file_age.count());
  auto blob_age = static_cast<double>(opts.min_blob_age.count());
  stdfs::path dir = blobs_dir(root_);
  std::error_code ec;
  for (stdfs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (name.rfind(kTempPrefix, 0) == 0) {
      if (age_seconds(st) < temp_age) {
        ++r.kept_temp_files;
        r.kept_temp_bytes += static_cast<uint64_t>(st.st_size);
      } else if (::unlink(it->path().c_str()) == 0) {
        ++r.removed_temp_files;
      }
      continue;
    }
    std::string digest = "sha256:" + name;
    if (!valid_digest(digest) || marker.live(digest)) continue;
    if (age_seconds(st) < blob_age) {
      ++r.kept_young_blobs;
      continue;
    }
    if (::unlink(it->path().c_str()) != 0)
      return Error::sys("gc: remove", errno, it->path().string());
    ++r.removed_blobs;
    r.bytes_freed += static_cast<uint64_t>(st.st_size);
  }
  if (ec) return Error::sys("gc: read", ec.value(), dir.string());
  // Leftovers of atomic writes of index.json / oci-layout.
  for (stdfs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    struct stat st {};
    bool ours = name.rfind(std::string(kIndexFile) + ".tmp-", 0) == 0 ||
                name.rfind(std::string(kLayoutFile) + ".tmp-", 0) == 0;
    if (ours && ::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        age_seconds(st) >= temp_age && ::unlink(it->path().c_str()) == 0)
      ++r.removed_temp_files;
  }
  if (r.removed_blobs) PW_TRY(fsync_dir(dir));
  remove_stale_chunk_tables(root_);
  return r;
}

}  // namespace prewarm::store
