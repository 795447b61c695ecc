// One push or pull against one repository: URLs, authorization, retries, progress and the
// worker threads that move blobs in parallel.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "registry/auth.h"
#include "registry/http.h"
#include "registry/registry.h"

namespace prewarm::registry {

class Session {
 public:
  // verb: "push" or "pull"; it names the operation in errors and picks the token scope.
  Session(const Reference& ref, const Options& opts, std::string verb);

  const Reference& ref() const { return ref_; }
  const Options& opts() const { return opts_; }
  // "push 127.0.0.1:5000/app:v1": the prefix of this operation's errors and progress lines.
  const std::string& what() const { return what_; }
  // "http://127.0.0.1:5000/v2/app" + path.
  std::string url(std::string_view path) const { return base_ + std::string(path); }
  http::Client client() const;

  // Sends req with the registry's Authorization (only to the registry's own host),
  // answering 401 challenges. With `retry`, connection errors and 502/503/504 are retried
  // with backoff. A 401 that authenticating cannot fix is an error.
  Result<http::Response> send(http::Client& client, http::Request req, bool retry = true);

  // Sleeps before retry number `attempt` (1, 2, ...) and counts it.
  void backoff(int attempt) const;
  void count(std::atomic<uint64_t> Stats::*field, uint64_t n = 1) const {
    if (opts_.stats) (opts_.stats->*field) += n;
  }

  // Runs fn for items 0..n-1 on up to opts.parallel threads, each with its own client.
  // After a failure no new items start; the first error is returned (with a count of others).
  Status for_each_parallel(size_t n, const std::function<Status(http::Client&, size_t)>& fn);

 private:
  Reference ref_;
  const Options& opts_;
  std::string what_;
  std::string base_;
  std::string authority_;
  auth::Authorizer auth_;
};

// Throttled progress lines: overall and per-blob bytes at most once a second, and a line
// when a blob completes.
class Progress {
 public:
  Progress(const Session& s, const std::vector<Blob>& blobs);
  void update(size_t index, uint64_t done);
  void finished(size_t index, const std::string& how);

 private:
  std::string line_locked() const;
  std::function<void(const std::string&)> sink_;
  std::string what_;
  std::vector<std::string> digests_;
  std::vector<uint64_t> sizes_;
  std::vector<uint64_t> done_;
  std::vector<bool> finished_;
  uint64_t total_ = 0;
  uint64_t done_total_ = 0;
  size_t finished_count_ = 0;
  std::chrono::steady_clock::time_point last_;
  mutable std::mutex mu_;
};

}  // namespace prewarm::registry
