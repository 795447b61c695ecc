// What every prewarm operation works with: where state lives, the network, the runtimes, and
// the configuration, read from the environment once (make_context) and nowhere else.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/result.h"
#include "net/net.h"
#include "oci/runtime.h"

namespace prewarm::engine {

// The restore backend unless configured otherwise.
inline constexpr const char* kDefaultRuntime = "criu";

// Everything prewarm takes from its environment.
struct Config {
  std::filesystem::path state_dir = "/var/lib/prewarm";  // PREWARM_STATE_DIR, --state-dir
  std::filesystem::path cache_dir = "/var/cache/prewarm";  // PREWARM_CACHE_DIR
  std::string bridge = net::Config{}.bridge;              // PREWARM_BRIDGE
  std::string subnet = net::Config{}.subnet;              // PREWARM_SUBNET
  std::string runc_binary;                                // PREWARM_RUNC ("" : PATH)
  // Restore backend: "criu" (direct, the default where available) or "runc". PREWARM_RUNTIME,
  // --runtime.
  std::string runtime;
  std::string registry_user, registry_password;  // PREWARM_REGISTRY_USER / _PASSWORD
  // A registry transfer moving under 1 KiB/s this long fails: PREWARM_REGISTRY_TIMEOUT (seconds).
  std::chrono::seconds registry_timeout{30};
  // Restores advise the app's anonymous areas MADV_HUGEPAGE before filling them
  // (RestoreOptions::huge_pages): PREWARM_HUGE_PAGES=1 on, 0 off, auto (the default) on where
  // the host gives advised memory only folios smaller than 2 MiB (multi-size THP, e.g.
  // hugepages-64kB/enabled=madvise with hugepages-2048kB/enabled=never; base/thp.h). 2 MiB
  // folios are not used by default: on a VM that hands free memory back to its host (free page
  // reporting), idle memory goes back in 2 MiB blocks and such a fill then costs ~5x a 4 KiB one
  // (bench/memory_fill.sh with IDLE_S), while 64 KiB folios fill in ~0.65x, idle or not.
  bool huge_pages = false;
  // Restores fault in the pages they fill with one MADV_POPULATE_WRITE per range instead of one
  // page fault per page (RestoreOptions::populate): PREWARM_FILL_POPULATE=0 turns it off.
  bool fill_populate = true;
  // CRIU's log level for restores (RestoreOptions::criu_log_level): PREWARM_CRIU_LOG_LEVEL,
  // 0-4. At 2 (the default) CRIU logs its errors and warnings, which is what a failed restore
  // shows; at 4 (debug) it writes ~5,000 lines per restore of the Python example, one write(2)
  // each, ~4 ms of a 60 ms CRIU restore here. Bakes log at 4.
  int criu_log_level = 2;
  // How restores get their memory: "eager" (all of it before the app resumes), "lazy" (the
  // working set before, the rest served by userfaultfd after) or "auto" (lazy for checkpoints
  // of at least lazy_min_bytes of memory). PREWARM_PAGING; `prewarm run --paging` and the
  // spec's restore.paging choose per start and per image.
  std::string paging = "auto";
  // PREWARM_LAZY_MIN_MB.
  uint64_t lazy_min_bytes = 256ull << 20;
  // The prewarm executable, for what runs it again (a lazy restore's page server):
  // PREWARM_BINARY, else this process's own executable when it is prewarm, else `prewarm` on
  // PATH.
  std::string prewarm_binary;
  // Restored instances' memory merged across instances by KSM (base/ksm.h): this process and
  // what it starts are marked mergeable, and ksmd is started if it is stopped.
  // PREWARM_MEMORY_MERGE=1.
  bool memory_merge = false;
};

// Config from the environment (PREWARM_* variables); the fields' comments name them.
Config config_from_env();

// How the config says restores fill memory and log (huge pages, populate, CRIU's log level),
// set on `ro`: one place for every caller that restores through a backend.
void apply_restore_config(const Config& config, oci::RestoreOptions& ro);

// Config::memory_merge: marks this process (and what it starts) mergeable and starts ksmd
// when it is stopped.
Status enable_memory_merge();

struct Context {
  Config config;
  std::filesystem::path state_dir;  // images/, instances/, stamps/, layers/
  std::filesystem::path cache_dir;  // rootfs builds, reused across state dirs
  net::Config net;
  // The backend restores use (config.runtime); cold starts and bakes go through runc.
  std::shared_ptr<oci::Runtime> runtime;
  // Every backend by name ("runc", "criu"): an instance is removed by the one that made it.
  std::map<std::string, std::shared_ptr<oci::Runtime>> runtimes;
  // Progress lines for long operations (bake phases, rootfs builds); may be empty.
  std::function<void(const std::string&)> progress;

  std::filesystem::path images_dir() const { return state_dir / "images"; }
  std::filesystem::path image_dir(const std::string& name) const { return images_dir() / name; }
  std::filesystem::path instances_dir() const { return state_dir / "instances"; }
  std::filesystem::path instance_dir(const std::string& id) const { return instances_dir() / id; }
  std::filesystem::path stamps_dir() const { return state_dir / "stamps"; }
  // Rootfs diffs extracted once per image, the read-only layer under every instance's upper.
  std::filesystem::path layers_dir() const { return state_dir / "layers"; }
  void say(const std::string& line) const {
    if (progress) progress(line);
  }
  // The runtime called `name` ("" or unknown: the restore backend).
  std::shared_ptr<oci::Runtime> runtime_named(const std::string& name) const;
  // Switches the restore backend ("runc" or "criu"); kInvalidInput for other names.
  Status use_runtime(const std::string& name);
};

// A context from `config` (a non-empty state_dir_override wins over config.state_dir): makes
// the state dirs (0700: checkpoints hold application memory) and the runtimes.
Result<Context> make_context(Config config, const std::filesystem::path& state_dir_override = {});
// The same from the environment.
Result<Context> make_context(const std::filesystem::path& state_dir_override = {});

}  // namespace prewarm::engine
