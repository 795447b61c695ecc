// The instance's stdout/stderr: a pipe drained into DIR/app.log by a small detached process.
// A pipe (not a file) because CRIU can dump and restore a pipe shared with the outside, but
// not a host file that lies outside the container's mounts.
#pragma once

#include <filesystem>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::engine {

// Returns the write end to hand to runc; the drainer exits when the instance's last writer
// closes the pipe.
Result<UniqueFd> open_app_log(const std::filesystem::path& log_file);

}  // namespace prewarm::engine
