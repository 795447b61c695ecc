// Rebuilding an image directory from the store. The packs a window of chunks needs are read
// and digest-checked, and its chunks' frames decompressed, by a worker pool one window ahead,
// while this thread writes the previous window in file order and hashes every file as it goes;
// the result appears at dest_dir by one rename, complete and verified, or not at all.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <map>
#include <set>

#include "base/clock.h"
#include "base/fs.h"
#include "image/image.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace {

using namespace detail;

// Raw bytes decoded per window (two windows are in memory at a time), and the most pack bytes
// one window may load (bounds memory for images whose chunks are spread over many packs).
constexpr uint64_t kWindowBytes = 8 << 20;
constexpr uint64_t kWindowPackBytes = 64 << 20;

struct Job {
  size_t file;
  const ChunkRef* ref;
};

struct Window {
  std::string data;
  std::vector<size_t> offsets;  // of each job's bytes in data
  Status status;
};

Status write_all(int fd, const char* p, size_t n, const stdfs::path& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return Error::sys("write", errno, path.string());
    p += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}

class Writer {
 public:
  Writer(const stdfs::path& dir, const std::vector<FileEntry>& files) : dir_(dir), files_(files) {}

  // Advances to file i (finishing the files before it, empty ones included).
  Status to_file(size_t i) {
    while (cur_ != i) {
      if (cur_ != kNone) PW_TRY(finish());
      cur_ = cur_ == kNone ? 0 : cur_ + 1;
      PW_TRY(open_current());
    }
    return {};
  }
  Status write(const char* p, size_t n) {
    hash_->update(p, n);
    written_ += n;
    return write_all(fd_.get(), p, n, path_);
  }
  Status finish_all() {
    if (files_.empty()) return {};
    PW_TRY(to_file(files_.size() - 1));
    return finish();
  }
  const std::set<stdfs::path>& dirs() const { return dirs_; }

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  Status open_current() {
    const FileEntry& f = files_[cur_];
    path_ = dir_ / f.path;
    // Parents one component at a time, each 0700.
    stdfs::path d = dir_;
    const stdfs::path rel(f.path);
    for (auto it = rel.begin(); std::next(it) != rel.end(); ++it) {
      d /= *it;
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST)
        return Error::sys("mkdir", errno, d.string());
      dirs_.insert(d);
    }
    fd_.reset(::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd_.valid()) return Error::sys("create", errno, path_.string());
    hash_ = std::make_unique<Sha256Stream>();
    written_ = 0;
    return {};
  }
  Status finish() {
    const FileEntry& f = files_[cur_];
    std::string got = hash_->final_hex();
    if (written_ != f.size || got != f.sha256)
      return Error(f.path + ": rebuilt file has SHA-256 " + got + ", its config says " + f.sha256 +
                   " (the config's chunk list is corrupt or tampered)");
    if (::fsync(fd_.get()) != 0) return Error::sys("fsync", errno, path_.string());
    fd_.reset();
    return {};
  }

  stdfs::path dir_;
  const std::vector<FileEntry>& files_;
  size_t cur_ = kNone;
  stdfs::path path_;
  UniqueFd fd_;
  std::unique_ptr<Sha256Stream> hash_;
  uint64_t written_ = 0;
  std::set<stdfs::path> dirs_;
};

Status commit(const stdfs::path& tmp, const stdfs::path& dest, bool replace) {
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) == 0) return {};
  if (errno == EINVAL) {
    // A filesystem without renameat2 flags: check, then a plain rename (which cannot replace a
    // non-empty directory either).
    std::error_code ec;
    if (!stdfs::exists(dest, ec) && ::rename(tmp.c_str(), dest.c_str()) == 0) return {};
    if (!stdfs::exists(dest, ec)) return Error::sys("rename", errno, dest.string());
    if (!replace)
      return Error(dest.string() + " already exists; remove it first or materialize with replace");
    stdfs::path old = tmp;
    old += ".old";
    if (::rename(dest.c_str(), old.c_str()) != 0) return Error::sys("rename", errno, dest.string());
    if (::rename(tmp.c_str(), dest.c_str()) != 0) {
      int err = errno;
      ::rename(old.c_str(), dest.c_str());
      return Error::sys("rename", err, dest.string());
    }
    return fs::remove_all(old);
  }
  if (errno != EEXIST) return Error::sys("rename", errno, dest.string());
  if (!replace)
    return Error(dest.string() + " already exists; remove it first or materialize with replace");
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) != 0)
    return Error::sys("exchange", errno, dest.string());
  return {};  // tmp now holds the old directory; the caller's guard removes it
}

}  // namespace

Result<MaterializeResult> Store::materialize(const std::string& name, const stdfs::path& dest_dir,
                                             const MaterializeOptions& opts) const {
  Stopwatch sw;
  std::string where = "materialize " + name + " into " + dest_dir.string();
  PW_ASSIGN(IndexEntry entry, find_entry(root_, name));
  PW_ASSIGN(Lease lease, this->lease());
  auto loaded = load_image(root_, entry.digest, static_cast<int64_t>(entry.size));
  if (!loaded.ok()) return std::move(loaded).error().with_context(where);
  const LoadedImage& img = *loaded;

  stdfs::path dest = stdfs::absolute(dest_dir).lexically_normal();
  if (dest.filename().empty()) dest = dest.parent_path();
  if (std::error_code ec; !stdfs::exists(dest.parent_path(), ec))
    PW_TRY(fs::make_dirs(dest.parent_path(), 0700));
  // Locked while this lives (a gc of images/ leaves it alone), removed unless renamed into place.
  const std::string prefix = "." + dest.filename().string() + kTempPrefix;
  PW_ASSIGN(fs::StagingDir guard, fs::StagingDir::create(dest.parent_path(), prefix));
  const stdfs::path tmp = guard.path();

  std::vector<Job> jobs;
  for (size_t i = 0; i < img.config.files.size(); ++i)
    for (const auto& c : img.config.files[i].chunks) jobs.push_back({i, &c});
  std::vector<std::pair<size_t, size_t>> windows;  // [begin, end) of jobs
  for (size_t b = 0; b < jobs.size();) {
    size_t e = b;
    uint64_t bytes = 0, pack_bytes = 0;
    std::set<std::string> packs;
    while (e < jobs.size()) {
      const ChunkRef& r = *jobs[e].ref;
      uint64_t more = packs.count(r.digest) ? 0 : img.layer_sizes.at(r.digest);
      if (e > b && (bytes + r.length > kWindowBytes || pack_bytes + more > kWindowPackBytes))
        break;
      bytes += r.length;
      pack_bytes += more;
      packs.insert(r.digest);
      ++e;
    }
    windows.emplace_back(b, e);
    b = e;
  }

  unsigned workers = worker_count(opts.threads);
  auto decode = [&](size_t w) {
    Window win;
    // Plain variables, not a structured binding: clang before 16 (the fuzz and sanitizer
    // builds) cannot capture bindings in the lambdas below.
    const size_t b = windows[w].first, e = windows[w].second;
    uint64_t total = 0;
    for (size_t k = b; k < e; ++k) {
      win.offsets.push_back(total);
      total += jobs[k].ref->length;
    }
    win.data.resize(total);
    // Each pack once, verified whole; then every chunk's frame out of it.
    std::map<std::string, std::string> packs;
    for (size_t k = b; k < e; ++k) packs.emplace(jobs[k].ref->digest, std::string());
    std::vector<std::pair<const std::string, std::string>*> slots;
    for (auto& p : packs) slots.push_back(&p);
    win.status = parallel_for(slots.size(), workers, [&](size_t i) -> Status {
      const std::string& digest = slots[i]->first;
      PW_ASSIGN(slots[i]->second,
                detail::read_blob(root_, digest,
                                  static_cast<int64_t>(img.layer_sizes.at(digest)), kMaxPackBytes));
      return {};
    });
    if (!win.status.ok()) return win;
    win.status = parallel_for(e - b, workers, [&](size_t k) -> Status {
      const ChunkRef& r = *jobs[b + k].ref;
      std::string_view frame =
          std::string_view(packs.at(r.digest)).substr(r.pack_offset, r.pack_length);
      return decompress(frame, win.data.data() + win.offsets[k], r.length, r.digest);
    });
    return win;
  };

  MaterializeResult res;
  Writer writer(tmp, img.config.files);
  std::future<Window> next;
  if (!windows.empty()) next = std::async(std::launch::async, decode, 0);
  for (size_t w = 0; w < windows.size(); ++w) {
    Window cur = next.get();
    if (w + 1 < windows.size()) next = std::async(std::launch::async, decode, w + 1);
    if (!cur.status.ok()) return std::move(cur.status).error().with_context(where);
    auto [b, e] = windows[w];
    for (size_t k = b; k < e; ++k) {
      const Job& j = jobs[k];
      PW_TRY(writer.to_file(j.file));
      PW_TRY(writer.write(cur.data.data() + cur.offsets[k - b], j.ref->length));
      res.compressed_bytes += j.ref->pack_length;
    }
    res.raw_bytes += cur.data.size();
  }
  if (auto s = writer.finish_all(); !s.ok()) return std::move(s).error().with_context(where);
  PW_TRY(fs::write_file_atomic(tmp / image::kManifestFile, img.config.manifest_json, 0600));
  PW_TRY(fs::write_file_atomic(tmp / image::kStoreDigestFile, entry.digest + "\n", 0600));
  for (const auto& d : writer.dirs()) PW_TRY(fsync_dir(d));
  PW_TRY(fsync_dir(tmp));
  if (auto s = commit(tmp, dest, opts.replace); !s.ok())
    return std::move(s).error().with_context(where);
  if (!stdfs::exists(tmp)) guard.release();
  PW_TRY(fsync_dir(dest.parent_path()));
  res.files = img.config.files.size() + 1;
  res.seconds = sw.seconds();
  return res;
}

}  // namespace prewarm::store
