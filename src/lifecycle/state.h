// The states of an instance, one state machine for the CLI, the daemon, pools and pods:
//
//   preparing ─► restoring ─► restored ─► personalising ─► ready ─► stopping ─► (gone)
//       │            │                                      ▲
//       └────────────┴─► starting (cold, also the fallback) ─┘        any ─► failed
//
// restored: the tasks exist, frozen, and have not run since the checkpoint (a pool parks here;
// only parked instances record it, so it is a resting state like ready).
// A state is what the record says; whether the processes live is the runtime's to say.
#pragma once

#include <optional>
#include <string_view>

namespace prewarm::lifecycle {

enum class InstanceState {
  kPreparing,      // directory, lock, network, rootfs, bundle being made
  kRestoring,      // the runtime is restoring the checkpoint
  kRestored,       // restored, not yet personalised or resumed
  kPersonalising,  // identity being applied, then readiness probed
  kStarting,       // cold start (asked for, or the fallback of a failed restore)
  kReady,          // the readiness probe passed
  kStopping,       // being removed
  kFailed,         // a step failed and the start is being undone
};

std::string_view state_name(InstanceState s);
std::optional<InstanceState> parse_state(std::string_view name);

// True while a prewarm process is (or was, before a crash) still working on the instance:
// preparing, restoring, personalising, starting, stopping, failed. Recovery removes
// instances in these states whose lock nobody holds.
bool is_transitional(InstanceState s);

}  // namespace prewarm::lifecycle
