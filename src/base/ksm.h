// Kernel samepage merging for restored instances: copies of one checkpoint start with the same
// memory, and KSM lets them share it. prctl(PR_SET_MEMORY_MERGE) marks every mapping of this
// process mergeable; the flag is inherited by what it spawns, across fork and exec (Linux
// 6.7+), so the CRIU it starts and the tasks CRIU restores are merged too, with no CRIU change.
// ksmd (/sys/kernel/mm/ksm) does the merging in the background, host-wide.
#pragma once

#include <cstdint>
#include <optional>

#include "base/result.h"

namespace prewarm::ksm {

// Marks this process (and so everything it starts from now on) as mergeable, or no longer
// (which also unmerges this process's own pages). kIncompatibleHost without KSM.
Status set_process_mergeable(bool on);

struct Settings {
  int run = 0;             // /sys/kernel/mm/ksm/run: 0 stopped, 1 running, 2 unmerging
  unsigned pages_to_scan = 100;
  unsigned sleep_millisecs = 20;
};
Result<Settings> read_settings();
Status write_settings(const Settings& s);

// Puts the host's KSM settings back as they were when it was made: when it goes out of scope,
// and when SIGINT, SIGTERM or SIGHUP ends the process first (the handler writes them, then the
// signal takes its default course). One at a time per process. SIGKILL leaves them changed.
class SettingsGuard {
 public:
  explicit SettingsGuard(const Settings& saved);
  ~SettingsGuard();
  SettingsGuard(const SettingsGuard&) = delete;
  SettingsGuard& operator=(const SettingsGuard&) = delete;

 private:
  Settings saved_;
};

struct Stats {
  uint64_t pages_shared = 0;   // distinct merged pages kept
  uint64_t pages_sharing = 0;  // mappings of them: the pages saved
  uint64_t full_scans = 0;
  double ksmd_cpu_seconds = 0;  // ksmd's CPU time since boot (0 when not found)
};
Result<Stats> read_stats();

}  // namespace prewarm::ksm
