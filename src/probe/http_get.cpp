// http_get: one HTTP/1.1 GET over a plain socket, bounded by a single deadline.
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <string_view>

#include "probe/http_response.h"
#include "probe/probe.h"
#include "probe/tcp_client.h"

namespace prewarm::probe {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Header names and values, and the path, go on the wire verbatim: refuse anything that would
// split the request line or smuggle extra headers.
bool has_control_chars(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  }
  return false;
}

Result<std::string> build_request(const std::string& host, const std::string& path,
                                  const std::map<std::string, std::string>& headers) {
  if (path.find(' ') != std::string::npos || has_control_chars(path)) {
    return Error("invalid path: spaces and control characters must be percent-encoded", EINVAL);
  }
  // Kubernetes lets httpHeaders override the defaults (Host in particular).
  std::vector<std::pair<std::string, std::string>> fields = {
      {"Host", host}, {"User-Agent", "prewarm-probe"}, {"Accept", "*/*"}, {"Connection", "close"}};
  for (const auto& [name, value] : headers) {
    if (name.empty() || name.find_first_of(": \t") != std::string::npos ||
        has_control_chars(name) || has_control_chars(value)) {
      return Error("invalid header \"" + name + "\"", EINVAL);
    }
    bool replaced = false;
    for (auto& field : fields) {
      if (iequals(field.first, name)) {
        field.second = value;
        replaced = true;
      }
    }
    if (!replaced) fields.emplace_back(name, value);
  }
  std::string req = "GET " + path + " HTTP/1.1\r\n";
  for (const auto& [name, value] : fields) req += name + ": " + value + "\r\n";
  req += "\r\n";
  return req;
}

Status send_all(int fd, std::string_view data, const Deadline& deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      PW_TRY(wait_fd(fd, POLLOUT, deadline));
    } else if (errno != EINTR) {
      return Error::sys("send", errno);
    }
  }
  return ok_status();
}

Result<HttpResponse> receive_response(int fd, const Deadline& deadline) {
  HttpResponseReader reader;
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      PW_ASSIGN(bool complete, reader.feed(std::string_view(buf, static_cast<size_t>(n))));
      // Don't wait for the server's close: Content-Length or the last chunk says we are done.
      if (complete) return reader.take();
    } else if (n == 0) {
      PW_TRY(reader.finish());
      return reader.take();
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      PW_TRY(wait_fd(fd, POLLIN, deadline));
    } else if (errno != EINTR) {
      if (errno == ECONNRESET) return Error("connection reset by the server", errno);
      return Error::sys("recv", errno);
    }
  }
}

Result<HttpResponse> get(const std::string& ip, int port, const std::string& path,
                         const std::map<std::string, std::string>& headers,
                         spec::Millis timeout) {
  Deadline deadline(timeout);
  PW_ASSIGN(std::string request, build_request(ip + ":" + std::to_string(port), path, headers));
  PW_ASSIGN(UniqueFd fd, connect_tcp(ip, port, deadline));
  PW_TRY(send_all(fd.get(), request, deadline));
  // `fd` closes on return, right after the response: the app sees our FIN at once, so no
  // ESTABLISHED connection is left behind to block quiescing before a checkpoint.
  return receive_response(fd.get(), deadline);
}

}  // namespace

Result<HttpResponse> http_get(const std::string& ip, int port, const std::string& path,
                              const std::map<std::string, std::string>& headers,
                              spec::Millis timeout) {
  std::string p = path.empty() || path.front() != '/' ? "/" + path : path;
  auto r = get(ip, port, p, headers, timeout);
  if (!r.ok()) {
    return std::move(r).error().with_context("httpGet http://" + ip + ":" +
                                             std::to_string(port) + p);
  }
  return r;
}

}  // namespace prewarm::probe
