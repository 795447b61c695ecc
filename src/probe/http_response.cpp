// HTTP/1.x response framing (RFC 9112 section 6): enough of it for probes and warm-up requests.
#include "probe/http_response.h"

#include <algorithm>
#include <cerrno>
#include <charconv>

namespace prewarm::probe {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// Quotes a received line for an error message, shortened and with control bytes escaped.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 80)) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += '?';
    } else {
      out += c;
    }
  }
  if (s.size() > 80) out += "...";
  return out + "\"";
}

Error malformed(std::string what) { return Error("malformed HTTP response: " + what, EPROTO); }

std::string limit_text() { return std::to_string(kMaxResponseBytes >> 20) + " MiB limit"; }

}  // namespace

Result<bool> HttpResponseReader::feed(std::string_view bytes) {
  if (done()) return true;
  received_ += bytes.size();
  buf_.append(bytes);
  auto complete = advance();
  // Consumed bytes are dropped so that the buffer only holds a partial line or chunk.
  buf_.erase(0, pos_);
  pos_ = 0;
  if (!complete.ok()) return std::move(complete).error();
  if (!*complete && received_ > kMaxResponseBytes) {
    return Error("HTTP response exceeds the " + limit_text(), EMSGSIZE);
  }
  return *complete;
}

Status HttpResponseReader::finish() {
  if (stage_ == Stage::kUntilClose) stage_ = Stage::kDone;
  if (done()) return ok_status();
  if (received_ == 0) return Error("connection closed without a response", ECONNRESET);
  return Error("connection closed before the response was complete", ECONNRESET);
}

bool HttpResponseReader::next_line(std::string_view* line) {
  size_t nl = buf_.find('\n', pos_);
  if (nl == std::string::npos) return false;
  std::string_view l(buf_.data() + pos_, nl - pos_);
  if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
  *line = l;
  pos_ = nl + 1;
  return true;
}

Status HttpResponseReader::append_body(std::string_view bytes) {
  if (response_.body.size() + bytes.size() > kMaxResponseBytes) {
    return Error("HTTP response body exceeds the " + limit_text(), EMSGSIZE);
  }
  response_.body.append(bytes);
  return ok_status();
}

Status HttpResponseReader::on_status_line(std::string_view line) {
  // HTTP-version SP 3DIGIT [SP reason]
  constexpr std::string_view kPrefix = "HTTP/";
  size_t sp = line.find(' ');
  if (line.substr(0, kPrefix.size()) != kPrefix || sp == std::string_view::npos ||
      line.size() < sp + 4 || (line.size() > sp + 4 && line[sp + 4] != ' ')) {
    return malformed("bad status line " + quote(line));
  }
  int status = 0;
  for (char c : line.substr(sp + 1, 3)) {
    if (c < '0' || c > '9') return malformed("bad status line " + quote(line));
    status = status * 10 + (c - '0');
  }
  if (status < 100) return malformed("bad status line " + quote(line));
  response_.status = status;
  return ok_status();
}

Status HttpResponseReader::on_header(std::string_view line) {
  size_t colon = line.find(':');
  // Tolerate junk and obsolete line folding: a probe only needs the framing headers.
  if (colon == std::string_view::npos) return ok_status();
  std::string_view name = trim(line.substr(0, colon));
  std::string_view value = trim(line.substr(colon + 1));
  if (iequals(name, "Content-Length")) {
    size_t length = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
      return malformed("bad Content-Length " + quote(value));
    }
    if (has_length_ && length != remaining_) return malformed("conflicting Content-Length");
    has_length_ = true;
    remaining_ = length;
  } else if (iequals(name, "Transfer-Encoding")) {
    // Only the last coding frames the message; anything but chunked runs until the close.
    size_t comma = value.rfind(',');
    std::string_view last = trim(comma == std::string_view::npos ? value : value.substr(comma + 1));
    chunked_ = iequals(last, "chunked");
    other_coding_ = !chunked_;
  }
  return ok_status();
}

Status HttpResponseReader::start_body() {
  int s = response_.status;
  if ((s >= 100 && s < 200) || s == 204 || s == 304) {
    stage_ = Stage::kDone;
  } else if (chunked_) {
    stage_ = Stage::kChunkSize;
  } else if (other_coding_ || !has_length_) {
    stage_ = Stage::kUntilClose;
  } else if (remaining_ > kMaxResponseBytes) {
    return Error("HTTP response body of " + std::to_string(remaining_) + " bytes exceeds the " +
                     limit_text(),
                 EMSGSIZE);
  } else {
    stage_ = remaining_ == 0 ? Stage::kDone : Stage::kFixed;
  }
  return ok_status();
}

Result<bool> HttpResponseReader::advance() {
  std::string_view line;
  for (;;) {
    std::string_view avail(buf_.data() + pos_, buf_.size() - pos_);
    switch (stage_) {
      case Stage::kStatusLine:
        if (!next_line(&line)) return false;
        PW_TRY(on_status_line(line));
        stage_ = Stage::kHeaders;
        break;
      case Stage::kHeaders:
        if (!next_line(&line)) return false;
        if (!line.empty()) {
          PW_TRY(on_header(line));
        } else if (response_.status < 200 && response_.status != 101) {
          // An interim response (100 Continue, 103 Early Hints): the real one follows.
          has_length_ = chunked_ = other_coding_ = false;
          remaining_ = 0;
          stage_ = Stage::kStatusLine;
        } else {
          PW_TRY(start_body());
        }
        break;
      case Stage::kFixed:
      case Stage::kChunkData: {
        size_t n = std::min(remaining_, avail.size());
        PW_TRY(append_body(avail.substr(0, n)));
        pos_ += n;
        remaining_ -= n;
        if (remaining_ > 0) return false;
        stage_ = stage_ == Stage::kFixed ? Stage::kDone : Stage::kChunkEnd;
        break;
      }
      case Stage::kChunkSize: {
        if (!next_line(&line)) return false;
        // chunk-size [; extensions]
        std::string_view hex = trim(line.substr(0, line.find(';')));
        size_t size = 0;
        auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), size, 16);
        if (hex.empty() || ec != std::errc() || end != hex.data() + hex.size()) {
          return malformed("bad chunk size " + quote(line));
        }
        if (size > kMaxResponseBytes) {
          return Error("HTTP response chunk of " + std::to_string(size) + " bytes exceeds the " +
                           limit_text(),
                       EMSGSIZE);
        }
        remaining_ = size;
        stage_ = size == 0 ? Stage::kTrailers : Stage::kChunkData;
        break;
      }
      case Stage::kChunkEnd:
        if (!next_line(&line)) return false;
        if (!line.empty()) return malformed("chunk data longer than its size");
        stage_ = Stage::kChunkSize;
        break;
      case Stage::kTrailers:
        if (!next_line(&line)) return false;
        if (line.empty()) stage_ = Stage::kDone;
        break;
      case Stage::kUntilClose:
        PW_TRY(append_body(avail));
        pos_ = buf_.size();
        return false;
      case Stage::kDone:
        return true;
    }
  }
}

}  // namespace prewarm::probe
