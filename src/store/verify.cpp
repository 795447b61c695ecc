// Integrity checks: every blob of the selected images re-hashed (each shared blob once, in
// parallel), documents parsed and cross-checked; problems reported per blob with the names of
// the images that use it. Nothing is removed or changed.
#include <map>
#include <set>

#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace {

using namespace detail;

struct BlobInfo {
  int64_t size = -1;
  std::set<std::string> images;
  bool checked = false;
  std::string problem;
};

class Verifier {
 public:
  explicit Verifier(const stdfs::path& root) : root_(root) {}

  void add_image(const IndexEntry& e) {
    ++report_.images;
    BlobInfo& mb = use(e.digest, static_cast<int64_t>(e.size), e.name);
    std::string text;
    if (!read_doc(e.digest, mb, text)) return;
    auto m = parse_oci_manifest(text);
    if (!m.ok()) return fail(mb, "not a prewarm image manifest: " + m.error().message());
    BlobInfo& cb = use(m->config.digest, static_cast<int64_t>(m->config.size), e.name);
    std::set<std::string> layers;
    for (const auto& l : m->layers) {
      use(l.digest, static_cast<int64_t>(l.size), e.name);
      layers.insert(l.digest);
    }
    std::string ctext;
    if (!read_doc(m->config.digest, cb, ctext)) return;
    auto c = parse_config(ctext);
    if (!c.ok()) return fail(cb, c.error().message());
    for (const auto& f : c->files)
      for (const auto& r : f.chunks)
        if (!layers.count(r.digest))
          return fail(cb,
                      "pack " + r.digest + " of " + f.path + " is not a layer of the manifest");
  }

  Result<VerifyReport> finish() {
    std::vector<std::pair<const std::string, BlobInfo>*> todo;
    for (auto& kv : blobs_)
      if (!kv.second.checked) todo.push_back(&kv);
    // Every blob gets its result slot; the check itself never fails the loop.
    PW_TRY(parallel_for(todo.size(), worker_count(0), [&](size_t i) -> Status {
      todo[i]->second.problem = check_blob(root_, todo[i]->first, todo[i]->second.size);
      return {};
    }));
    for (auto& [digest, info] : blobs_) {
      ++report_.blobs;
      if (info.size > 0) report_.bytes += static_cast<uint64_t>(info.size);
      if (!info.problem.empty())
        report_.problems.push_back(
            {digest, info.problem,
             std::vector<std::string>(info.images.begin(), info.images.end())});
    }
    return report_;
  }

 private:
  BlobInfo& use(const std::string& digest, int64_t size, const std::string& image) {
    BlobInfo& b = blobs_[digest];
    if (b.size < 0) b.size = size;
    b.images.insert(image);
    return b;
  }
  void fail(BlobInfo& b, std::string what) {
    if (b.problem.empty()) b.problem = std::move(what);
  }
  // Reads a small document blob (manifest, config) once; false when it is unusable.
  bool read_doc(const std::string& digest, BlobInfo& b, std::string& out) {
    if (!b.checked) {
      b.checked = true;
      b.problem = check_blob(root_, digest, b.size);
    }
    if (!b.problem.empty()) return false;
    auto text = read_blob(root_, digest, b.size, kMaxJsonBytes);
    if (!text.ok()) {
      fail(b, text.error().message());
      return false;
    }
    out = std::move(text).value();
    return true;
  }

  stdfs::path root_;
  std::map<std::string, BlobInfo> blobs_;
  VerifyReport report_;
};

}  // namespace

std::string VerifyReport::describe() const {
  std::string out;
  for (const auto& p : problems) {
    out += p.digest + " (used by ";
    for (size_t i = 0; i < p.images.size(); ++i) out += (i ? ", " : "") + p.images[i];
    out += "): " + p.what + "\n";
  }
  return out;
}

Result<VerifyReport> Store::verify(const std::string& name) const {
  PW_ASSIGN(IndexEntry e, find_entry(root_, name));
  PW_ASSIGN(Lease lease, this->lease());
  Verifier v(root_);
  v.add_image(e);
  return v.finish();
}

Result<VerifyReport> Store::verify_all() const {
  PW_ASSIGN(Lease lease, this->lease());
  PW_ASSIGN(std::vector<IndexEntry> entries, read_index(root_));
  Verifier v(root_);
  for (const auto& e : entries)
    if (!e.name.empty()) v.add_image(e);
  return v.finish();
}

}  // namespace prewarm::store
