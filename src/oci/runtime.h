// The OCI runtime operations prewarm needs, and their backends: runc (the reference) and
// direct CRIU (restores without runc, over one CRIU RPC session).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
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
  // Fill the app's large private anonymous areas with transparent huge pages (CRIU_FILL_THP=1
  // in CRIU's environment: a patch in prewarm's CRIU build; a stock CRIU ignores it). Filling
  // is faster; the restored areas keep MADV_HUGEPAGE, so memory can grow by what the app left
  // untouched inside each huge page.
  bool huge_pages = false;
  // Fault in the pages to be filled with one MADV_POPULATE_WRITE per range (kFillPopulateEnv,
  // the same patch's kind; a stock CRIU ignores it, and so does prewarm's with lazy pages).
  bool populate = false;
  // CRIU's log level (restore.log in work_dir): 4 = debug, 2 = errors and warnings.
  int criu_log_level = 4;
  // Check the files the tasks map by size only, not also by ELF build-id
  // (criu::RestoreRequest::validate_files_by_size; the direct backend only).
  bool validate_files_by_size = false;
  // Leave lazy-able pages to a `criu lazy-pages` daemon already listening in work_dir
  // (criu/lazy_pages.h); image_dir is then a lazy view (image/pagemap.h).
  bool lazy_pages = false;
  // The app's stdout and stderr (a pipe at checkpoint) become this fd (e.g. the log file).
  int stdio_fd = -1;
  // Called once the tasks are restored, before they run again, with the restored init's pid
  // (host view). A backend that cannot stop there calls it right after the restore; `restore`
  // reports which one happened. An error fails the restore.
  std::function<Status(pid_t)> before_resume;
  // Leave the restored container frozen (cgroup freezer; `pause` state): a pool's parked
  // instance, which a claim personalises and thaws (resume). The direct backend freezes the
  // tasks before they run again; runc's resumes them itself, so it pauses them at once after.
  bool leave_frozen = false;
};

struct Restored {
  pid_t pid = 0;                  // the container's init, host pid
  bool hook_before_resume = true;  // false: before_resume ran after the app had resumed
  bool ran_before_frozen = false;  // leave_frozen: the app ran a moment before it was frozen
  // Where the backend's time went (milliseconds), e.g. {"criu_ms", ...}; may be empty.
  std::vector<std::pair<std::string, double>> phases;
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  // "runc" or "criu" (what `--runtime` takes and records name).
  virtual std::string name() const = 0;
  // Starts the container detached; its stdout and stderr go to `stdio_fd`.
  virtual Status run(const std::string& id, const std::filesystem::path& bundle, int stdio_fd) = 0;
  virtual Status checkpoint(const std::string& id, const CheckpointOptions& opts) = 0;
  // Restores the checkpoint in opts.image_dir as container `id` from the bundle's config.json
  // (whose root must already be mounted). On failure nothing of the container is left running.
  virtual Result<Restored> restore(const std::string& id, const std::filesystem::path& bundle,
                                   const RestoreOptions& opts) = 0;
  // kNotFound when there is no such container.
  virtual Result<ContainerState> state(const std::string& id) = 0;
  // Exit code of `cmd` run inside the container.
  virtual Result<int> exec(const std::string& id, const std::vector<std::string>& cmd,
                           std::chrono::milliseconds timeout) = 0;
  virtual Status kill(const std::string& id, int signal) = 0;
  // Freezes / thaws every process of the container (cgroup freezer).
  virtual Status pause(const std::string& id) = 0;
  virtual Status resume(const std::string& id) = 0;
  // Deletes the container (forcefully; kills it first) and everything the runtime keeps for it
  // (state, cgroups, mounts). Missing is fine.
  virtual Status remove(const std::string& id) = 0;
  // Every container this runtime knows. An error when it cannot tell (never an empty list
  // instead).
  virtual Result<std::vector<ContainerState>> list() = 0;
  virtual Result<std::string> version() = 0;
};

// The "error" lines of a runc --log file (JSON lines), joined with "; ".
std::string runc_log_errors(const std::filesystem::path& log);

// runc: `binary`, or the one on PATH when empty. runc finds CRIU on PATH, so /usr/local/sbin
// (where prewarm's CRIU lives) is put first in the PATH runc gets.
std::unique_ptr<Runtime> make_runc(const std::string& binary = {});

}  // namespace prewarm::oci
