// The fault suite (CTest label `faults`): prewarm stopped at each named point of run and rm
// (PREWARM_FAULT, see src/base/fault.h), and CRIU and runc killed mid-restore. After each,
// one recovery command (`prewarm rm --all`), then nothing may be left: no container, process,
// mount, netns, veth, IP lease, cgroup, runtime state or instance directory, no new
// /tmp/.criu.mntns.* directory; and the next run must work.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "base/fs.h"
#include "base/subprocess.h"
#include "support/engine_fixture.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

enum class Verb { kRun, kRunCold, kRunRunc, kRm, kBake };

struct Fault {
  const char* point;
  Verb verb;
  bool dies;  // prewarm itself stops there (exit 137); otherwise it must cope and succeed
};

std::ostream& operator<<(std::ostream& os, const Fault& f) { return os << f.point; }

int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

// Entries of `dir` whose names start with `prefix`.
std::vector<std::string> entries(const stdfs::path& dir, const std::string& prefix = "") {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// What is in `after` and was not in `before` (both sorted).
std::vector<std::string> added(const std::vector<std::string>& before,
                               const std::vector<std::string>& after) {
  std::vector<std::string> out;
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(out));
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + " ";
  return s;
}

// Processes whose cgroup names `marker` (what a restored app left orphaned would be).
std::string processes_in_cgroups_of(const std::string& marker) {
  std::string found;
  for (const auto& pid : entries("/proc")) {
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    // A zombie holds nothing but its pid (this host's init does not reap reparented ones).
    std::string stat = slurp("/proc/" + pid + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos || stat.substr(close + 2, 1) == "Z") continue;
    std::string cg = slurp("/proc/" + pid + "/cgroup");
    if (cg.find(marker) != std::string::npos) found += pid + " ";
  }
  return found;
}

class FaultsTest : public ::testing::TestWithParam<Fault> {
 protected:
  static void SetUpTestSuite() {
    if (!skip_reason().empty()) return;
    tag_ = "f" + fs::random_hex(3);
    state_ = stdfs::path("/var/tmp") / ("prewarm-faults-" + tag_);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=pwbr" + tag_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_.substr(1))};
    image_ = "counter-" + tag_;
    auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", image_});
    baked_ = code(bake) == 0;
    if (!baked_) std::fprintf(stderr, "bake failed: %s\n", bake.err.c_str());
  }

  static void TearDownTestSuite() {
    if (state_.empty()) return;
    (void)prewarm({"rm", "--all"});
    remove_test_bridge("pwbr" + tag_);
    (void)fs::remove_all(state_);
  }

  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_TRUE(baked_) << "the bake failed";
  }

  static RunResult prewarm(std::vector<std::string> args, const std::string& fault = "") {
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.env = env_;
    o.env.push_back("PREWARM_FAULT=" + fault);
    auto r = run_capture(o, std::chrono::minutes(3));
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }

  // Everything an instance of the image may leave, as one string ("" when clean).
  static std::string left_behind() {
    std::string left = leftovers(image_ + "-");
    if (auto p = processes_in_cgroups_of(image_ + "-"); !p.empty()) left += "processes: " + p + "\n";
    if (auto b = bridge_ports("pwbr" + tag_); !b.empty()) left += "veths: " + b + "\n";
    if (auto i = entries(state_ / "instances"); !i.empty()) left += "instances/: " + joined(i) + "\n";
    if (auto ips = entries(net::net_state_dir("pwbr" + tag_) / "ips"); !ips.empty()) left += "IP leases: " + joined(ips) + "\n";
    if (auto runc = entries("/run/runc", image_); !runc.empty()) left += "runc state: " + joined(runc) + "\n";
    // Staging dirs (a killed bake's holds a whole checkpoint) and the half-made image.
    if (auto staged = entries(state_ / "images", "."); !staged.empty()) left += "staging: " + joined(staged) + "\n";
    if (stdfs::exists(state_ / "images" / (image_ + "-b"))) left += "a half-made image\n";
    return left;
  }

  static inline std::string tag_, image_;
  static inline stdfs::path state_;
  static inline std::vector<std::string> env_;
  static inline bool baked_ = false;
};

TEST_P(FaultsTest, RecoversWithNothingLeftAndRunsAgain) {
  const Fault& f = GetParam();
  const auto mntns_before = entries("/tmp", ".criu.mntns.");
  ASSERT_EQ(left_behind(), "") << "dirty before the fault";

  RunResult hit;
  switch (f.verb) {
    case Verb::kRun: hit = prewarm({"run", image_}, f.point); break;
    case Verb::kRunCold: hit = prewarm({"run", image_, "--cold"}, f.point); break;
    case Verb::kRunRunc: hit = prewarm({"--runtime", "runc", "run", image_}, f.point); break;
    case Verb::kBake:
      hit = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", image_ + "-b"}, f.point);
      break;
    case Verb::kRm: {
      auto run = prewarm({"run", image_});
      ASSERT_EQ(code(run), 0) << run.err;
      hit = prewarm({"rm", "--all"}, f.point);
      break;
    }
  }
  if (f.dies) {
    EXPECT_EQ(code(hit), 137) << "the fault point was not reached\n" << hit.out << hit.err;
  } else {
    // CRIU or runc died under prewarm: the start still succeeds, by a cold start.
    EXPECT_EQ(code(hit), 0) << hit.err;
    EXPECT_NE(hit.out.find(" cold"), std::string::npos) << hit.out;
    EXPECT_NE(hit.out.find("restore was not possible"), std::string::npos) << hit.out;
  }

  // A killed bake is recovered by gc (its staging dir and its instance); the rest by rm --all.
  const std::vector<std::string> recovery =
      f.verb == Verb::kBake ? std::vector<std::string>{"gc"} : std::vector<std::string>{"rm", "--all"};
  auto recover = prewarm(recovery);
  EXPECT_EQ(code(recover), 0) << recover.err;
  EXPECT_EQ(left_behind(), "") << "after the fault at " << f.point << " and `" << recovery[0] << "`";
  EXPECT_EQ(joined(added(mntns_before, entries("/tmp", ".criu.mntns."))), "")
      << "CRIU's temporary mount directories left in the host's /tmp";

  auto again = prewarm({"run", image_});
  ASSERT_EQ(code(again), 0) << again.err;
  EXPECT_TRUE(std::regex_search(again.out, std::regex(image_ + "-[0-9a-f]{8} .* restore\n")))
      << again.out;
  EXPECT_EQ(code(prewarm({"rm", "--all"})), 0);
  EXPECT_EQ(left_behind(), "");
}

// `run --count 8` racing `rm --all`: both finish promptly (no start blocks probing a removed
// instance, no remove waits on a stuck CRIU), nothing is left, and the next run works.
TEST_F(FaultsTest, RunManyRacingRemoveAllLeavesNothing) {
  const auto mntns_before = entries("/tmp", ".criu.mntns.");
  for (int delay_ms : {50, 200, 400}) {
    SCOPED_TRACE("rm --all after " + std::to_string(delay_ms) + " ms");
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm", "run", image_, "--count", "8"};
    o.env = env_;
    auto run = spawn(o);
    ASSERT_TRUE(run.ok()) << run.error().message();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    const auto t0 = std::chrono::steady_clock::now();
    auto rm = prewarm({"rm", "--all"});
    auto status = run->wait(std::chrono::seconds(120));
    ASSERT_TRUE(status.ok()) << "run --count 8 still running 120 s after rm --all";
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, std::chrono::seconds(60)) << "run and rm took this long to settle";
    // Whatever run started after rm's pass is removed by the next one.
    auto again = prewarm({"rm", "--all"});
    EXPECT_EQ(code(again), 0) << again.err;
    EXPECT_EQ(left_behind(), "");
  }
  EXPECT_EQ(joined(added(mntns_before, entries("/tmp", ".criu.mntns."))), "");
  auto next = prewarm({"run", image_});
  EXPECT_EQ(code(next), 0) << next.err;
  EXPECT_EQ(code(prewarm({"rm", "--all"})), 0);
  EXPECT_EQ(left_behind(), "");
}

INSTANTIATE_TEST_SUITE_P(
    Points, FaultsTest,
    ::testing::Values(Fault{"run.after_lock", Verb::kRun, true},
                      Fault{"run.after_sandbox", Verb::kRun, true},
                      Fault{"run.after_record", Verb::kRun, true},
                      Fault{"run.after_rootfs", Verb::kRun, true},
                      Fault{"run.before_resume", Verb::kRun, true},
                      Fault{"run.after_restore", Verb::kRun, true},
                      Fault{"run.after_cold_start", Verb::kRunCold, true},
                      Fault{"criu.kill_at_post_restore", Verb::kRun, false},
                      Fault{"runc.kill_in_restore", Verb::kRunRunc, false},
                      Fault{"criu.kill_under_runc", Verb::kRunRunc, false},
                      Fault{"bake.after_warmup", Verb::kBake, true},
                      Fault{"bake.after_checkpoint", Verb::kBake, true},
                      Fault{"rm.after_runtime", Verb::kRm, true},
                      Fault{"rm.after_sandbox", Verb::kRm, true}),
    [](const ::testing::TestParamInfo<Fault>& i) {
      std::string n = i.param.point;
      std::replace(n.begin(), n.end(), '.', '_');
      return n;
    });

}  // namespace
}  // namespace prewarm::testing
