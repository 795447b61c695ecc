// Soak: many run/rm cycles of the tiny example through the real CLI, then nothing may have
// grown: processes, mounts, netns, veths, IP leases, cgroups, runtime state, instance records,
// the state dir's disk use. Prints the counts before and after, and the cycles it managed.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <regex>
#include <string>

#include "base/fs.h"
#include "base/subprocess.h"
#include "support/cli.h"
#include "support/engine_fixture.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Cycles to aim for, and the wall-clock budget that may cut them short on a slow machine
// (PREWARM_SOAK_CYCLES, PREWARM_SOAK_SECONDS override them).
constexpr long kCycles = 1000;
constexpr long kBudgetSeconds = 540;
constexpr long kLazyCycles = 200;  // PREWARM_SOAK_LAZY_CYCLES

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

size_t count_entries(const stdfs::path& dir, const std::function<bool(const std::string&)>& keep) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec))
    if (keep(e.path().filename().string())) ++n;
  return n;
}

size_t count_lines_with(const std::string& text, const std::vector<std::string>& markers) {
  size_t n = 0, start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    for (const auto& m : markers)
      if (line.find(m) != std::string_view::npos) {
        ++n;
        break;
      }
    start = end + 1;
  }
  return n;
}

// Cgroup directories (any depth up to 3 below /sys/fs/cgroup) whose name contains marker.
size_t count_cgroups(const stdfs::path& dir, const std::string& marker, int depth) {
  size_t n = 0;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    std::error_code ec2;
    if (!e.is_directory(ec2) || e.is_symlink(ec2)) continue;
    if (e.path().filename().string().find(marker) != std::string::npos) ++n;
    if (depth > 0) n += count_cgroups(e.path(), marker, depth - 1);
  }
  return n;
}

// Files below dir, and the bytes they occupy on disk.
std::pair<size_t, uint64_t> files_and_bytes(const stdfs::path& dir) {
  size_t files = 0;
  uint64_t bytes = 0;
  std::error_code ec;
  for (auto it = stdfs::recursive_directory_iterator(dir, ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (!S_ISDIR(st.st_mode)) ++files;
    bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return {files, bytes};
}

// Open userfaultfds of every process on the host (lazy restores' page servers hold them).
size_t count_userfaultfds() {
  size_t n = 0;
  std::error_code ec;
  for (const auto& p : stdfs::directory_iterator("/proc", ec)) {
    std::string pid = p.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec2;
    for (const auto& fd : stdfs::directory_iterator(p.path() / "fd", ec2)) {
      std::error_code ec3;
      if (stdfs::read_symlink(fd.path(), ec3).string() == "anon_inode:[userfaultfd]") ++n;
    }
  }
  return n;
}

class SoakTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "s" + fs::random_hex(3);
    name_ = "soak-" + tag_;
    bridge_ = "pwbr" + tag_;
    state_ = stdfs::path("/var/tmp") / ("prewarm-soak-" + tag_);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=" + bridge_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_.substr(1))};
  }

  void TearDown() override {
    if (state_.empty()) return;
    auto rm = prewarm({"rm", "--all"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    remove_test_bridge(bridge_);
    EXPECT_EQ(leftovers(name_ + "-"), "");
    if (!HasFailure()) (void)fs::remove_all(state_);
  }

  RunResult prewarm(const std::vector<std::string>& args) { return run_prewarm(args, env_); }

  // Live processes of prewarm's making: the CLI passes our PREWARM_STATE_DIR on to whatever
  // it spawns (runc, CRIU), and an instance's processes live in a cgroup named after it.
  // Their "pid comm" each, for the log.
  std::vector<std::string> prewarm_processes() const {
    const std::string env_marker = env_[0];
    const std::string cgroup_marker = "prewarm-" + name_ + "-";
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator("/proc", ec)) {
      std::string pid = e.path().filename().string();
      if (pid.find_first_not_of("0123456789") != std::string::npos ||
          pid == std::to_string(::getpid()))
        continue;
      // A zombie is an exited instance its new parent (the host's init) has yet to reap.
      std::string stat = slurp(e.path() / "stat");
      size_t paren = stat.rfind(") ");
      if (paren == std::string::npos || stat.compare(paren + 2, 1, "Z") == 0) continue;
      std::string environ = slurp(e.path() / "environ");
      std::string cgroup = slurp(e.path() / "cgroup");
      if (environ.find(env_marker + '\0') != std::string::npos ||
          cgroup.find(cgroup_marker) != std::string::npos) {
        std::string comm = slurp(e.path() / "comm");
        found.push_back(pid + " " + comm.substr(0, comm.find('\n')));
      }
    }
    return found;
  }

  std::map<std::string, uint64_t> counts() const {
    std::map<std::string, uint64_t> c;
    const std::string id_marker = name_ + "-";
    auto has_id = [&](const std::string& s) { return s.find(id_marker) != std::string::npos; };
    c["processes"] = prewarm_processes().size();
    std::string mountinfo = slurp("/proc/self/mountinfo");
    c["mounts (all)"] = std::count(mountinfo.begin(), mountinfo.end(), '\n');
    c["mounts (prewarm's)"] = count_lines_with(mountinfo, {state_.string(), "pw-" + id_marker});
    c["netns"] = count_entries("/run/netns", has_id);
    c["bridge ports"] = count_entries("/sys/class/net/" + bridge_ + "/brif",
                                      [](const std::string&) { return true; });
    c["ip leases"] = count_entries(state_ / "net" / "ips", [](const std::string&) { return true; });
    c["cgroups"] = count_cgroups("/sys/fs/cgroup", "prewarm-" + id_marker, 3);
    auto runc = run_checked({"runc", "list", "-q"});
    c["runc containers"] = runc.ok() ? count_lines_with(*runc, {id_marker}) : 0;
    c["criu backend state"] = count_entries("/run/prewarm-criu", has_id);
    c["instance files"] = files_and_bytes(state_ / "instances").first;
    c["userfaultfds (host-wide)"] = count_userfaultfds();
    auto [files, bytes] = files_and_bytes(state_);
    c["state dir files"] = files;
    c["state dir bytes"] = bytes;
    return c;
  }

  // One run (with extra arguments) and its rm; the instance id, or "" after a failure
  // (already reported).
  std::string cycle(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"run", name_};
    args.insert(args.end(), extra.begin(), extra.end());
    auto run = prewarm(args);
    EXPECT_EQ(run.status, 0) << run.err;
    std::smatch m;
    static const std::regex id_re("(" + name_ + "-[0-9a-f]{8}) ");
    if (!std::regex_search(run.out, m, id_re)) {
      ADD_FAILURE() << "no instance id in: " << run.out;
      return {};
    }
    std::string id = m[1];
    auto rm = prewarm({"rm", id});
    EXPECT_EQ(rm.status, 0) << rm.err;
    return id;
  }

  void run_soak(long want, const std::vector<std::string>& extra) {
    auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
    ASSERT_EQ(bake.status, 0) << bake.err;
    // One cycle first: the bridge, the diff layer and the stamps it creates are meant to stay.
    auto first_start = Clock::now();
    ASSERT_NE(cycle(extra), "");
    double first_s = std::chrono::duration<double>(Clock::now() - first_start).count();
    auto before = counts();

    const auto budget = std::chrono::seconds(env_long("PREWARM_SOAK_SECONDS", kBudgetSeconds));
    std::cout << "soak" << (extra.empty() ? "" : " (" + extra.back() + ")") << ": first cycle " << first_s << " s; aiming at " << want << " cycles within "
              << budget.count() << " s\n";
    auto start = Clock::now();
    long done = 0;
    for (; done < want && Clock::now() - start < budget; ++done) {
      if (cycle(extra).empty() || HasFailure()) break;
      if ((done + 1) % 100 == 0)
        std::cout << "soak: " << done + 1 << " cycles, "
                  << std::chrono::duration<double>(Clock::now() - start).count() << " s\n"
                  << std::flush;
    }
    double took = std::chrono::duration<double>(Clock::now() - start).count();
    auto after = counts();

    std::cout << "soak: " << done << " run/rm cycles in " << took << " s ("
              << (done ? 1000 * took / done : 0) << " ms each)"
              << (done < want ? " -- fewer than aimed at: the time budget ran out" : "") << "\n";
    for (const auto& [what, n] : before)
      std::cout << "soak: " << what << ": before " << n << ", after " << after[what] << "\n";
    for (const auto& p : prewarm_processes()) std::cout << "soak: process " << p << "\n";
    EXPECT_GE(done, std::min<long>(want, 10)) << "too few cycles to say anything";
    for (const auto& [what, n] : before) {
      if (what == "mounts (all)") continue;  // other tests on this host mount things too
      EXPECT_EQ(after[what], n) << what << " changed over " << done << " cycles";
    }
  }

  std::string tag_, name_, bridge_;
  stdfs::path state_;
  std::vector<std::string> env_;
};

TEST_F(SoakTest, RunRmCyclesLeaveNothingBehind) {
  run_soak(env_long("PREWARM_SOAK_CYCLES", kCycles), {});
}

// Lazy restores: each has a page server (CRIU's lazy-pages daemon under prewarm's supervisor)
// holding userfaultfds; none may outlive its instance.
TEST_F(SoakTest, LazyRestoreCyclesLeaveNoPageServerOrUserfaultfd) {
  run_soak(env_long("PREWARM_SOAK_LAZY_CYCLES", kLazyCycles), {"--paging", "lazy"});
}

}  // namespace
}  // namespace prewarm::testing
