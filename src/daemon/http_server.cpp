#include "daemon/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"

namespace prewarm::daemon {
namespace {

constexpr size_t kMaxHeaderBytes = 64 << 10;
constexpr size_t kMaxBodyBytes = 16 << 20;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

}  // namespace

bool parse_request_head(std::string_view head, Request& r) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return false;
  r.method = std::string(line.substr(0, sp1));
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!line.substr(sp2 + 1).starts_with("HTTP/1.")) return false;
  size_t q = target.find('?');
  r.path = url_decode(target.substr(0, q));
  if (q != std::string_view::npos) {
    std::string_view qs = target.substr(q + 1);
    while (!qs.empty()) {
      size_t amp = qs.find('&');
      std::string_view kv = qs.substr(0, amp);
      size_t eq = kv.find('=');
      r.query[url_decode(kv.substr(0, eq))] =
          eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      qs.remove_prefix(amp + 1);
    }
  }
  size_t at = eol == std::string_view::npos ? head.size() : eol + 2;
  while (at < head.size()) {
    size_t end = head.find("\r\n", at);
    if (end == std::string_view::npos) end = head.size();
    std::string_view h = head.substr(at, end - at);
    size_t colon = h.find(':');
    if (colon == std::string_view::npos) return false;
    std::string_view v = h.substr(colon + 1);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    r.headers[lower(std::string(h.substr(0, colon)))] = std::string(v);
    at = end + 2;
  }
  return true;
}

namespace {

std::string head_of(const Response& resp, size_t length, bool keep_alive) {
  std::string h = "HTTP/1.1 " + std::to_string(resp.status) + " " + reason(resp.status) + "\r\n";
  h += "Content-Type: " + resp.content_type + "\r\n";
  for (const auto& [k, v] : resp.headers) h += k + ": " + v + "\r\n";
  if (resp.stream) {
    h += "Connection: close\r\nCache-Control: no-cache\r\n\r\n";
  } else {
    h += "Content-Length: " + std::to_string(length) + "\r\n";
    h += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  }
  return h;
}

}  // namespace

HttpServer::~HttpServer() { stop(); }

Status HttpServer::listen_unix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path)
    return Error(ErrorKind::kInvalidInput, "socket path too long: " + path);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::sys("socket", errno);
  ::unlink(path.c_str());
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Root only: created 0600 (umask around bind), not chmod'ed afterwards.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0) return Error::sys("bind", errno, path);
  if (::listen(fd.get(), 128) != 0) return Error::sys("listen", errno, path);
  unix_path_ = path;
  listeners_.emplace_back(std::move(fd), false);
  return {};
}

Status HttpServer::listen_tcp(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1)
    return Error(ErrorKind::kInvalidInput, "not an IPv4 address: " + host);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::sys("socket", errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::sys("bind", errno, host + ":" + std::to_string(port));
  if (::listen(fd.get(), 128) != 0) return Error::sys("listen", errno);
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  tcp_port_ = ntohs(addr.sin_port);
  listeners_.emplace_back(std::move(fd), true);
  return {};
}

void HttpServer::start() {
  for (auto& [fd, tcp] : listeners_) {
    int raw = fd.get();
    bool is_tcp = tcp;
    acceptors_.emplace_back([this, raw, is_tcp] { accept_loop(raw, is_tcp); });
  }
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  for (auto& [fd, tcp] : listeners_) ::shutdown(fd.get(), SHUT_RDWR);
  for (auto& t : acceptors_)
    if (t.joinable()) t.join();
  {
    std::lock_guard l(mu_);
    for (int c : open_conns_) ::shutdown(c, SHUT_RDWR);
  }
  // Connection threads are detached; wait until they have all left.
  for (int i = 0; i < 500 && active_.load() > 0; ++i) ::usleep(10000);
  listeners_.clear();
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

void HttpServer::accept_loop(int fd, bool tcp) {
  while (!stopping_) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 200);
    if (r <= 0) continue;
    int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    if (tcp) {
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    {
      std::lock_guard l(mu_);
      open_conns_.push_back(c);
    }
    ++active_;
    std::thread([this, c, tcp] {
      serve(UniqueFd(c), tcp);
      {
        std::lock_guard l(mu_);
        open_conns_.erase(std::remove(open_conns_.begin(), open_conns_.end(), c), open_conns_.end());
      }
      --active_;
    }).detach();
  }
}

void HttpServer::serve(UniqueFd conn, bool tcp) {
  std::string buf;
  char chunk[16384];
  for (;;) {
    // Head.
    size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > kMaxHeaderBytes) return;
      ssize_t n = ::recv(conn.get(), chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      buf.append(chunk, static_cast<size_t>(n));
    }
    Request req;
    req.over_tcp = tcp;
    Response resp;
    bool ok = parse_request_head(std::string_view(buf).substr(0, head_end), req);
    buf.erase(0, head_end + 4);
    size_t length = 0;
    if (ok && req.headers.count("transfer-encoding")) ok = false;  // not supported
    if (ok && req.headers.count("content-length")) {
      const std::string& cl = req.headers["content-length"];
      if (cl.empty() || cl.find_first_not_of("0123456789") != std::string::npos || cl.size() > 9)
        ok = false;
      else
        length = std::stoul(cl);
    }
    if (!ok) {
      resp.status = 400;
      resp.body = R"({"error":"malformed request","kind":"invalid input"})";
      send_all(conn.get(), head_of(resp, resp.body.size(), false) + resp.body);
      return;
    }
    if (length > kMaxBodyBytes) {
      resp.status = 413;
      resp.body = R"({"error":"request body over 16 MiB","kind":"invalid input"})";
      send_all(conn.get(), head_of(resp, resp.body.size(), false) + resp.body);
      return;
    }
    while (buf.size() < length) {
      ssize_t n = ::recv(conn.get(), chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      buf.append(chunk, static_cast<size_t>(n));
    }
    req.body = buf.substr(0, length);
    buf.erase(0, length);
    try {
      resp = handler_(req);
    } catch (const std::exception& e) {
      resp = Response{};
      resp.status = 500;
      resp.body = std::string(R"({"error":"internal error","kind":"runtime failure"})");
      log::warn(std::string("prewarmd: handler threw: ") + e.what());
    }
    const bool keep_alive = !resp.stream && lower(req.headers["connection"]) != "close";
    if (!send_all(conn.get(), head_of(resp, resp.body.size(), keep_alive))) return;
    if (resp.stream) {
      int fd = conn.get();
      resp.stream([fd](std::string_view piece) { return send_all(fd, piece); });
      return;
    }
    if (!send_all(conn.get(), resp.body) || !keep_alive) return;
  }
}

}  // namespace prewarm::daemon
