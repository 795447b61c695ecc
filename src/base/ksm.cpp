#include "base/ksm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/fs.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

namespace prewarm::ksm {
namespace {

const std::filesystem::path kDir = "/sys/kernel/mm/ksm";

Result<uint64_t> read_number(const char* name) {
  PW_ASSIGN(std::string text, fs::read_file(kDir / name, 64));
  return std::strtoull(text.c_str(), nullptr, 10);
}

Status write_number(const char* name, uint64_t v) {
  return fs::write_file(kDir / name, std::to_string(v) + "\n");
}

// ksmd is a kernel thread: its pid from /proc/*/comm, its CPU time from /proc/PID/stat.
double ksmd_cpu_seconds() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    auto comm = fs::read_file(e.path() / "comm", 64);
    if (!comm.ok() || *comm != "ksmd\n") continue;
    auto stat = fs::read_file(e.path() / "stat", 4096);
    if (!stat.ok()) return 0;
    size_t paren = stat->rfind(')');
    if (paren == std::string::npos) return 0;
    unsigned long long utime = 0, stime = 0;
    // After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    if (std::sscanf(stat->c_str() + paren + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                    &utime, &stime) != 2)
      return 0;
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  return 0;
}

// What a SettingsGuard's signal handler writes: file and text made beforehand, as only
// async-signal-safe calls may run there.
struct PendingWrite {
  char path[64];
  char text[24];
};
PendingWrite g_restore[3];
volatile sig_atomic_t g_armed = 0;
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

void restore_and_reraise(int sig) {
  if (g_armed) {
    for (const auto& w : g_restore) {
      int fd = ::open(w.path, O_WRONLY | O_CLOEXEC);
      if (fd < 0) continue;
      ssize_t ignored = ::write(fd, w.text, std::strlen(w.text));
      (void)ignored;
      ::close(fd);
    }
    g_armed = 0;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

SettingsGuard::SettingsGuard(const Settings& saved) : saved_(saved) {
  // The order write_settings uses: run last, so ksmd stops (or starts) with its old pace.
  const std::pair<const char*, uint64_t> values[] = {
      {"pages_to_scan", saved.pages_to_scan},
      {"sleep_millisecs", saved.sleep_millisecs},
      {"run", static_cast<uint64_t>(saved.run)}};
  for (size_t i = 0; i < 3; ++i) {
    std::snprintf(g_restore[i].path, sizeof g_restore[i].path, "%s/%s", kDir.c_str(),
                  values[i].first);
    std::snprintf(g_restore[i].text, sizeof g_restore[i].text, "%llu\n",
                  static_cast<unsigned long long>(values[i].second));
  }
  g_armed = 1;
  struct sigaction sa {};
  sa.sa_handler = restore_and_reraise;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &g_previous[i]);
}

SettingsGuard::~SettingsGuard() {
  for (size_t i = 0; i < 3; ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
  g_armed = 0;
  (void)write_settings(saved_);
}

Status set_process_mergeable(bool on) {
  if (::prctl(PR_SET_MEMORY_MERGE, on ? 1 : 0, 0, 0, 0) != 0)
    return Error::sys("prctl(PR_SET_MEMORY_MERGE)", errno,
                      "this kernel has no per-process KSM (Linux 6.4+, CONFIG_KSM)")
        .with_kind(ErrorKind::kIncompatibleHost);
  return {};
}

Result<Settings> read_settings() {
  Settings s;
  PW_ASSIGN(uint64_t run, read_number("run"));
  PW_ASSIGN(uint64_t pages, read_number("pages_to_scan"));
  PW_ASSIGN(uint64_t sleep, read_number("sleep_millisecs"));
  s.run = static_cast<int>(run);
  s.pages_to_scan = static_cast<unsigned>(pages);
  s.sleep_millisecs = static_cast<unsigned>(sleep);
  return s;
}

Status write_settings(const Settings& s) {
  PW_TRY(write_number("pages_to_scan", s.pages_to_scan));
  PW_TRY(write_number("sleep_millisecs", s.sleep_millisecs));
  return write_number("run", static_cast<uint64_t>(s.run));
}

Result<Stats> read_stats() {
  Stats s;
  PW_ASSIGN(s.pages_shared, read_number("pages_shared"));
  PW_ASSIGN(s.pages_sharing, read_number("pages_sharing"));
  PW_ASSIGN(s.full_scans, read_number("full_scans"));
  s.ksmd_cpu_seconds = ksmd_cpu_seconds();
  return s;
}

}  // namespace prewarm::ksm
