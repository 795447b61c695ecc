// push: blobs the registry lacks go up in chunks (POST, PATCH..., PUT ?digest=), resuming
// after a failed chunk from the offset the registry reports; then the manifest.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "base/log.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "registry/session.h"

namespace prewarm::registry {
namespace {

class BlobUpload {
 public:
  BlobUpload(Session& s, http::Client& c, const Blob& b, size_t index, Progress& p)
      : s_(s), c_(c), b_(b), index_(index), p_(p) {}

  Status run() {
    PW_ASSIGN(bool present, exists());
    if (present) {
      s_.count(&Stats::blobs_skipped);
      p_.finished(index_, "already in the registry");
      return ok_status();
    }
    fd_.reset(::open(b_.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_.valid()) return fail(Error::sys("open", errno, b_.path.string()).message());
    struct stat st {};
    if (::fstat(fd_.get(), &st) != 0) return fail(Error::sys("stat", errno, b_.path.string()).message());
    if (static_cast<uint64_t>(st.st_size) != b_.size)
      return fail(b_.path.string() + " has " + std::to_string(st.st_size) + " bytes, not the " +
                  std::to_string(b_.size) + " the manifest says");
    PW_TRY(upload());
    s_.count(&Stats::blobs_uploaded);
    p_.finished(index_, "uploaded");
    return ok_status();
  }

 private:
  Error fail(const std::string& why, int err = EIO) const {
    // Authentication concerns the whole operation, not this blob.
    if (err == EACCES) return Error(s_.what() + ": " + why, err);
    return Error(s_.what() + ": blob " + b_.digest + " upload: " + why, err);
  }

  // Counts a failure; an error once more than opts.retries have happened.
  Status failed(const std::string& why) {
    if (++failures_ > s_.opts().retries)
      return fail(why + " (gave up after " + std::to_string(failures_) + " attempts)");
    log::debug(s_.what() + ": blob " + b_.digest + ": " + why + "; retrying");
    s_.backoff(failures_);
    return ok_status();
  }

  Result<bool> exists() {
    http::Request head;
    head.method = "HEAD";
    head.url = s_.url("/blobs/" + b_.digest);
    auto r = s_.send(c_, head);
    if (!r.ok()) return fail(r.error().message(), r.error().errno_value());
    if (r->status == 200) return true;
    if (r->status == 404) return false;
    return fail("checking whether the registry has it: " + http::describe(*r));
  }

  Status start() {
    http::Request post;
    post.method = "POST";
    post.url = s_.url("/blobs/uploads/");
    s_.count(&Stats::upload_starts);
    auto r = s_.send(c_, post, false);
    if (!r.ok() && r.error().errno_value() == EACCES) return fail(r.error().message(), EACCES);
    if (!r.ok()) return failed("starting: " + r.error().message());
    if (r->status != 202) {
      if (r->status >= 500) return failed("starting: " + http::describe(*r));
      return fail("starting: " + http::describe(*r));
    }
    std::string loc = r->header("location");
    if (loc.empty()) return fail("the registry started an upload without a Location", EPROTO);
    PW_ASSIGN(location_, http::resolve_url(post.url, loc));
    offset_ = 0;
    started_ = true;
    return ok_status();
  }

  // Asks the registry where the upload stands after a failure; restarts it when the
  // registry no longer knows it (distribution drops an upload whose state got out of step).
  void query() {
    http::Request get;
    get.url = location_;
    auto r = s_.send(c_, get);
    if (r.ok() && r->status == 204) {
      auto received = http::upload_received(r->header("range"));
      if (received && *received > 0 && *received <= b_.size) {
        offset_ = *received;
        if (std::string loc = r->header("location"); !loc.empty()) {
          auto resolved = http::resolve_url(location_, loc);
          if (resolved.ok()) location_ = *resolved;
        }
        s_.count(&Stats::resumed);
        return;
      }
    }
    started_ = false;  // nothing usable: a fresh upload
  }

  // PATCHes one chunk; true when the registry took it.
  Result<bool> patch() {
    uint64_t len = std::min<uint64_t>(s_.opts().chunk_size, b_.size - offset_);
    http::Request req;
    req.method = "PATCH";
    req.url = location_;
    req.headers = {"Content-Type: application/octet-stream",
                   "Content-Range: " + http::upload_content_range(offset_, len)};
    req.fd = fd_.get();
    req.offset = offset_;
    req.length = len;
    req.streaming = true;
    uint64_t at = offset_;
    req.on_sent = [&](uint64_t sent) { p_.update(index_, at + sent); };
    s_.count(&Stats::upload_chunks);
    auto r = s_.send(c_, req, false);
    if (!r.ok() && r.error().errno_value() == EACCES) return fail(r.error().message(), EACCES);
    if (!r.ok()) {
      PW_TRY(failed("sending bytes " + http::upload_content_range(offset_, len) + ": " +
                    r.error().message()));
      return false;
    }
    if (r->status != 202) {
      std::string code = http::error_code(*r);
      bool recoverable = r->status >= 500 || r->status == 416 || r->status == 404 ||
                         code == "BLOB_UPLOAD_INVALID" || code == "BLOB_UPLOAD_UNKNOWN";
      if (!recoverable) return fail(http::describe(*r));
      PW_TRY(failed("sending bytes " + http::upload_content_range(offset_, len) + ": " +
                    http::describe(*r)));
      return false;
    }
    if (std::string loc = r->header("location"); !loc.empty()) {
      PW_ASSIGN(location_, http::resolve_url(location_, loc));
    }
    uint64_t expected = offset_ + len;
    auto received = http::upload_received(r->header("range"));
    // "0-0" after one byte is ambiguous (see upload_received); otherwise the registry's
    // count wins over ours.
    if (received && *received != expected && !(expected == 1 && *received == 0)) {
      if (*received > expected) {
        PW_TRY(failed("the registry reports " + std::to_string(*received) +
                      " bytes received after " + std::to_string(expected) + " were sent"));
        started_ = false;
        return false;
      }
      s_.count(&Stats::bytes_uploaded, *received - offset_);
      offset_ = *received;
      return true;
    }
    s_.count(&Stats::bytes_uploaded, len);
    offset_ = expected;
    return true;
  }

  // PUT ?digest=; true when the blob is complete.
  Result<bool> finish() {
    http::Request put;
    put.method = "PUT";
    put.url = location_ + (location_.find('?') == std::string::npos ? "?" : "&") +
              "digest=" + http::url_encode(b_.digest);
    put.headers = {"Content-Type: application/octet-stream"};
    auto r = s_.send(c_, put, false);
    if (!r.ok() && r.error().errno_value() == EACCES) return fail(r.error().message(), EACCES);
    if (r.ok() && (r->status == 201 || r->status == 204)) return true;
    if (r.ok() && r->status == 400 && http::error_code(*r) == "DIGEST_INVALID") {
      PW_ASSIGN(std::string actual, sha256_file(b_.path));
      if ("sha256:" + actual != b_.digest)
        return fail(b_.path.string() + " has digest sha256:" + actual +
                    ", not the one given for it (the local file changed or is corrupt)", EBADMSG);
      PW_TRY(failed("the registry received different content: " + http::describe(*r)));
      started_ = false;
      return false;
    }
    if (r.ok() && r->status < 500 && r->status != 404 && r->status != 416 &&
        http::error_code(*r) != "BLOB_UPLOAD_INVALID")
      return fail("completing: " + http::describe(*r));
    PW_TRY(failed("completing: " + (r.ok() ? http::describe(*r) : r.error().message())));
    // The PUT may have succeeded before the connection broke.
    PW_ASSIGN(bool present, exists());
    if (present) return true;
    query();
    return false;
  }

  Status upload() {
    for (;;) {
      if (!started_) {
        PW_TRY(start());
        if (!started_) continue;
      }
      if (offset_ < b_.size) {
        PW_ASSIGN(bool ok, patch());
        if (!ok && started_) query();
        continue;
      }
      PW_ASSIGN(bool done, finish());
      if (done) return ok_status();
    }
  }

  Session& s_;
  http::Client& c_;
  const Blob& b_;
  size_t index_;
  Progress& p_;
  UniqueFd fd_;
  std::string location_;
  uint64_t offset_ = 0;
  bool started_ = false;
  int failures_ = 0;
};

}  // namespace

Status push(const Reference& ref, const std::vector<Blob>& blobs, const std::string& manifest_json,
            const std::string& manifest_media_type, const Options& opts) {
  Session s(ref, opts, "push");
  if (manifest_json.size() > kMaxManifestBytes)
    return Error(s.what() + ": manifest is larger than 4 MiB", EFBIG);
  if (opts.chunk_size == 0) return Error(s.what() + ": chunk_size must not be 0", EINVAL);
  if (manifest_media_type.empty())
    return Error(s.what() + ": no manifest media type given", EINVAL);
  std::string manifest_digest = "sha256:" + sha256_hex(manifest_json);
  if (!ref.digest.empty() && ref.digest != manifest_digest)
    return Error(s.what() + ": the manifest's digest is " + manifest_digest +
                     ", not the one in the reference",
                 EINVAL);
  // A digest listed twice (same layer twice) is uploaded once.
  std::vector<Blob> unique;
  std::set<std::string> seen;
  for (const auto& b : blobs) {
    if (!is_valid_digest(b.digest))
      return Error(s.what() + ": blob digest '" + b.digest + "' is not sha256:<64 hex>", EINVAL);
    if (seen.insert(b.digest).second) unique.push_back(b);
  }

  Progress progress(s, unique);
  PW_TRY(s.for_each_parallel(unique.size(), [&](http::Client& c, size_t i) {
    return BlobUpload(s, c, unique[i], i, progress).run();
  }));

  http::Client c = s.client();
  http::Request put;
  put.method = "PUT";
  put.url = s.url("/manifests/" + ref.reference());
  put.headers = {"Content-Type: " + manifest_media_type};
  put.text = manifest_json;
  auto r = s.send(c, put);
  if (!r.ok()) return std::move(r).error().with_context(s.what() + ": manifest upload");
  if (r->status != 201 && r->status != 200 && r->status != 202)
    return Error(s.what() + ": manifest upload: " + http::describe(*r), EIO);
  if (opts.progress) opts.progress(s.what() + ": manifest " + manifest_digest + " uploaded");
  return ok_status();
}

}  // namespace prewarm::registry
