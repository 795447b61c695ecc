// The libcurl wrapper: request setup, header/body callbacks, URL and range helpers.
#include "registry/http.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

namespace prewarm::registry::http {
namespace {

constexpr long kLowSpeedBytes = 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool parse_u64(std::string_view s, uint64_t& out) {
  s = trim(s);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size() && !s.empty();
}

// State shared with curl's callbacks during one perform().
struct Transfer {
  const Request* req = nullptr;
  Response resp;
  uint64_t sent = 0;
  std::string callback_error;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {
    // A new response (after a redirect or a 100 Continue): forget the previous headers.
    t->resp.headers.clear();
    std::string_view rest = line.substr(line.find(' ') == std::string_view::npos ? line.size()
                                                                                : line.find(' ') + 1);
    uint64_t code = 0;
    std::string_view code_text = rest.substr(0, rest.find(' '));
    if (parse_u64(code_text, code)) t->resp.status = static_cast<long>(code);
    size_t sp = rest.find(' ');
    t->resp.reason = sp == std::string_view::npos ? "" : std::string(trim(rest.substr(sp + 1)));
    return size * n;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos)
    t->resp.headers.push_back({lower(trim(line.substr(0, colon))),
                               std::string(trim(line.substr(colon + 1)))});
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view chunk(data, size * n);
  bool success = t->resp.status >= 200 && t->resp.status < 300;
  if (t->req->sink && success) {
    if (!t->req->sink(t->resp, chunk)) {
      if (t->callback_error.empty()) t->callback_error = "response body rejected";
      return 0;
    }
    t->resp.streamed += chunk.size();
    return chunk.size();
  }
  if (t->resp.body.size() + chunk.size() > t->req->max_body) {
    t->callback_error = "response body larger than " + std::to_string(t->req->max_body) + " bytes";
    return 0;
  }
  t->resp.body.append(chunk);
  return chunk.size();
}

size_t on_read(char* buf, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const Request& r = *t->req;
  size_t want = size * n;
  size_t got = 0;
  if (r.fd >= 0) {
    uint64_t left = r.length - t->sent;
    want = static_cast<size_t>(std::min<uint64_t>(want, left));
    if (want == 0) return 0;
    ssize_t k;
    do {
      k = ::pread(r.fd, buf, want, static_cast<off_t>(r.offset + t->sent));
    } while (k < 0 && errno == EINTR);
    if (k <= 0) {
      t->callback_error = k < 0 ? std::string("read: ") + std::strerror(errno)
                                : "file ended before " + std::to_string(r.offset + r.length) + " bytes";
      return CURL_READFUNC_ABORT;
    }
    got = static_cast<size_t>(k);
  } else {
    got = std::min(want, r.text.size() - static_cast<size_t>(t->sent));
    std::memcpy(buf, r.text.data() + t->sent, got);
  }
  t->sent += got;
  if (r.on_sent) r.on_sent(t->sent);
  return got;
}

struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
struct UrlFree {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string Response::header(std::string_view name) const {
  std::string n = lower(name);
  for (const auto& h : headers)
    if (h.name == n) return h.value;
  return "";
}

std::vector<std::string> Response::headers_named(std::string_view name) const {
  std::string n = lower(name);
  std::vector<std::string> out;
  for (const auto& h : headers)
    if (h.name == n) out.push_back(h.value);
  return out;
}

Client::Client(TransportOptions opts) : opts_(std::move(opts)) {
  global_init();
  curl_ = curl_easy_init();
}

Client::~Client() {
  if (curl_) curl_easy_cleanup(static_cast<CURL*>(curl_));
}

Client::Client(Client&& o) noexcept : curl_(std::exchange(o.curl_, nullptr)), opts_(std::move(o.opts_)) {}

Result<Response> Client::perform(const Request& req) {
  auto* h = static_cast<CURL*>(curl_);
  if (h == nullptr) return Error("curl_easy_init failed", ENOMEM);
  curl_easy_reset(h);  // keeps the connection cache
  Transfer t;
  t.req = &req;
  char errbuf[CURL_ERROR_SIZE] = {0};

  std::unique_ptr<curl_slist, SlistFree> headers;
  auto add = [&](const std::string& line) {
    headers.reset(curl_slist_append(headers.release(), line.c_str()));
  };
  for (const auto& line : req.headers) add(line);
  add("Expect:");  // no 100-continue round trip before each chunk

  curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_USERAGENT, "prewarm");
  // One connection per thread and no multiplexing: HTTP/2 (h2 over TLS) would only add
  // flow-control windows to bulk transfers; on loopback TLS it measured slower.
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout.count()));
  // A registry that accepts and then stalls (or trickles) fails after stall_timeout, not after
  // the whole request timeout: under kLowSpeedBytes a second for that long is a stall.
  const long stall_s = std::max(1L, static_cast<long>(opts_.stall_timeout.count() / 1000));
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedBytes);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall_s);
  if (!req.streaming)
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(opts_.request_timeout.count()));
  if (!opts_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, opts_.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  if (req.follow_redirects) {
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  }
  if (req.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (req.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    uint64_t len = req.fd >= 0 ? req.length : req.text.size();
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(len));
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &t);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  }

  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    std::string why = !t.callback_error.empty() ? t.callback_error
                      : errbuf[0]               ? std::string(errbuf)
                                                : curl_easy_strerror(rc);
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
      why += " (the server's certificate is not trusted: pass its CA certificate as ca_file)";
    else if (rc == CURLE_SSL_CONNECT_ERROR && why.find("wrong version number") != std::string::npos)
      why += " (the server may speak plain HTTP: set insecure_http)";
    else if (rc == CURLE_OPERATION_TIMEDOUT && t.callback_error.empty())
      why += " (the registry sent under " + std::to_string(kLowSpeedBytes) + " bytes/s for " +
             std::to_string(stall_s) + " s, or did not answer in time; PREWARM_REGISTRY_TIMEOUT "
             "sets the seconds a transfer may stall)";
    int err = rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT
              : rc == CURLE_COULDNT_CONNECT  ? ECONNREFUSED
              : !t.callback_error.empty()    ? EIO
                                             : ECONNRESET;
    return Error(req.method + " " + req.url + ": " + why, err);
  }
  return std::move(t.resp);
}

std::optional<ByteRange> parse_range(std::string_view value) {
  value = trim(value);
  if (value.starts_with("bytes=")) value.remove_prefix(6);
  size_t dash = value.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  ByteRange r;
  if (!parse_u64(value.substr(0, dash), r.first) || !parse_u64(value.substr(dash + 1), r.last) ||
      r.last < r.first)
    return std::nullopt;
  return r;
}

std::optional<ContentRange> parse_content_range(std::string_view value) {
  value = trim(value);
  if (!value.starts_with("bytes ")) return std::nullopt;
  value.remove_prefix(6);
  size_t slash = value.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto range = parse_range(value.substr(0, slash));
  if (!range) return std::nullopt;
  ContentRange cr{range->first, range->last, std::nullopt};
  std::string_view total = trim(value.substr(slash + 1));
  if (total != "*") {
    uint64_t t = 0;
    if (!parse_u64(total, t) || t <= cr.last) return std::nullopt;
    cr.total = t;
  }
  return cr;
}

std::string upload_content_range(uint64_t offset, uint64_t length) {
  return std::to_string(offset) + "-" + std::to_string(offset + length - 1);
}

std::optional<uint64_t> upload_received(std::string_view range) {
  auto r = parse_range(range);
  if (!r || r->first != 0) return std::nullopt;
  if (r->last == 0) return 0;
  return r->last + 1;
}

std::string url_encode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

Result<std::string> resolve_url(const std::string& base, const std::string& location) {
  global_init();
  std::unique_ptr<CURLU, UrlFree> u(curl_url());
  if (!u) return Error("curl_url failed", ENOMEM);
  if (curl_url_set(u.get(), CURLUPART_URL, base.c_str(), 0) != CURLUE_OK ||
      curl_url_set(u.get(), CURLUPART_URL, location.c_str(), 0) != CURLUE_OK)
    return Error("invalid Location '" + location + "' (relative to " + base + ")", EPROTO);
  char* out = nullptr;
  if (curl_url_get(u.get(), CURLUPART_URL, &out, 0) != CURLUE_OK)
    return Error("invalid Location '" + location + "'", EPROTO);
  std::string s(out);
  curl_free(out);
  return s;
}

std::string url_authority(const std::string& url) {
  global_init();
  std::unique_ptr<CURLU, UrlFree> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return "";
  char* host = nullptr;
  char* port = nullptr;
  std::string out;
  if (curl_url_get(u.get(), CURLUPART_HOST, &host, 0) == CURLUE_OK &&
      curl_url_get(u.get(), CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK)
    out = lower(host) + ":" + port;
  curl_free(host);
  curl_free(port);
  return out;
}

std::string error_code(const Response& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("errors") || !j["errors"].is_array() ||
      j["errors"].empty() || !j["errors"][0].is_object())
    return "";
  const auto& e = j["errors"][0];
  return e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "";
}

std::string describe(const Response& r) {
  std::string s = "HTTP " + std::to_string(r.status);
  if (!r.reason.empty()) s += " " + r.reason;
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string details;
  if (!j.is_discarded() && j.is_object() && j.contains("errors") && j["errors"].is_array()) {
    for (const auto& e : j["errors"]) {
      if (!e.is_object()) continue;
      std::string one;
      if (e.contains("code") && e["code"].is_string()) one = e["code"].get<std::string>();
      if (e.contains("message") && e["message"].is_string())
        one += (one.empty() ? "" : ": ") + e["message"].get<std::string>();
      if (!one.empty()) details += (details.empty() ? "" : "; ") + one;
    }
  } else if (!r.body.empty() && r.body.size() < 200 &&
             std::all_of(r.body.begin(), r.body.end(),
                         [](char c) { return std::isprint(static_cast<unsigned char>(c)) || c == '\n'; })) {
    details = std::string(trim(r.body));
  }
  if (!details.empty()) s += " (" + details + ")";
  return s;
}

}  // namespace prewarm::registry::http
