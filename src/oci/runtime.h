// The OCI runtime operations prewarm needs, and their runc implementation.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace prewarm::oci {

struct ContainerState {
  std::string id;
  std::string status;  // created, running, stopped, paused
  pid_t pid = 0;
  std::filesystem::path bundle;
};

struct CheckpointOptions {
  std::filesystem::path image_dir;
  std::filesystem::path work_dir;  // CRIU's dump.log lands here
  bool tcp_established = false;
  bool leave_running = false;
};

struct RestoreOptions {
  std::filesystem::path image_dir;
  std::filesystem::path work_dir;  // CRIU's restore.log lands here
  bool tcp_established = false;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // Starts the container detached; its stdout and stderr go to `stdio_fd`.
  virtual Status run(const std::string& id, const std::filesystem::path& bundle, int stdio_fd) = 0;
  virtual Status checkpoint(const std::string& id, const CheckpointOptions& opts) = 0;
  virtual Status restore(const std::string& id, const std::filesystem::path& bundle,
                         const RestoreOptions& opts, int stdio_fd) = 0;
  virtual Result<ContainerState> state(const std::string& id) = 0;
  // Exit code of `cmd` run inside the container.
  virtual Result<int> exec(const std::string& id, const std::vector<std::string>& cmd,
                           std::chrono::milliseconds timeout) = 0;
  virtual Status kill(const std::string& id, int signal) = 0;
  // Deletes the container (forcefully; kills it first). Missing is fine.
  virtual Status remove(const std::string& id) = 0;
  virtual Result<std::vector<ContainerState>> list() = 0;
  virtual Result<std::string> version() = 0;
};

// runc, found as PREWARM_RUNC or on PATH; CRIU is found by runc on PATH, so /usr/local/sbin
// (where prewarm's CRIU lives) is put first in the PATH runc gets.
std::unique_ptr<Runtime> make_runc();

}  // namespace prewarm::oci
