// pull: manifests (verified against their digest) and blobs, each downloaded into
// "<path>.partial", resumed with a Range request, verified, then renamed into place.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "registry/session.h"

namespace prewarm::registry {
namespace {

Status write_all(int fd, std::string_view data, uint64_t at, const std::filesystem::path& path) {
  while (!data.empty()) {
    ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::sys("write", errno, path.string());
    data.remove_prefix(static_cast<size_t>(n));
    at += static_cast<uint64_t>(n);
  }
  return ok_status();
}

class BlobDownload {
 public:
  BlobDownload(Session& s, http::Client& c, const Blob& b, size_t index, Progress& p)
      : s_(s), c_(c), b_(b), index_(index), p_(p), partial_(b.path.string() + ".partial") {}

  Status run() {
    if (b_.path.has_parent_path()) PW_TRY(fs::make_dirs(b_.path.parent_path(), 0700));
    for (;;) {
      PW_ASSIGN(bool complete, attempt());
      if (!complete) continue;
      if (digest_ == b_.digest) break;
      std::error_code ec;
      std::filesystem::remove(partial_, ec);
      if (resumed_ && !fresh_retry_) {
        // The bytes we resumed from may be the bad ones: fetch the whole blob once more.
        log::warn(s_.what() + ": blob " + b_.digest + " did not verify after resuming; " +
                  "downloading it again from the start");
        fresh_retry_ = true;
        resumed_ = false;
        continue;
      }
      return Error(s_.what() + ": blob " + b_.digest + " from " + s_.ref().registry +
                       " has the wrong content (it hashes to " + digest_ +
                       "); the download was discarded",
                   EBADMSG);
    }
    if (::fdatasync(fd_.get()) != 0) return fail(Error::sys("fsync", errno, partial_.string()));
    fd_.reset();
    if (::rename(partial_.c_str(), b_.path.c_str()) != 0)
      return fail(Error::sys("rename", errno, partial_.string()));
    s_.count(&Stats::blobs_downloaded);
    p_.finished(index_, "downloaded");
    return ok_status();
  }

 private:
  Error fail(Error e) const {
    // Authentication concerns the whole operation, not this blob.
    if (e.errno_value() == EACCES) return std::move(e).with_context(s_.what());
    return std::move(e).with_context(s_.what() + ": blob " + b_.digest + " download");
  }

  Status failed(const std::string& why) {
    if (++failures_ > s_.opts().retries)
      return fail(Error(why + " (gave up after " + std::to_string(failures_) + " attempts; " +
                            std::to_string(pos_) + " bytes kept in " + partial_.string() +
                            ", pulling again resumes from there)",
                        EIO));
    log::debug(s_.what() + ": blob " + b_.digest + ": " + why + "; retrying");
    s_.backoff(failures_);
    return ok_status();
  }

  // Opens the partial file and hashes what it already holds.
  Status open_partial() {
    fd_.reset(::open(partial_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd_.valid()) return fail(Error::sys("open", errno, partial_.string()));
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) return fail(Error::sys("stat", errno, partial_.string()));
    pos_ = static_cast<uint64_t>(st.st_size);
    hash_.reset();
    if (pos_ > b_.size) PW_TRY(truncate());
    std::vector<char> buf(1 << 20);
    for (uint64_t at = 0; at < pos_;) {
      ssize_t n = ::pread(fd_.get(), buf.data(), std::min<uint64_t>(buf.size(), pos_ - at),
                          static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail(Error::sys("read", n < 0 ? errno : EIO, partial_.string()));
      hash_.update(std::string_view(buf.data(), static_cast<size_t>(n)));
      at += static_cast<uint64_t>(n);
    }
    if (pos_ > 0) {
      resumed_ = true;
      s_.count(&Stats::resumed);
    }
    return ok_status();
  }

  Status truncate() {
    if (::ftruncate(fd_.get(), 0) != 0) return fail(Error::sys("truncate", errno, partial_.string()));
    pos_ = 0;
    hash_.reset();
    return ok_status();
  }

  // One request for the rest of the blob. True when the partial file holds all of it
  // (digest_ then says what it hashes to); false to try again.
  Result<bool> attempt() {
    PW_TRY(open_partial());
    if (pos_ < b_.size) {
      http::Request get;
      get.url = s_.url("/blobs/" + b_.digest);
      get.follow_redirects = true;
      get.streaming = true;
      if (pos_ > 0) get.headers.push_back("Range: bytes=" + std::to_string(pos_) + "-");
      bool first = true;
      std::string rejected;
      Status write_error;
      get.sink = [&](const http::Response& head, std::string_view data) {
        if (first) {
          first = false;
          if (head.status == 200 && pos_ > 0) {  // the server ignored Range
            if (auto st = truncate(); !st.ok()) {
              write_error = std::move(st);
              return false;
            }
          } else if (head.status == 206) {
            auto cr = http::parse_content_range(head.header("content-range"));
            if (!cr || cr->first != pos_) {
              rejected = "unexpected Content-Range '" + head.header("content-range") +
                         "' for a request from byte " + std::to_string(pos_);
              return false;
            }
          }
        }
        if (pos_ + data.size() > b_.size) {
          rejected = "the registry sent more than the " + std::to_string(b_.size) +
                     " bytes the manifest declares for it";
          return false;
        }
        if (auto st = write_all(fd_.get(), data, pos_, partial_); !st.ok()) {
          write_error = std::move(st);
          return false;
        }
        hash_.update(data);
        pos_ += data.size();
        s_.count(&Stats::bytes_downloaded, data.size());
        p_.update(index_, pos_);
        return true;
      };
      auto r = s_.send(c_, get, false);
      if (!write_error.ok()) return fail(std::move(write_error).error());
      if (!rejected.empty()) {
        PW_TRY(truncate());
        // Not retried: the registry serves something other than the manifest describes.
        return fail(Error(ErrorKind::kInvalidInput, rejected + "; the download was discarded"));
      }
      if (!r.ok()) {
        if (r.error().errno_value() == EACCES) return fail(std::move(r).error());
        PW_TRY(failed(r.error().message()));
        return false;
      }
      if (r->status == 416) {  // our partial file does not fit the blob: start over
        PW_TRY(truncate());
        PW_TRY(failed(http::describe(*r)));
        return false;
      }
      if (r->status == 404)
        return fail(Error("not found in " + s_.ref().registry + "/" + s_.ref().repository + ": " +
                              http::describe(*r),
                          ENOENT));
      if (r->status >= 500) {
        PW_TRY(failed(http::describe(*r)));
        return false;
      }
      if (r->status != 200 && r->status != 206) return fail(Error(http::describe(*r), EIO));
      if (pos_ < b_.size) {
        PW_TRY(failed("the response ended after " + std::to_string(pos_) + " of " +
                      std::to_string(b_.size) + " bytes"));
        return false;
      }
    }
    digest_ = "sha256:" + hash_.final_hex();
    return true;
  }

  Session& s_;
  http::Client& c_;
  const Blob& b_;
  size_t index_;
  Progress& p_;
  std::filesystem::path partial_;
  UniqueFd fd_;
  Sha256Stream hash_;
  uint64_t pos_ = 0;
  std::string digest_;
  int failures_ = 0;
  bool resumed_ = false;
  bool fresh_retry_ = false;
};

// Declared sizes against opts.max_blob_bytes and the free space where the blobs go, so a
// manifest declaring a huge blob fails before the disk fills, not after.
Status check_sizes(const Session& s, const std::vector<Blob>& blobs) {
  std::map<std::filesystem::path, uint64_t> needed;  // destination dir -> bytes still to come
  for (const auto& b : blobs) {
    if (b.size > s.opts().max_blob_bytes)
      return Error(ErrorKind::kInvalidInput,
                   s.what() + ": blob " + b.digest + " declares " + std::to_string(b.size) +
                       " bytes, more than the " + std::to_string(s.opts().max_blob_bytes) +
                       " a pull accepts; refusing it before downloading");
    std::error_code ec;
    uint64_t have = std::filesystem::file_size(b.path.string() + ".partial", ec);
    needed[b.path.parent_path()] += ec || have > b.size ? b.size : b.size - have;
  }
  for (const auto& [dir, bytes] : needed) {
    std::filesystem::path probe = dir;
    std::error_code ec;
    while (!probe.empty() && !std::filesystem::exists(probe, ec)) probe = probe.parent_path();
    struct statvfs vfs {};
    if (probe.empty() || ::statvfs(probe.c_str(), &vfs) != 0) continue;  // nothing to judge by
    const uint64_t avail = uint64_t{vfs.f_bavail} * vfs.f_frsize;
    const uint64_t margin = free_space_margin(uint64_t{vfs.f_blocks} * vfs.f_frsize);
    if (bytes > avail || avail - bytes < margin)
      return Error(ErrorKind::kIo,
                   s.what() + ": its blobs need " + std::to_string(bytes) + " bytes, and " +
                       probe.string() + " has " + std::to_string(avail) +
                       " free (a pull leaves " + std::to_string(margin) +
                       " free); refusing it before downloading. Free space (`prewarm gc`) first",
                   ENOSPC);
  }
  return ok_status();
}

std::string strip_params(const std::string& content_type) {
  std::string t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  return t;
}

}  // namespace

uint64_t free_space_margin(uint64_t filesystem_bytes) {
  return std::min<uint64_t>(filesystem_bytes / 20, uint64_t{1} << 30);
}

Result<PulledManifest> get_manifest(const Reference& ref, const Options& opts) {
  Session s(ref, opts, "pull");
  http::Client c = s.client();
  http::Request get;
  get.url = s.url("/manifests/" + ref.reference());
  get.headers = {"Accept: " + std::string(kOciManifest) + ", " + std::string(kOciIndex) + ", " +
                 std::string(kDockerManifest) + ", " + std::string(kDockerManifestList)};
  get.max_body = kMaxManifestBytes;
  auto r = s.send(c, get);
  if (!r.ok()) return std::move(r).error().with_context(s.what() + ": manifest");
  if (r->status == 404)
    return Error(s.what() + ": manifest '" + ref.reference() + "' not found: " +
                     http::describe(*r),
                 ENOENT);
  if (r->status != 200) return Error(s.what() + ": manifest: " + http::describe(*r), EIO);
  PulledManifest m;
  m.json = std::move(r->body);
  m.digest = "sha256:" + sha256_hex(m.json);
  if (!ref.digest.empty() && m.digest != ref.digest)
    return Error(s.what() + ": the registry returned a manifest whose digest is " + m.digest,
                 EBADMSG);
  std::string claimed = r->header("docker-content-digest");
  if (claimed.starts_with("sha256:") && claimed != m.digest)
    return Error(s.what() + ": the registry says the manifest is " + claimed +
                     " but its content hashes to " + m.digest,
                 EBADMSG);
  m.media_type = strip_params(r->header("content-type"));
  if (m.media_type.empty() || m.media_type == "application/json" ||
      m.media_type == "text/plain") {
    auto j = nlohmann::json::parse(m.json, nullptr, false);
    if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string())
      m.media_type = j["mediaType"].get<std::string>();
  }
  return m;
}

Status pull_blobs(const Reference& ref, const std::vector<Blob>& wanted, const Options& opts,
                  const std::function<Status(const Blob&)>& done) {
  Session s(ref, opts, "pull");
  std::vector<Blob> unique;
  std::set<std::filesystem::path> paths;
  for (const auto& b : wanted) {
    if (!is_valid_digest(b.digest))
      return Error(s.what() + ": blob digest '" + b.digest + "' is not sha256:<64 hex>", EINVAL);
    if (b.path.empty()) return Error(s.what() + ": blob " + b.digest + " has no destination", EINVAL);
    if (paths.insert(b.path).second) unique.push_back(b);
  }
  PW_TRY(check_sizes(s, unique));
  Progress progress(s, unique);
  return s.for_each_parallel(unique.size(), [&](http::Client& c, size_t i) -> Status {
    PW_TRY(BlobDownload(s, c, unique[i], i, progress).run());
    if (done) return done(unique[i]);
    return ok_status();
  });
}

}  // namespace prewarm::registry
