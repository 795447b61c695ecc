// Session: authorization and retries around HTTP requests, worker threads, progress lines.
#include "registry/session.h"

#include <atomic>
#include <cstdio>
#include <exception>
#include <iterator>
#include <thread>

#include "base/log.h"

namespace prewarm::registry {
namespace {

bool plain_http(const Reference& ref, const Options& opts) {
  if (opts.insecure_http) return *opts.insecure_http;
  std::string h = ref.host();
  return h == "localhost" || h == "127.0.0.1" || h == "[::1]";
}

std::vector<std::string> actions_for(const std::string& verb) {
  if (verb == "push") return {"pull", "push"};
  return {"pull"};
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

// "300 B", "12.0 KiB", "5.0 MiB", "1.2 GiB".
std::string human(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  for (; v >= 1024 && u + 1 < std::size(units); ++u) v /= 1024;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

std::string short_digest(const std::string& d) { return d.substr(0, 19); }  // sha256: + 12

}  // namespace

Session::Session(const Reference& ref, const Options& opts, std::string verb)
    : ref_(ref),
      opts_(opts),
      what_(verb + " " + ref.to_string()),
      base_((plain_http(ref, opts) ? "http://" : "https://") + ref.registry + "/v2/" +
            ref.repository),
      authority_(http::url_authority(base_)),
      auth_(ref.registry, ref.repository, actions_for(verb), auth::resolve_credentials(opts),
            opts.stats) {}

http::Client Session::client() const {
  return http::Client(http::TransportOptions{opts_.ca_file, opts_.connect_timeout,
                                             opts_.stall_timeout, opts_.request_timeout});
}

void Session::backoff(int attempt) const {
  count(&Stats::retries);
  auto delay = opts_.retry_backoff * (1 << std::min(attempt - 1, 6));
  std::this_thread::sleep_for(delay);
}

Result<http::Response> Session::send(http::Client& client, http::Request req, bool retry) {
  bool ours = http::url_authority(req.url) == authority_;
  std::vector<std::string> base_headers = req.headers;
  int auth_rounds = 0;
  for (int attempt = 0;;) {
    std::string authorization = ours ? auth_.header() : "";
    req.headers = base_headers;
    if (!authorization.empty()) req.headers.push_back(authorization);
    count(&Stats::requests);
    auto r = client.perform(req);
    if (!r.ok()) {
      if (retry && attempt < opts_.retries && r.error().errno_value() != ETIMEDOUT) {
        log::debug(what_ + ": retrying after " + r.error().message());
        backoff(++attempt);
        continue;
      }
      return std::move(r).error();
    }
    if (r->status == 401 && ours) {
      if (auth_rounds++ >= 2) return auth_.denied(*r);
      PW_TRY(auth_.on_unauthorized(client, *r, authorization));
      continue;
    }
    if (retry && (r->status == 502 || r->status == 503 || r->status == 504) &&
        attempt < opts_.retries) {
      log::debug(what_ + ": retrying " + req.method + " " + req.url + " after " + http::describe(*r));
      backoff(++attempt);
      continue;
    }
    return r;
  }
}

Status Session::for_each_parallel(size_t n,
                                  const std::function<Status(http::Client&, size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<Error> errors;
  auto worker = [&] {
    http::Client c = client();
    for (size_t i; !stop && (i = next++) < n;) {
      Status st = Error("unknown failure");
      try {
        st = fn(c, i);
      } catch (const std::exception& e) {
        st = Error(what_ + ": " + e.what());
      }
      if (!st.ok()) {
        stop = true;
        std::lock_guard lock(mu);
        errors.push_back(std::move(st).error());
      }
    }
  };
  size_t threads = std::min<size_t>(n, static_cast<size_t>(std::max(1, opts_.parallel)));
  std::vector<std::thread> pool;
  try {
    for (size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
  } catch (const std::exception&) {
    // Fewer threads than asked for: the ones we have do the work.
  }
  worker();
  for (auto& t : pool) t.join();
  if (errors.empty()) return ok_status();
  // Other threads usually hit the same authentication failure: one report is enough.
  if (errors.size() == 1 || errors.front().errno_value() == EACCES) return std::move(errors.front());
  return std::move(errors.front())
      .with_detail("and " + std::to_string(errors.size() - 1) + " more failures, the next: " +
                   errors[1].message());
}

Progress::Progress(const Session& s, const std::vector<Blob>& blobs)
    : sink_(s.opts().progress), what_(s.what()), last_(std::chrono::steady_clock::now()) {
  for (const auto& b : blobs) {
    digests_.push_back(b.digest);
    sizes_.push_back(b.size);
    total_ += b.size;
  }
  done_.assign(blobs.size(), 0);
  finished_.assign(blobs.size(), false);
}

std::string Progress::line_locked() const {
  std::string s = what_ + ": " + mib(done_total_) + "/" + mib(total_) + " MiB";
  if (total_ > 0) s += " (" + std::to_string(done_total_ * 100 / total_) + "%)";
  s += ", " + std::to_string(finished_count_) + "/" + std::to_string(sizes_.size()) + " blobs";
  return s;
}

void Progress::update(size_t index, uint64_t done) {
  if (!sink_) return;
  std::lock_guard lock(mu_);
  done = std::min(done, sizes_[index]);
  done_total_ = done_total_ - done_[index] + done;
  done_[index] = done;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::seconds(1)) return;
  last_ = now;
  std::string s = line_locked();
  std::string active;
  for (size_t i = 0; i < sizes_.size(); ++i)
    if (!finished_[i] && done_[i] > 0)
      active += (active.empty() ? "; " : ", ") + short_digest(digests_[i]) + " " + mib(done_[i]) +
                "/" + mib(sizes_[i]) + " MiB";
  sink_(s + active);
}

void Progress::finished(size_t index, const std::string& how) {
  if (!sink_) return;
  std::lock_guard lock(mu_);
  done_total_ = done_total_ - done_[index] + sizes_[index];
  done_[index] = sizes_[index];
  if (!finished_[index]) ++finished_count_;
  finished_[index] = true;
  last_ = std::chrono::steady_clock::now();
  sink_(what_ + ": blob " + short_digest(digests_[index]) + " " + how + " (" +
        human(sizes_[index]) + "); " + line_locked().substr(what_.size() + 2));
}

}  // namespace prewarm::registry
