// Restoring a pod's container from a checkpoint where runc would create it.
#pragma once

#include <string>

#include "k8s/oci_runtime.h"

namespace prewarm::k8s {

// The runc this wrapper hands calls to: $PREWARM_RUNC, else `runc` on PATH.
std::string runc_binary();

// For `create`: restores the container when its spec asks for a checkpoint and the restore
// succeeds (true: runc's create must not run). false: the caller runs runc's create (a cold
// start) — the spec did not ask, or the restore could not happen; then the reason is in the
// container's log and kPodStateDir/<id>.json, and nothing of the attempt is left.
bool restore_if_asked(const RuncCall& call);

// For `start`: whether create restored this container (it is running already).
bool was_restored(const std::string& id);

// runc's state, kill, delete, exec, ps, pause, resume and update for a container restored by
// direct CRIU (outcome.runtime "criu"), with runc's output formats and exit codes.
int direct_call(const RuncCall& call, const PodOutcome& outcome);

// After runc deleted a container: removes what the restore made for it (overlay, bundle,
// outcome file). Nothing there is fine.
void release_pod_container(const std::string& id);

}  // namespace prewarm::k8s
