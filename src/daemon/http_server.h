// A small HTTP/1.1 server for prewarmd's API: a unix socket (and optionally TCP), a thread per
// connection, requests with a Content-Length body, answers with a body or streamed (the event
// stream). Enough for a local control API; not a general web server.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::daemon {

struct Request {
  std::string method;
  std::string path;                           // without the query
  std::map<std::string, std::string> query;   // decoded
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  bool over_tcp = false;
};

// Writes a streamed answer's body, a piece at a time; false once the client has gone.
using StreamWriter = std::function<bool(std::string_view)>;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Set: the body is streamed by this (after the headers; the connection closes after it).
  std::function<void(const StreamWriter&)> stream;
  std::map<std::string, std::string> headers;
};

using Handler = std::function<Response(const Request&)>;

// The request line and headers (without the blank line that ends them) into r: method, path and
// query decoded, header names lowercased. False when malformed.
bool parse_request_head(std::string_view head, Request& r);

class HttpServer {
 public:
  explicit HttpServer(Handler handler) : handler_(std::move(handler)) {}
  ~HttpServer();

  // A unix socket at path (an old socket file there is replaced), mode 0600.
  Status listen_unix(const std::string& path);
  // host:port (e.g. 127.0.0.1:7070); port 0 picks one (tcp_port() says which).
  Status listen_tcp(const std::string& host, int port);
  int tcp_port() const { return tcp_port_; }
  // Serves until stop().
  void start();
  void stop();

 private:
  void accept_loop(int fd, bool tcp);
  void serve(UniqueFd conn, bool tcp);

  Handler handler_;
  std::vector<std::pair<UniqueFd, bool>> listeners_;  // fd, is tcp
  std::vector<std::thread> acceptors_;
  std::string unix_path_;
  int tcp_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<int> open_conns_;
  std::atomic<int> active_{0};
};

}  // namespace prewarm::daemon
