// prewarmd: the node daemon. It owns the node's instances and pools and serves the versioned
// JSON API described in docs/api/openapi.yaml over a unix socket (root only) and, optionally,
// TCP with a bearer token. At start it reconciles with what is running (recovery adopts ready
// and parked instances and removes half-made ones), so a restart or a crash loses nothing.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/events.h"
#include "daemon/http_server.h"
#include "daemon/metrics.h"
#include "daemon/pools.h"
#include "engine/context.h"

namespace prewarm::daemon {

inline constexpr const char* kDefaultSocket = "/run/prewarm/prewarmd.sock";
inline constexpr const char* kApiVersion = "v1";

struct Options {
  std::string socket = kDefaultSocket;
  std::string tcp;         // "HOST:PORT", "" for none
  std::string token_file;  // required with tcp: the bearer token (first line)
  std::string pools_file;  // YAML: pools: [{image, min, max, paging}], applied at start
};

class Daemon {
 public:
  Daemon(engine::Context ctx, Options opts);
  ~Daemon();
  // Recovers, applies the pools file, listens. Returns once serving.
  Status start();
  void stop();
  int tcp_port() const { return server_ ? server_->tcp_port() : 0; }
  Response handle(const Request& req);

 private:
  Response route(const Request& req, std::string& route_name);

  engine::Context ctx_;
  Options opts_;
  std::string token_;
  Metrics metrics_;
  Events events_;
  std::unique_ptr<Pools> pools_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace prewarm::daemon
