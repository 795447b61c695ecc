// A CRIU RPC session for restores: one `criu swrk` child, the request, CRIU's NOTIFY messages
// answered by the caller's callbacks, and the restored root task's pid.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace prewarm::criu {

// rpc.proto's criu_cg_mode, without the generated header.
enum class CgroupMode { kIgnore, kNone, kProps, kSoft, kFull, kStrict, kDefault };
// rpc.proto's criu_network_lock_method.
enum class NetworkLock { kIptables, kNftables, kSkip };

// Called for a notify ("setup-namespaces", "post-restore", "network-unlock", "pre-resume", ...)
// with the pid CRIU sends along (the restored root task's host pid where CRIU has one, else 0).
// An error makes CRIU abort the restore (it kills what it restored) for the notifies CRIU
// checks; CRIU ignores failures of "pre-resume" and "post-resume", so state that must hold
// before the app runs belongs in "post-restore".
using NotifyHandler = std::function<Status(pid_t pid)>;

struct RestoreRequest {
  std::filesystem::path image_dir;
  std::filesystem::path work_dir;  // log_file is written here
  std::string log_file = "restore.log";
  int log_level = 4;
  // The root CRIU restores the mount namespace onto; must be a mount point.
  std::filesystem::path root;
  // ext_mnt: key (the name recorded at dump) -> host path.
  std::vector<std::pair<std::string, std::string>> ext_mounts;
  // inherit_fd: key (e.g. "pipe:[123]", "extRootNetNS") -> an fd of ours. The session hands
  // CRIU a private duplicate; the caller keeps ownership of these.
  std::vector<std::pair<std::string, int>> inherit_fds;
  // cg_root: controller ("" for all) -> path.
  std::vector<std::pair<std::string, std::string>> cgroup_roots;
  CgroupMode cgroup_mode = CgroupMode::kSoft;
  NetworkLock network_lock = NetworkLock::kIptables;
  bool tcp_established = false;
  bool file_locks = false;
  bool evasive_devices = true;
  // The restored root task becomes a child of the caller (CLONE_PARENT), not of criu.
  bool rst_sibling = true;
  // Large anonymous areas are filled with transparent huge pages (kFillHugePagesEnv).
  bool huge_pages = false;
  // The pages to be filled are faulted in first, one MADV_POPULATE_WRITE per range
  // (kFillPopulateEnv).
  bool populate = false;
  // Files the tasks map are checked against the checkpoint by size only, not also by their ELF
  // build-id (CRIU's `file-validation filesize`, through a config file written to work_dir):
  // for a root whose files are known to be the checkpoint's.
  bool validate_files_by_size = false;
  // network_lock kSkip is forced over the checkpoint's method (kRestoreSkipNetworkLockEnv; for a
  // CRIU with that patch).
  bool skip_network_lock_by_env = false;
  // Lazy-able pages are left to a `criu lazy-pages` daemon already listening in work_dir
  // (criu/lazy_pages.h).
  bool lazy_pages = false;
  // Called once criu runs and before the request is sent, with criu's pid: e.g. to move criu
  // into the container's cgroups, which the restored tasks then inherit.
  std::function<Status(pid_t criu_pid)> before_request;
  // Runs on the calling thread right before criu is spawned; what it returns lives until criu
  // runs (e.g. this thread inside the container's cgroups, so criu starts there).
  std::function<Result<std::shared_ptr<void>>()> around_spawn;
  std::map<std::string, NotifyHandler, std::less<>> on_notify;
  // Deadline for the whole restore, notifies included; criu is killed when it passes.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
};

struct RestoreResult {
  pid_t pid = 0;  // the restored root task, host view
  // Milliseconds: "criu_spawn", "criu_until_<notify>" (time from the request to each notify,
  // as seen here), "criu_total".
  std::vector<std::pair<std::string, double>> phases;
};

// Runs one RESTORE session through its own `criu swrk` child (the session lasts one call: CRIU
// reads inherit_fd numbers in its own fd table, so the fds must be known when it starts). Errors are ErrorKind::kRuntime and carry the relevant
// lines of work_dir/log_file. On failure nothing restored is left running: CRIU kills its tasks
// when it aborts; a restore that succeeded at CRIU's end but failed here (e.g. no pid in the
// answer) is killed by pid.
Result<RestoreResult> restore(const RestoreRequest& req);

}  // namespace prewarm::criu
