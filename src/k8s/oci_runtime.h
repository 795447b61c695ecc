// The runc-compatible OCI runtime behind RuntimeClass `prewarm`: containerd's stock runc shim
// (io.containerd.runc.v2 with BinaryName) or CRI-O call it with runc's command line. Every call
// goes to runc unchanged, except `create` of a pod container whose OCI spec carries the
// annotation prewarm.dev/checkpoint: that container is restored from the named checkpoint
// instead, into the pod's network namespace and cgroup, on the container image's rootfs plus
// the checkpoint's rootfs changes, with the shim's pipes as its stdio. The following `start` is
// then a no-op; state, kill, exec and delete stay runc's. A restore that cannot happen becomes
// runc's own `create` (a cold start), with the reason in the container's log and in
// /run/prewarm/pods/<container id>.json.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "k8s/runc_call.h"

namespace prewarm::k8s {

// Pod annotation (passed on by containerd's pod_annotations) naming a checkpoint: an image in
// the node's store, or REGISTRY/REPO:TAG pulled into it on demand.
inline constexpr std::string_view kCheckpointAnnotation = "prewarm.dev/checkpoint";
// Where the runtime keeps what it made for a restored container (the overlay over the pod's
// rootfs, the bundle it restored from) and the outcome of each create it intercepted.
inline constexpr const char* kPodStateDir = "/run/prewarm/pods";

// What happened to one intercepted create, as kPodStateDir/<id>.json holds it.
struct PodOutcome {
  std::string container_id;
  std::string checkpoint;     // the annotation's value
  std::string image;          // the local image name restored from ("" : none)
  bool restored = false;      // false: cold start
  std::string reason;         // why it cold-started
  double restore_ms = 0;      // create → restored (image checks, rootfs, CRIU, identity)
  double pull_ms = 0;         // time spent pulling the checkpoint onto this node (0: it was here)
  std::string pid;
  // For the calls that follow (direct_calls.cpp): the backend that restored it ("criu" or
  // "runc"), its cgroup, bundle and creation time (RFC 3339).
  std::string runtime;
  std::string cgroup, bundle, created;
};
// Reads kPodStateDir/<id>.json; kNotFound when there is none.
Result<PodOutcome> read_outcome(const std::string& id);
std::string outcome_json(const PodOutcome& o);

// The whole runtime: `prewarm-runtime ARGS...` (argv[0] named so) or `prewarm runtime ARGS...`.
// Returns the exit code when it does not replace itself with runc.
int runtime_main(const std::vector<std::string>& args);

}  // namespace prewarm::k8s
