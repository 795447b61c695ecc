// Probes and warm-up against a real HTTP server on 127.0.0.1 (ephemeral port, no root).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "base/clock.h"
#include "base/unique_fd.h"
#include "probe/http_response.h"
#include "probe/probe.h"

namespace prewarm::probe {
namespace {

using namespace std::chrono_literals;
using spec::Millis;

// Waits for a client connection without a listen() backlog: binds 127.0.0.1:0 and reports it.
UniqueFd bind_loopback(int* port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(fd.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  *port = ntohs(addr.sin_port);
  return fd;
}

std::string response(int status, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " Whatever\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nContent-Type: text/plain\r\n\r\n" + body;
}

// A one-thread HTTP server: answers each connection with what the responder returns for the
// n-th request (from 0). By default it closes after answering, like "Connection: close"; with
// keep_open it instead waits for the client to close, like a keep-alive server.
class TestServer {
 public:
  using Responder = std::function<std::string(int index, const std::string& request)>;

  explicit TestServer(Responder responder, bool keep_open = false)
      : responder_(std::move(responder)), keep_open_(keep_open) {
    listen_ = bind_loopback(&port_);
    EXPECT_EQ(::listen(listen_.get(), 16), 0);
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    stop_r_.reset(p[0]);
    stop_w_.reset(p[1]);
    thread_ = std::thread([this] { run(); });
  }
  ~TestServer() {
    char c = 'x';
    (void)!::write(stop_w_.get(), &c, 1);
    thread_.join();
  }

  int port() const { return port_; }
  int requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::string last_request() {
    std::lock_guard lock(mu_);
    return last_request_;
  }
  // Waits (generously) until the server has seen `n` clients close their connection.
  bool wait_client_closes(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return client_closes_ >= n; });
  }

 private:
  // Polls `fd` and the stop pipe; false when stopping or after 10 s.
  bool wait_readable(int fd) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    int n = ::poll(p, 2, 10'000);
    return n > 0 && !(p[1].revents & POLLIN);
  }

  void run() {
    while (wait_readable(listen_.get())) {
      UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) continue;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos && wait_readable(conn.get())) {
        ssize_t n = ::recv(conn.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      int index;
      {
        std::lock_guard lock(mu_);
        index = requests_++;
        last_request_ = req;
      }
      std::string out = responder_(index, req);
      for (size_t off = 0; off < out.size();) {
        ssize_t n = ::send(conn.get(), out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (!keep_open_) continue;
      while (wait_readable(conn.get())) {
        ssize_t n = ::recv(conn.get(), buf, sizeof buf, 0);
        if (n > 0) continue;
        std::lock_guard lock(mu_);
        ++client_closes_;
        cv_.notify_all();
        break;
      }
    }
  }

  Responder responder_;
  bool keep_open_;
  int port_ = 0;
  UniqueFd listen_, stop_r_, stop_w_;
  std::mutex mu_;
  std::condition_variable cv_;
  int requests_ = 0;
  int client_closes_ = 0;
  std::string last_request_;
  std::thread thread_;
};

TestServer::Responder always(int status, const std::string& body = "ok") {
  return [=](int, const std::string&) { return response(status, body); };
}

spec::Probe http_probe(int port, const std::string& path = "/healthz") {
  spec::Probe p;
  p.http_get = spec::HttpGetAction{path, port, {}};
  p.period = 5ms;
  p.timeout = 5000ms;
  return p;
}

std::string url(int port, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(port) + path;
}

// ---- http_get ----

TEST(HttpGet, ReturnsStatusAndBodyAndSendsHeaders) {
  TestServer server(always(200, "hello"));
  auto r = http_get("127.0.0.1", server.port(), "/healthz", {{"X-Probe", "yes"}}, 5000ms);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  std::string req = server.last_request();
  EXPECT_EQ(req.rfind("GET /healthz HTTP/1.1\r\n", 0), 0u) << req;
  EXPECT_NE(req.find("\r\nHost: 127.0.0.1:" + std::to_string(server.port()) + "\r\n"),
            std::string::npos);
  EXPECT_NE(req.find("\r\nUser-Agent: prewarm-probe\r\n"), std::string::npos);
  EXPECT_NE(req.find("\r\nConnection: close\r\n"), std::string::npos);
  EXPECT_NE(req.find("\r\nX-Probe: yes\r\n"), std::string::npos);
}

TEST(HttpGet, HeadersOverrideDefaultsAndBadHeadersAreRefused) {
  TestServer server(always(200));
  auto r = http_get("127.0.0.1", server.port(), "/", {{"host", "app.example"}}, 5000ms);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  std::string req = server.last_request();
  EXPECT_NE(req.find("\r\nHost: app.example\r\n"), std::string::npos) << req;
  EXPECT_EQ(req.find("127.0.0.1:"), std::string::npos) << req;

  auto bad = http_get("127.0.0.1", server.port(), "/", {{"X-A", "1\r\nX-B: 2"}}, 5000ms);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("invalid header"), std::string::npos);
}

TEST(HttpGet, ReturnsWithoutWaitingForTheServerToClose) {
  // A keep-alive server never closes first; Content-Length (or the last chunk) ends the read,
  // and the server must then see our close.
  TestServer server(always(200, "done"), /*keep_open=*/true);
  for (int i = 0; i < 3; ++i) {
    auto r = http_get("127.0.0.1", server.port(), "/", {}, 10'000ms);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(r->body, "done");
  }
  EXPECT_TRUE(server.wait_client_closes(3));
}

TEST(HttpGet, DecodesChunkedBody) {
  TestServer server(
      [](int, const std::string&) {
        return std::string(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n");
      },
      /*keep_open=*/true);
  auto r = http_get("127.0.0.1", server.port(), "/", {}, 10'000ms);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello, world");
  EXPECT_TRUE(server.wait_client_closes(1));
}

TEST(HttpGet, ReadsBodyUntilCloseWithoutContentLength) {
  TestServer server([](int, const std::string&) {
    return std::string("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close");
  });
  auto r = http_get("127.0.0.1", server.port(), "/", {}, 5000ms);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->body, "until close");
}

TEST(HttpGet, ConnectionRefused) {
  int port = 0;
  UniqueFd bound = bind_loopback(&port);  // bound, not listening: the kernel answers RST
  auto r = http_get("127.0.0.1", port, "/healthz", {}, 5000ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "httpGet " + url(port, "/healthz") + ": connection refused");
  EXPECT_EQ(r.error().errno_value(), ECONNREFUSED);
}

TEST(HttpGet, TimesOutWhenTheServerNeverAnswers) {
  int port = 0;
  UniqueFd silent = bind_loopback(&port);
  ASSERT_EQ(::listen(silent.get(), 16), 0);  // the kernel accepts; nobody ever answers
  Stopwatch sw;
  auto r = http_get("127.0.0.1", port, "/slow", {}, 100ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "httpGet " + url(port, "/slow") + ": timed out after 100 ms");
  EXPECT_EQ(r.error().errno_value(), ETIMEDOUT);
  EXPECT_GE(sw.millis(), 99.0);
}

TEST(HttpGet, RejectsBadAddressAndPort) {
  EXPECT_FALSE(http_get("not-an-ip", 80, "/", {}, 100ms).ok());
  auto r = http_get("127.0.0.1", 0, "/", {}, 100ms);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("invalid port 0"), std::string::npos);
}

TEST(HttpGet, RefusesOversizedResponses) {
  TestServer declared([](int, const std::string&) {
    return std::string("HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n");
  });
  auto r = http_get("127.0.0.1", declared.port(), "/", {}, 5000ms);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("exceeds the 1 MiB limit"), std::string::npos);

  TestServer streamed([](int, const std::string&) {
    return "HTTP/1.0 200 OK\r\n\r\n" + std::string(kMaxResponseBytes + 100'000, 'x');
  });
  auto s = http_get("127.0.0.1", streamed.port(), "/", {}, 5000ms);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("exceeds the 1 MiB limit"), std::string::npos);
}

// ---- HttpResponseReader ----

HttpResponse read_bytewise(const std::string& raw, bool close_at_end) {
  HttpResponseReader reader;
  for (char c : raw) {
    auto r = reader.feed(std::string_view(&c, 1));
    EXPECT_TRUE(r.ok()) << r.error().message();
    if (r.ok() && *r) return reader.take();
  }
  if (close_at_end) {
    Status s = reader.finish();
    EXPECT_TRUE(s.ok()) << s.error().message();
  }
  EXPECT_TRUE(reader.done());
  return reader.take();
}

TEST(HttpResponseReader, ParsesFramingFedOneByteAtATime) {
  auto fixed = read_bytewise("HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nabc", false);
  EXPECT_EQ(fixed.status, 201);
  EXPECT_EQ(fixed.body, "abc");

  auto chunked = read_bytewise(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
      "A\r\n0123456789\r\n1 ; x=y\r\n!\r\n0\r\n\r\n",
      false);
  EXPECT_EQ(chunked.body, "0123456789!");

  auto interim = read_bytewise(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n", false);
  EXPECT_EQ(interim.status, 204);
  EXPECT_EQ(interim.body, "");

  auto until_close = read_bytewise("HTTP/1.0 503 Busy\n\nbare LF", true);
  EXPECT_EQ(until_close.status, 503);
  EXPECT_EQ(until_close.body, "bare LF");
}

TEST(HttpResponseReader, RejectsMalformedAndTruncatedResponses) {
  for (std::string raw : {"SSH-2.0-OpenSSH\r\n", "HTTP/1.1 2x0 OK\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"}) {
    HttpResponseReader reader;
    EXPECT_FALSE(reader.feed(raw).ok()) << raw;
  }
  HttpResponseReader truncated;
  ASSERT_TRUE(truncated.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").ok());
  Status s = truncated.finish();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "connection closed before the response was complete");
  HttpResponseReader empty;
  EXPECT_FALSE(empty.finish().ok());
}

// ---- check_once ----

TEST(CheckOnce, HttpSuccessIs200To399) {
  for (int status : {200, 204, 302, 399}) {
    TestServer server(always(status));
    EXPECT_TRUE(check_once(http_probe(server.port()), Target{"127.0.0.1", {}}).ok()) << status;
  }
}

TEST(CheckOnce, Http503FailsWithStatusAndBody) {
  TestServer server(always(503, "warming up"));
  Status s = check_once(http_probe(server.port()), Target{"127.0.0.1", {}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "httpGet " + url(server.port(), "/healthz") + ": HTTP 503");
  EXPECT_EQ(s.error().detail(), "response body: warming up");
}

TEST(CheckOnce, TcpSocket) {
  TestServer server(always(200));
  spec::Probe p;
  p.tcp_socket = spec::TcpSocketAction{server.port()};
  EXPECT_TRUE(check_once(p, Target{"127.0.0.1", {}}).ok());

  int port = 0;
  UniqueFd bound = bind_loopback(&port);
  p.tcp_socket->port = port;
  Status s = check_once(p, Target{"127.0.0.1", {}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "tcpSocket 127.0.0.1:" + std::to_string(port) +
                                     ": connection refused");
}

TEST(CheckOnce, ExecUsesTheTargetAndItsExitCode) {
  std::vector<std::string> seen_cmd;
  Millis seen_timeout{0};
  int exit_code = 0;
  Target target{"127.0.0.1", [&](const std::vector<std::string>& cmd, Millis timeout) {
                  seen_cmd = cmd;
                  seen_timeout = timeout;
                  return Result<int>(exit_code);
                }};
  spec::Probe p;
  p.exec = spec::ExecAction{{"cat", "/tmp/ready"}};
  p.timeout = 1234ms;
  EXPECT_TRUE(check_once(p, target).ok());
  EXPECT_EQ(seen_cmd, (std::vector<std::string>{"cat", "/tmp/ready"}));
  EXPECT_EQ(seen_timeout, 1234ms);

  exit_code = 1;
  Status s = check_once(p, target);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "exec [cat /tmp/ready]: exit code 1");

  Target failing{"127.0.0.1", [](const std::vector<std::string>&, Millis) {
                   return Result<int>(Error("runc exec: container not running"));
                 }};
  s = check_once(p, failing);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "exec [cat /tmp/ready]: runc exec: container not running");

  EXPECT_FALSE(check_once(p, Target{"127.0.0.1", {}}).ok());  // no exec function
  p.exec->command.clear();
  s = check_once(p, target);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "exec: empty command");
}

TEST(CheckOnce, ProbeWithoutHandlerFails) {
  EXPECT_FALSE(check_once(spec::Probe{}, Target{"127.0.0.1", {}}).ok());
}

// ---- wait_ready ----

TEST(WaitReady, RetriesUntilReady) {
  TestServer server([](int i, const std::string&) { return response(i < 2 ? 503 : 200, "x"); });
  spec::Probe p = http_probe(server.port());
  p.failure_threshold = 5;
  WaitStats stats;
  Status s = wait_ready(p, Target{"127.0.0.1", {}}, &stats);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(stats.attempts, 3);
  EXPECT_EQ(server.requests(), 3);
}

TEST(WaitReady, GivesUpAfterFailureThreshold) {
  TestServer server(always(503));
  spec::Probe p = http_probe(server.port());
  p.failure_threshold = 3;
  WaitStats stats;
  Status s = wait_ready(p, Target{"127.0.0.1", {}}, &stats);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "readiness probe failed 3 times; last: httpGet " +
                                     url(server.port(), "/healthz") + ": HTTP 503");
  EXPECT_EQ(stats.attempts, 3);
  EXPECT_EQ(server.requests(), 3);
}

TEST(WaitReady, ConnectionRefusedCountsAsFailure) {
  int port = 0;
  UniqueFd bound = bind_loopback(&port);
  spec::Probe p = http_probe(port);
  p.failure_threshold = 4;
  WaitStats stats;
  Status s = wait_ready(p, Target{"127.0.0.1", {}}, &stats);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("failed 4 times; last: httpGet"), std::string::npos);
  EXPECT_NE(s.error().message().find("connection refused"), std::string::npos);
  EXPECT_EQ(stats.attempts, 4);
}

TEST(WaitReady, HonoursInitialDelayAndPeriod) {
  std::atomic<int> calls{0};
  Target target{"127.0.0.1", [&](const std::vector<std::string>&, Millis) {
                  return Result<int>(++calls >= 3 ? 0 : 1);
                }};
  spec::Probe p;
  p.exec = spec::ExecAction{{"true"}};
  p.initial_delay = 50ms;
  p.period = 20ms;
  WaitStats stats;
  Stopwatch sw;
  Status s = wait_ready(p, target, &stats);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(stats.attempts, 3);
  // Lower bounds only: sleeps never end early, but a loaded machine may make them long.
  EXPECT_GE(sw.millis(), 50.0 + 2 * 20.0 - 1.0);
}

// ---- run_warmup ----

TEST(RunWarmup, RunsEachStepRepeatTimes) {
  TestServer server(always(200));
  int execs = 0;
  Target target{"127.0.0.1", [&](const std::vector<std::string>&, Millis) {
                  ++execs;
                  return Result<int>(0);
                }};
  std::vector<spec::WarmupStep> steps(2);
  steps[0].http_get = spec::HttpGetAction{"/warm", server.port(), {}};
  steps[0].repeat = 5;
  steps[1].exec = spec::ExecAction{{"sh", "-c", "true"}};
  steps[1].repeat = 3;
  Status s = run_warmup(steps, target);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(server.requests(), 5);
  EXPECT_EQ(execs, 3);
  EXPECT_NE(server.last_request().find("GET /warm "), std::string::npos);
}

TEST(RunWarmup, ErrorNamesStepAndAttempt) {
  TestServer server([](int i, const std::string&) { return response(i < 2 ? 200 : 500, ""); });
  std::vector<spec::WarmupStep> steps(2);
  steps[0].exec = spec::ExecAction{{"true"}};
  steps[1].http_get = spec::HttpGetAction{"/warm", server.port(), {}};
  steps[1].repeat = 20;
  Target target{"127.0.0.1",
                [](const std::vector<std::string>&, Millis) { return Result<int>(0); }};
  Status s = run_warmup(steps, target);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message(), "warmup[1] (attempt 3/20): httpGet " +
                                     url(server.port(), "/warm") + ": HTTP 500");
  EXPECT_EQ(server.requests(), 3);
}

}  // namespace
}  // namespace prewarm::probe
