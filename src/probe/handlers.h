// One attempt of each probe handler, shared by readiness probes and warm-up steps (internal).
#pragma once

#include <string>

#include "base/result.h"
#include "probe/probe.h"
#include "spec/app_spec.h"

namespace prewarm::probe {

// GET succeeds on HTTP 200..399 (Kubernetes); other statuses fail with "HTTP <status>" and the
// start of the body as detail.
Status check_http(const spec::HttpGetAction& action, const std::string& ip, spec::Millis timeout);

// Connects and closes at once.
Status check_tcp(const spec::TcpSocketAction& action, const std::string& ip,
                 spec::Millis timeout);

// Runs the command through target.exec; succeeds on exit code 0.
Status check_exec(const spec::ExecAction& action, const Target& target, spec::Millis timeout);

}  // namespace prewarm::probe
