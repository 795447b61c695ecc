// HTTP over libcurl for the registry client: one Client (a curl handle that keeps its
// connections) per thread, bodies from memory or a file range, 2xx bodies streamed to a sink.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace prewarm::registry::http {

struct Header {
  std::string name;  // lowercase
  std::string value;
};

struct Response {
  long status = 0;
  std::string reason;
  std::vector<Header> headers;  // of the final response (after followed redirects)
  std::string body;             // bodies not handed to a sink, up to Request::max_body
  uint64_t streamed = 0;        // bytes handed to the sink
  std::string header(std::string_view name) const;  // first value, "" when absent
  std::vector<std::string> headers_named(std::string_view name) const;
};

struct Request {
  std::string method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  // The body: text, or `length` bytes of fd from `offset` (read with pread).
  std::string_view text;
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  // When set, 2xx response bodies go here instead of Response::body; returning false aborts.
  std::function<bool(const Response& head, std::string_view data)> sink;
  size_t max_body = 1 << 20;
  // Called with the request body bytes sent so far.
  std::function<void(uint64_t sent)> on_sent;
  bool follow_redirects = false;
  // Blob transfers: no overall time limit, only the stall timeout.
  bool streaming = false;
};

struct TransportOptions {
  std::string ca_file;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds stall_timeout{30'000};  // under 1 KiB/s this long: a stall
  std::chrono::milliseconds request_timeout{120'000};
};

class Client {
 public:
  explicit Client(TransportOptions opts);
  ~Client();
  Client(Client&& o) noexcept;
  Client& operator=(Client&&) = delete;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Any HTTP status is a Response; connection, TLS, timeout and aborted-callback failures
  // are errors ("GET http://...: Connection reset by peer").
  Result<Response> perform(const Request& req);

 private:
  void* curl_ = nullptr;  // CURL*
  TransportOptions opts_;
};

// An inclusive byte range "A-B" as distribution's Range header reports an upload's state
// ("0-1023": 1024 bytes received), also accepted with a "bytes=" prefix.
struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;
};
std::optional<ByteRange> parse_range(std::string_view value);

// "bytes A-B/TOTAL" (TOTAL may be "*") from a 206 response.
struct ContentRange {
  uint64_t first = 0;
  uint64_t last = 0;
  std::optional<uint64_t> total;
};
std::optional<ContentRange> parse_content_range(std::string_view value);

// The Content-Range value of an upload chunk of `length` (> 0) bytes at `offset`: "A-B".
std::string upload_content_range(uint64_t offset, uint64_t length);

// Bytes the registry holds according to an upload's Range header. Distribution reports an
// empty upload as "0-0", like a one-byte one, so "0-0" yields 0: resuming from 0 is safe.
std::optional<uint64_t> upload_received(std::string_view range);

std::string url_encode(std::string_view s);
// Resolves a Location header (absolute, or relative to base).
Result<std::string> resolve_url(const std::string& base, const std::string& location);
// "host:port" of a URL (port made explicit), lowercase; "" when it does not parse.
std::string url_authority(const std::string& url);
// "HTTP 404 Not Found (BLOB_UNKNOWN: blob unknown to registry)".
std::string describe(const Response& r);
// The first error code of a distribution error body ("BLOB_UNKNOWN"), or "".
std::string error_code(const Response& r);

}  // namespace prewarm::registry::http
