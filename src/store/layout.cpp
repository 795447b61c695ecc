// The OCI layout on disk: opening/creating a store, digests, locks, atomic blob writes and
// verified blob reads.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace detail {
namespace {

Status write_all(int fd, std::string_view data, const stdfs::path& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", errno, path.string());
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

}  // namespace

bool valid_digest(std::string_view d) {
  if (d.size() != 71 || d.substr(0, 7) != "sha256:") return false;
  for (char c : d.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string digest_of(std::string_view data) { return "sha256:" + sha256_hex(data); }

stdfs::path new_temp_path(const stdfs::path& dir) {
  return dir / (std::string(kTempPrefix) + fs::random_hex(8));
}

Result<UniqueFd> lock_file(const stdfs::path& path, bool exclusive) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::sys("open lock file", errno, path.string());
  while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) != 0)
    if (errno != EINTR) return Error::sys("flock", errno, path.string());
  return fd;
}

Status fsync_dir(const stdfs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, dir.string());
  if (::fsync(fd.get()) != 0) return Error::sys("fsync", errno, dir.string());
  return {};
}

std::string check_blob(const stdfs::path& root, const std::string& digest, int64_t expected_size) {
  stdfs::path p = blob_file(root, digest);
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0)
    return errno == ENOENT ? "missing" : Error::sys("stat", errno, p.string()).message();
  if (expected_size >= 0 && st.st_size != expected_size)
    return "has " + std::to_string(st.st_size) + " bytes, its descriptor says " +
           std::to_string(expected_size);
  auto h = sha256_file(p);
  if (!h.ok()) return h.error().message();
  if ("sha256:" + *h != digest)
    return "content does not match its digest (it hashes to sha256:" + *h + ")";
  return {};
}

Result<bool> write_blob(const stdfs::path& root, const std::string& digest, std::string_view data,
                        bool durable) {
  stdfs::path final_path = blob_file(root, digest);
  struct stat st {};
  if (::stat(final_path.c_str(), &st) == 0) {
    std::string problem = check_blob(root, digest, static_cast<int64_t>(data.size()));
    if (problem.empty()) return false;
    log::warn("store: blob " + digest + " " + problem + "; replacing it with a good copy");
  }
  stdfs::path tmp = new_temp_path(blobs_dir(root));
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::sys("create", errno, tmp.string());
  Status s = write_all(fd.get(), data, tmp);
  if (s.ok() && durable && ::fsync(fd.get()) != 0) s = Error::sys("fsync", errno, tmp.string());
  fd.reset();
  if (s.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0)
    s = Error::sys("rename", errno, final_path.string());
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return std::move(s).error().with_context("store blob " + digest);
  }
  return true;
}

Status sync_files(const std::vector<stdfs::path>& files) {
  return parallel_for(files.size(), 8, [&](size_t i) -> Status {
    UniqueFd fd(::open(files[i].c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return Error::sys("open", errno, files[i].string());
    if (::fsync(fd.get()) != 0) return Error::sys("fsync", errno, files[i].string());
    return {};
  });
}

Result<std::string> read_blob(const stdfs::path& root, const std::string& digest,
                              int64_t expected_size, size_t max_bytes) {
  if (!valid_digest(digest)) return Error("'" + digest + "' is not a sha256 digest");
  stdfs::path p = blob_file(root, digest);
  UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT)
      return Error("blob " + digest + " is missing from the store " + root.string(), ENOENT);
    return Error::sys("open", errno, p.string());
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error::sys("stat", errno, p.string());
  if (expected_size >= 0 && st.st_size != expected_size)
    return Error("blob " + digest + " has " + std::to_string(st.st_size) +
                 " bytes, its descriptor says " + std::to_string(expected_size) +
                 " (truncated or tampered)");
  if (static_cast<uint64_t>(st.st_size) > max_bytes)
    return Error("blob " + digest + " has " + std::to_string(st.st_size) +
                 " bytes, more than the " + std::to_string(max_bytes) + " this reader accepts");
  std::string data(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    ssize_t n = ::read(fd.get(), data.data() + got, data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("read", errno, p.string());
    if (n == 0) return Error("blob " + digest + " shrank while being read");
    got += static_cast<size_t>(n);
  }
  std::string actual = digest_of(data);
  if (actual != digest)
    return Error("blob " + digest + " is corrupt or tampered: its content hashes to " + actual +
                 " (run `verify` to see which images use it)");
  return data;
}

unsigned worker_count(unsigned requested) {
  if (requested) return requested;
  unsigned n = std::thread::hardware_concurrency();
  return n ? n : 1;
}

Status parallel_for(size_t n, unsigned threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::optional<Error> first;
  size_t first_index = n;
  auto work = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= n || failed.load()) return;
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (i < first_index) {
          first_index = i;
          first = std::move(s).error();
        }
        failed = true;
      }
    }
  };
  size_t extra = std::min<size_t>(threads, n) > 0 ? std::min<size_t>(threads, n) - 1 : 0;
  std::vector<std::thread> pool;
  pool.reserve(extra);
  for (size_t t = 0; t < extra; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (first) return std::move(*first);
  return {};
}

}  // namespace detail

using namespace detail;

Status check_name(const std::string& name) {
  bool ok =
      !name.empty() && name.size() <= 255 && std::isalnum(static_cast<unsigned char>(name[0]));
  for (char c : name)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
                c == ':' || c == '/' || c == '@' || c == '+');
  if (!ok)
    return Error("invalid image name '" + name +
                 "': use 1-255 letters, digits and . _ - : / @ +, starting with a letter or digit");
  return {};
}

Result<Store> Store::open(const stdfs::path& root) {
  std::error_code ec;
  stdfs::path layout = root / kLayoutFile;
  if (!stdfs::exists(layout, ec)) {
    // Made under the index lock, so that two processes creating the store never clobber each
    // other, and one never finds the other's half-made store.
    PW_TRY(fs::make_dirs(root));
    PW_ASSIGN(UniqueFd lock, lock_file(root / kLockFile, true));
    if (!stdfs::exists(layout, ec)) {
      // Only a new directory becomes a store: nothing in it but what making one leaves.
      for (const auto& e : stdfs::directory_iterator(root, ec)) {
        const std::string name = e.path().filename().string();
        const bool fresh = name == kLockFile ||
                           (name == "blobs" && stdfs::is_empty(e.path(), ec)) ||
                           (name == "blobs" && stdfs::is_empty(blobs_dir(root), ec));
        if (!fresh)
          return Error("store " + root.string() + ": not an OCI image layout (no " + kLayoutFile +
                       "); pick an empty or new directory for the store");
      }
      PW_TRY(fs::make_dirs(blobs_dir(root)));
      for (const stdfs::path& d : {root, root / "blobs"})
        if (::chmod(d.c_str(), 0700) != 0) return Error::sys("chmod", errno, d.string());
      PW_TRY(fs::write_file_atomic(layout, "{\"imageLayoutVersion\":\"1.0.0\"}", 0600));
      if (!stdfs::exists(root / kIndexFile, ec)) PW_TRY(write_index(root, {}));
    }
  }
  PW_ASSIGN(std::string text, fs::read_file(layout, 4096));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object() || j.value("imageLayoutVersion", nlohmann::json()) != "1.0.0")
    return Error(
        "store " + root.string() + ": " + kLayoutFile +
        " is not {\"imageLayoutVersion\":\"1.0.0\"}; this prewarm reads only that version");
  // A lost index is not recreated: an empty one would let gc remove every blob.
  if (!stdfs::exists(root / kIndexFile, ec) || !stdfs::is_directory(blobs_dir(root), ec))
    return Error("store " + root.string() + ": " + kIndexFile +
                 " or blobs/sha256 is missing; "
                 "the store is damaged (restore index.json from a backup, or start a new store)");
  return Store(root);
}

Result<Lease> Store::lease() const {
  PW_ASSIGN(UniqueFd fd, lock_file(root_ / kGcLockFile, false));
  return Lease(std::move(fd));
}

Result<stdfs::path> Store::blob_path(const std::string& digest) const {
  if (!valid_digest(digest)) return Error("'" + digest + "' is not a sha256 digest");
  return blob_file(root_, digest);
}

bool Store::has_blob(const std::string& digest) const {
  std::error_code ec;
  return valid_digest(digest) && stdfs::is_regular_file(blob_file(root_, digest), ec);
}

stdfs::path Store::temp_path() const { return new_temp_path(blobs_dir(root_)); }

Result<std::string> Store::read_blob(const std::string& digest, size_t max_bytes) const {
  return detail::read_blob(root_, digest, -1, max_bytes);
}

}  // namespace prewarm::store
