// What makes a restored instance itself rather than a copy of the checkpoint: its hostname,
// and whatever else an app must be told. Applied while the restored tasks are still stopped
// where the backend allows it (direct CRIU), so the app never runs with the baked identity.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "base/result.h"

namespace prewarm::lifecycle {

class Identity {
 public:
  virtual ~Identity() = default;
  // Applies the identity to the restored container whose init is `pid` (host view).
  virtual Status apply(pid_t pid) = 0;
};

// Sets the hostname inside the container's UTS namespace.
std::unique_ptr<Identity> make_hostname_identity(std::string hostname);

// The one primitive: sethostname in the UTS namespace of `pid`.
Status set_hostname(pid_t pid, const std::string& hostname);

}  // namespace prewarm::lifecycle
