// Readiness probes (httpGet, tcpSocket, exec) and warm-up steps, run against one instance.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "spec/app_spec.h"

namespace prewarm::probe {

// Runs a command inside the instance and returns its exit code (implemented with `runc exec`).
using ExecFn = std::function<Result<int>(const std::vector<std::string>& cmd, spec::Millis timeout)>;

struct Target {
  std::string ip;  // the instance's address, reachable from the host
  ExecFn exec;
};

struct HttpResponse {
  int status = 0;
  std::string body;
};

// One HTTP/1.1 GET with "Connection: close" to ip:port; fails on connect/read errors or timeout.
Result<HttpResponse> http_get(const std::string& ip, int port, const std::string& path,
                              const std::map<std::string, std::string>& headers,
                              spec::Millis timeout);

// One probe attempt: ok when it succeeds (HTTP 200..399, TCP connect, exec exit 0).
Status check_once(const spec::Probe& probe, const Target& target);

struct WaitStats {
  int attempts = 0;
};

// Kubernetes startup semantics: waits initialDelay, then tries every period until one attempt
// succeeds; gives up after failureThreshold consecutive failures, returning the last failure.
Status wait_ready(const spec::Probe& probe, const Target& target, WaitStats* stats = nullptr);

// Runs each warm-up step `repeat` times; an HTTP step fails on a non-2xx/3xx status.
Status run_warmup(const std::vector<spec::WarmupStep>& steps, const Target& target);

}  // namespace prewarm::probe
