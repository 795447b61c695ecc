// Incremental HTTP/1.x response reader: status line, headers and a body framed by
// Content-Length, chunked transfer coding or the end of the connection (internal).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"
#include "probe/probe.h"

namespace prewarm::probe {

// Responses larger than this are refused: a probe only needs the status and a short body, and
// a misbehaving app must not make the host buffer without bound.
inline constexpr size_t kMaxResponseBytes = 1 << 20;

class HttpResponseReader {
 public:
  // Appends bytes as they arrive; returns true once the response is complete (bytes past the
  // end of it are ignored). Errors on malformed framing or a response over kMaxResponseBytes.
  Result<bool> feed(std::string_view bytes);
  // The peer closed the connection: completes a body that runs until the close, or fails
  // because the response was cut short.
  Status finish();
  bool done() const { return stage_ == Stage::kDone; }
  // The parsed response; valid once done().
  HttpResponse take() { return std::move(response_); }

 private:
  enum class Stage { kStatusLine, kHeaders, kFixed, kChunkSize, kChunkData, kChunkEnd,
                     kTrailers, kUntilClose, kDone };

  Result<bool> advance();
  // The next full line without its CR LF, or false when more bytes are needed.
  bool next_line(std::string_view* line);
  Status on_status_line(std::string_view line);
  Status on_header(std::string_view line);
  Status start_body();
  Status append_body(std::string_view bytes);

  Stage stage_ = Stage::kStatusLine;
  std::string buf_;   // received bytes not yet consumed
  size_t pos_ = 0;    // parse cursor into buf_
  size_t received_ = 0;
  size_t remaining_ = 0;  // bytes left in a Content-Length body or the current chunk
  bool has_length_ = false;
  bool chunked_ = false;
  bool other_coding_ = false;  // a Transfer-Encoding other than chunked: body runs to close
  HttpResponse response_;
};

}  // namespace prewarm::probe
