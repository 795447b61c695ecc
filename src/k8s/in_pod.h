// Runtime in runtime: prewarm as the entrypoint of a privileged pod container (no node
// changes). It restores the app as a nested container in the pod's own network namespace and
// under the pod container's cgroup, and stays in the foreground as the kubelet expects of a
// container's main process: the app's output is its output, SIGTERM and SIGINT go on to the
// app, and it exits with the app's exit status. A restore that cannot happen cold-starts the
// app from the same image, with the reason on stderr and in the outcome file.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "engine/context.h"

namespace prewarm::k8s {

struct InPodOptions {
  std::string image;     // the checkpoint image's local name
  std::string hostname;  // "" : this container's hostname (the pod's)
  bool cold = false;     // cold-start instead of restoring
  std::string paging;    // lifecycle::StartOptions::paging
  // What happened (restored or cold, and why), as JSON, for a controller or `kubectl exec`.
  std::filesystem::path outcome_file = "/run/prewarm/outcome.json";
};

// Runs the app until it exits; returns the exit code to exit with (the app's, or 128+signal).
// An error when neither a restore nor a cold start could run it.
Result<int> run_in_pod(const engine::Context& ctx, const InPodOptions& opts);

// This network namespace's first IPv4 address other than loopback (the pod IP), or "".
std::string pod_ip();

}  // namespace prewarm::k8s
