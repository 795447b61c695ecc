// The page server side of CRIU's page-server protocol, as `criu lazy-pages --page-server`
// speaks it: the daemon asks for pages (PS_IOV_GET: a task, an address, a count) and gets them
// back (PS_IOV_ADD_F, then the bytes), until it says it is done (PS_IOV_CLOSE or
// PS_IOV_FORCE_CLOSE). prewarm serves a lazy restore's pages this way straight from the
// store's compressed chunks, with no unpacked copy of the checkpoint's memory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>

#include "base/result.h"

namespace prewarm::criu {

// Fills out with `pages` pages of task `pid` (its pid in the checkpoint's images) from vaddr.
using PageSource = std::function<Status(pid_t pid, uint64_t vaddr, uint64_t pages, char* out)>;

// Answers requests on fd until the daemon closes the session (returns ok) or something fails
// (returns the error; the caller then closes fd, and the daemon, unable to get pages, fails).
Status serve_page_requests(int fd, const PageSource& source);

}  // namespace prewarm::criu
