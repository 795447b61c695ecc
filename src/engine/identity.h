// Per-instance identity after a restore: a restored UTS namespace still carries the baked
// hostname, so the instance's own is set inside it.
#pragma once

#include <sys/types.h>

#include <string>

#include "base/result.h"

namespace prewarm::engine {

// Sets the hostname in the UTS namespace of `pid` (from a short-lived thread that joins it:
// only that thread changes namespace; UTS may be joined by one thread of a process).
Status set_hostname(pid_t pid, const std::string& hostname);

}  // namespace prewarm::engine
