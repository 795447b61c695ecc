// CRIU RPC client: talks to `criu swrk` over a SOCK_SEQPACKET socketpair (rpc.proto).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/fs.h"
#include "base/result.h"

namespace prewarm::criu {

struct Version {
  int major = 0, minor = 0, sublevel = 0;
  std::string text;  // "4.2.1"
};

// Path of the criu binary used (PREWARM_CRIU env var, else /usr/local/sbin/criu, else PATH);
// "" when there is none.
std::string criu_binary();

// The scratch dirs (CRIU's log for check and cpuinfo requests) live in the temp dir as
// kScratchPrefix + random; each is locked while in use. remove_stale_scratch removes the ones a
// killed prewarm left (no live one holds their lock).
inline constexpr const char* kScratchPrefix = "prewarm-criu-";
std::filesystem::path scratch_parent();
Result<fs::StaleStaging> remove_stale_scratch();

// In CRIU's environment: fill large anonymous areas with transparent huge pages at restore
// (scripts/criu-patches; a stock CRIU ignores it).
inline constexpr const char* kFillHugePagesEnv = "CRIU_FILL_THP=1";
// In CRIU's environment: fault in the pages a restore fills with one MADV_POPULATE_WRITE per
// range, not one fault per page (scripts/criu-patches; a stock CRIU ignores it).
inline constexpr const char* kFillPopulateEnv = "CRIU_FILL_POPULATE=1";
bool criu_fills_populate(const std::string& criu_bin);
// In CRIU's environment: restore without a network lock whatever the checkpoint used (for a
// network namespace new and private to the instance; scripts/criu-patches). Without the patch
// the direct backend gives CRIU a view of the image whose inventory says "skip" instead.
inline constexpr const char* kRestoreSkipNetworkLockEnv = "CRIU_RESTORE_NETWORK_LOCK=skip";
bool criu_skips_network_lock_by_env(const std::string& criu_bin);
// Where which patch variables a CRIU binary names is remembered (per binary; tmpfs, so per boot).
inline constexpr const char* kFeaturesDir = "/run/prewarm-criu-features";
// Whether `criu_bin` has that patch (it names the variable).
bool criu_fills_huge_pages(const std::string& criu_bin);

// A kept-open RPC session (keep_open): one `criu swrk` process answers several requests, e.g. a
// host check's version and CPU check for the price of one CRIU start. A deadline bounds the
// whole session; CRIU exits when the session is destroyed. Not for restores (criu/session.h:
// their inherited fds must be known when CRIU starts).
class Session {
 public:
  static Result<Session> open();
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  pid_t pid() const;  // the criu process serving the session
  Result<Version> version();
  // `criu check`; the error carries the relevant log lines when it fails. The session's last
  // request: CRIU does not keep the session open after a check.
  Status check();
  // Writes CRIU's cpuinfo.img into dir (records this host's CPU features).
  Status cpuinfo_dump(const std::filesystem::path& dir);
  // Checks that this host's CPU can run what cpuinfo.img in dir describes.
  Status cpuinfo_check(const std::filesystem::path& dir);

 private:
  Session();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One request each, in a session of its own.
Result<Version> version();
// `criu check` through RPC; the error carries the relevant log lines when it fails.
Status check();
// Writes CRIU's cpuinfo.img into dir (records this host's CPU features).
Status cpuinfo_dump(const std::filesystem::path& dir);
// Checks that this host's CPU can run what cpuinfo.img in dir describes.
Status cpuinfo_check(const std::filesystem::path& dir);

// The lines of a CRIU dump/restore log that explain a failure: the lines around the last
// real error, skipping errors CRIU always prints (e.g. "Can't setup RLIMIT_NOFILE").
// At most max_lines lines, timestamps kept.
std::vector<std::string> relevant_log_lines(std::string_view log_text, size_t max_lines = 12);
// Reads a log file and returns relevant_log_lines joined with '\n' ("" if unreadable).
std::string relevant_log_tail(const std::filesystem::path& log_file, size_t max_lines = 12);
// The line above such lines in an error: "CRIU's dump.log:". The log lives in the instance's
// work dir, which goes when the failed bake or restore is undone, so the lines travel in the
// error and no path to the file is given.
// At a log level under 4 (debug) it says that the log holds less, and how to get all of it.
std::string criu_log_heading(const std::filesystem::path& log_file, int log_level = 4);
// True for an error message CRIU prints on every call on this kind of host, which never
// explains a failure (e.g. "Can't setup RLIMIT_NOFILE for self").
bool is_benign_error(std::string_view message);

}  // namespace prewarm::criu
