// A real OCI registry for tests: Debian's docker-registry (distribution) serving a temporary
// directory on 127.0.0.1, and a loopback TCP proxy in front of it that cuts or corrupts traffic.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/fs.h"
#include "base/result.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "registry/http.h"
#include "support/files.h"
#include "support/loopback.h"

namespace prewarm::testing {

inline constexpr const char* kRegistryBin = "/usr/bin/docker-registry";

// Why registry tests cannot run here, or empty when they can.
inline std::string registry_skip_reason() {
  if (::access(kRegistryBin, X_OK) != 0)
    return std::string(kRegistryBin) + " is missing (Debian package docker-registry)";
  return {};
}

inline bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// docker-registry serving one temporary directory, stopped (SIGTERM, then SIGKILL) by PID.
class RegistryServer {
 public:
  struct Config {
    std::string tls_cert, tls_key;  // HTTPS when set
    std::string auth;               // the YAML "auth:" section, if any
  };

  Status start(const std::filesystem::path& dir, const Config& cfg = {}) {
    dir_ = dir;
    port_ = free_port();
    https_ = !cfg.tls_cert.empty();
    ca_file_ = cfg.tls_cert;
    std::string yaml = "version: 0.1\n"
                       "log:\n  level: info\n  accesslog:\n    disabled: true\n"
                       "storage:\n  filesystem:\n    rootdirectory: " + (dir / "data").string() +
                       "\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n"
                       "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                       "http:\n  addr: 127.0.0.1:" + std::to_string(port_) +
                       "\n  secret: prewarm-test-secret\n";
    if (https_)
      yaml += "  tls:\n    certificate: " + cfg.tls_cert + "\n    key: " + cfg.tls_key + "\n";
    yaml += cfg.auth;
    PW_TRY(fs::make_dirs(dir));
    PW_TRY(fs::write_file(dir / "config.yml", yaml));
    UniqueFd log(::open((dir / "registry.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    SpawnOptions so;
    so.argv = {kRegistryBin, "serve", (dir / "config.yml").string()};
    so.stdout_fd = log.get();
    so.stderr_fd = log.get();
    PW_ASSIGN(child_, spawn(so));
    // Ready when /v2/ answers at all (200, or 401 with auth).
    registry::http::Client client(registry::http::TransportOptions{
        ca_file_, std::chrono::milliseconds(500), std::chrono::milliseconds(2000),
        std::chrono::milliseconds(2000)});
    for (int i = 0; i < 200; ++i) {
      registry::http::Request req;
      req.url = url() + "/v2/";
      auto r = client.perform(req);
      if (r.ok() && r->status > 0) return ok_status();
      if (auto w = child_.wait(std::chrono::milliseconds(50)); w.ok())
        return Error("docker-registry exited: " + slurp(dir / "registry.log"));
    }
    return Error("docker-registry did not answer on port " + std::to_string(port_) + ": " +
                 slurp(dir / "registry.log"));
  }

  ~RegistryServer() { stop(); }
  void stop() {
    if (child_.pid() <= 0) return;
    child_.kill(SIGTERM);
    if (!child_.wait(std::chrono::seconds(5)).ok()) child_.kill(SIGKILL);
    child_ = Child();  // reaps
  }

  uint16_t port() const { return port_; }
  pid_t pid() const { return child_.pid(); }
  std::string url() const { return (https_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(port_); }
  std::string log() const { return slurp(dir_ / "registry.log"); }

 private:
  std::filesystem::path dir_;
  uint16_t port_ = 0;
  bool https_ = false;
  std::string ca_file_;
  Child child_;
};

// A loopback TCP proxy that can cut a connection after some bytes (once) or flip a byte, by
// offset or where given content passes.
class TcpProxy {
 public:
  explicit TcpProxy(uint16_t upstream) : upstream_(upstream) {
    listen_ = listen_loopback(&port_);
    accept_ = std::thread([this] { accept_loop(); });
  }
  ~TcpProxy() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    held_cv_.notify_all();
    ::shutdown(listen_.get(), SHUT_RDWR);
    accept_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : conns_) t.join();
  }
  uint16_t port() const { return port_; }
  // The next `n` bytes from the registry (on any connection) pass, then that connection is cut.
  void cut_download_after(int64_t n) { down_seen_ = 0, down_cut_ = n; }
  void cut_upload_after(int64_t n) { up_seen_ = 0, up_cut_ = n; }
  // The nth request starting with `method` (counted over all connections) reaches the
  // registry without its body: the connection is cut right after the request's headers.
  void cut_request_body(const std::string& method, int nth) {
    std::lock_guard lock(mu_);
    cut_method_ = method + " ";
    cut_nth_ = nth;
    requests_seen_ = 0;
  }
  // On every connection, the byte at this offset of the registry's stream is inverted.
  void flip_download_at(int64_t offset) { flip_at_ = offset; }
  // On every connection, the last byte of every occurrence of `needle` in the registry's
  // stream is inverted: a blob's body (with a needle taken from it) arrives corrupted however
  // the client's requests are spread over connections.
  void flip_download_matching(std::string needle) {
    std::lock_guard lock(mu_);
    flip_needle_ = std::move(needle);
  }
  // The first occurrence of `needle` in the registry's stream (any connection) is cut in half:
  // its first half passes, then that connection is cut. Once.
  void cut_download_in(std::string needle) {
    std::lock_guard lock(mu_);
    cut_needle_ = std::move(needle);
  }
  // Requests (client to registry) that contain `needle` are held back, their connection
  // stalled, until release_held(): e.g. one blob's download, while the rest of a pull goes on.
  void hold_requests_containing(std::string needle) {
    std::lock_guard lock(mu_);
    hold_needle_ = std::move(needle);
  }
  void release_held() {
    {
      std::lock_guard lock(mu_);
      hold_needle_.clear();
    }
    held_cv_.notify_all();
  }
  int held() const { return held_; }
  int cuts() const { return cuts_; }
  int flips() const { return flips_; }

 private:
  void accept_loop() {
    while (!stopping_) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;
      }
      UniqueFd client(fd);
      UniqueFd server = connect_loopback(upstream_);
      if (!server.valid()) continue;
      std::lock_guard lock(mu_);
      open_.insert(client.get());
      open_.insert(server.get());
      conns_.emplace_back([this, c = std::move(client), s = std::move(server)]() mutable {
        pump(c.get(), s.get());
        std::lock_guard lock(mu_);
        open_.erase(c.get());
        open_.erase(s.get());
        c.reset();
        s.reset();
      });
    }
  }

  // How many of n bytes may pass before a cut, or n when not cutting.
  size_t allowance(std::atomic<int64_t>& cut, std::atomic<int64_t>& seen, size_t n) {
    int64_t limit = cut;
    if (limit < 0) return n;
    int64_t before = seen.fetch_add(static_cast<int64_t>(n));
    if (before + static_cast<int64_t>(n) <= limit) return n;
    cut = -1;
    ++cuts_;
    return static_cast<size_t>(std::max<int64_t>(0, limit - before));
  }

  // How much of a client buffer to forward when cutting after a request's headers.
  size_t headers_only(std::string_view data) {
    std::lock_guard lock(mu_);
    if (cut_nth_ <= 0 || !data.starts_with(cut_method_)) return data.size();
    if (++requests_seen_ < cut_nth_) return data.size();
    cut_nth_ = 0;
    ++cuts_;
    headers_cut_ = true;
    size_t end = data.find("\r\n\r\n");
    return end == std::string_view::npos ? data.size() - 1 : end + 4;
  }

  // Applies the needle rules to one buffer from the registry. `tail` holds the end of what
  // this connection passed before (a match may start there); a match's last byte is always
  // in buf. Returns how many bytes of buf may pass, fewer when cutting.
  size_t match_needles(std::string& tail, char* buf, size_t n, bool* cut) {
    std::string flip, cut_at;
    {
      std::lock_guard lock(mu_);
      flip = flip_needle_;
      cut_at = cut_needle_;
    }
    size_t keep = std::max(flip.size(), cut_at.size());
    if (keep == 0) return n;
    std::string window = tail + std::string(buf, n);
    // Only matches that end in buf: the others were seen with the previous buffer.
    auto first = [&](const std::string& needle) {
      return tail.size() >= needle.size() ? tail.size() - needle.size() + 1 : 0;
    };
    size_t pass = n;
    if (!flip.empty())
      for (size_t m = window.find(flip, first(flip)); m != std::string::npos;
           m = window.find(flip, m + 1)) {
        buf[m + flip.size() - 1 - tail.size()] ^= 0xff;
        ++flips_;
      }
    if (!cut_at.empty()) {
      size_t m = window.find(cut_at, first(cut_at));
      std::lock_guard lock(mu_);
      if (m != std::string::npos && cut_needle_ == cut_at) {
        cut_needle_.clear();
        ++cuts_;
        *cut = true;
        size_t half = m + cut_at.size() / 2;
        pass = half > tail.size() ? std::min(n, half - tail.size()) : 0;
      }
    }
    tail = window.substr(window.size() - std::min(window.size(), keep - 1));
    return pass;
  }

  void pump(int client, int server) {
    std::vector<char> buf(64 << 10);
    int64_t down_offset = 0;
    std::string down_tail;
    pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (!stopping_) {
      if (::poll(p, 2, 200) < 0 && errno != EINTR) return;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::recv(p[i].fd, buf.data(), buf.size(), 0);
        if (n <= 0) return;
        bool down = i == 1;
        size_t pass = down ? allowance(down_cut_, down_seen_, static_cast<size_t>(n))
                           : allowance(up_cut_, up_seen_, static_cast<size_t>(n));
        bool cut = pass < static_cast<size_t>(n);
        if (!down) {
          std::unique_lock lock(mu_);
          if (!hold_needle_.empty() &&
              std::string_view(buf.data(), n).find(hold_needle_) != std::string_view::npos) {
            ++held_;
            held_cv_.wait(lock, [&] { return hold_needle_.empty() || stopping_; });
          }
        }
        if (!down) {
          size_t headers = headers_only(std::string_view(buf.data(), pass));
          bool cut_here = headers_cut_.exchange(false);  // always consume the flag
          cut = cut || cut_here;
          pass = std::min(pass, headers);
        }
        if (down) {
          int64_t flip = flip_at_;
          if (flip >= down_offset && flip < down_offset + n) buf[flip - down_offset] ^= 0xff;
          down_offset += n;
          bool cut_here = false;
          pass = std::min(pass, match_needles(down_tail, buf.data(), pass, &cut_here));
          cut = cut || cut_here;
        }
        if (!send_all(p[1 - i].fd, buf.data(), pass)) return;
        if (cut) {
          ::shutdown(client, SHUT_RDWR);
          ::shutdown(server, SHUT_RDWR);
          return;
        }
      }
    }
  }

  uint16_t upstream_;
  uint16_t port_ = 0;
  UniqueFd listen_;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> down_cut_{-1}, down_seen_{0}, up_cut_{-1}, up_seen_{0}, flip_at_{-1};
  std::atomic<int> cuts_{0};
  std::atomic<int> flips_{0};
  std::atomic<bool> headers_cut_{false};
  std::mutex mu_;
  std::string cut_method_;
  std::string flip_needle_, cut_needle_, hold_needle_;
  std::condition_variable held_cv_;
  std::atomic<int> held_{0};
  int cut_nth_ = 0;
  int requests_seen_ = 0;
  std::set<int> open_;
  std::vector<std::thread> conns_;
  std::thread accept_;
};

}  // namespace prewarm::testing
