// A fixture for tests that drive real runc + CRIU: a private state dir, its own bridge and
// subnet, and a check after every test that nothing was left behind.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <fstream>
#include <string>

#include "base/fs.h"
#include "base/subprocess.h"
#include "criu/criu.h"
#include "engine/context.h"
#include "lifecycle/instance.h"
#include "support/files.h"
#include "support/subnets.h"

namespace prewarm::testing {

inline std::string skip_reason() {
  if (::geteuid() != 0) return "needs root (runc, CRIU, mounts, namespaces)";
  if (criu::criu_binary().empty()) return "CRIU not installed (run scripts/setup.sh)";
  if (find_executable("runc").empty()) return "runc not installed (run scripts/setup.sh)";
  return {};
}

// What the tests can see of leftovers: runc containers, netns, overlay mounts, veths and
// cgroups whose names contain `marker`.
inline std::string leftovers(const std::string& marker) {
  std::string found;
  auto runc = run_checked({"runc", "list", "-q"});
  if (runc.ok() && runc->find(marker) != std::string::npos) found += "runc containers: " + *runc;
  auto netns = run_checked({"ip", "netns", "list"});
  if (netns.ok() && netns->find(marker) != std::string::npos) found += "netns: " + *netns;
  std::error_code dec;
  for (const auto& e : std::filesystem::directory_iterator("/run/prewarm-criu", dec))
    if (e.path().filename().string().find(marker) != std::string::npos)
      found += "criu backend state " + e.path().string() + "\n";
  std::string mounts = slurp("/proc/mounts");
  if (mounts.find(marker) != std::string::npos) found += "mounts under the state dir\n";
  std::error_code ec;
  for (const auto& hierarchy : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
    std::error_code ec2;
    for (const auto& e : std::filesystem::directory_iterator(hierarchy.path(), ec2))
      if (e.is_directory(ec2) && e.path().filename().string().find(marker) != std::string::npos)
        found += "cgroup " + e.path().string() + "\n";
  }
  return found;
}

// Deletes a test's bridge and its allocation directory (/run/prewarm/net/<bridge>).
inline void remove_test_bridge(const std::string& bridge) {
  (void)run_checked({"ip", "link", "del", bridge});
  (void)fs::remove_all(net::net_state_dir(bridge));
}

// Ports still attached to a bridge (each one an instance's veth that was not cleaned up).
inline std::string bridge_ports(const std::string& bridge) {
  std::string found;
  std::error_code ec;
  for (const auto& e :
       std::filesystem::directory_iterator("/sys/class/net/" + bridge + "/brif", ec))
    found += e.path().filename().string() + " ";
  return found;
}

// Runs cmd inside an instance (whichever backend made it: the direct-CRIU one has no runc
// state), through its init's namespaces; stdout, or "ERROR ..." when it failed.
inline std::string exec_in(const engine::Context& ctx, const std::string& id,
                           const std::vector<std::string>& cmd) {
  auto rec = lifecycle::load_record(ctx.instance_dir(id));
  if (!rec.ok()) return "ERROR " + rec.error().message();
  auto st = ctx.runtime_named(rec->runtime)->state(id);
  if (!st.ok()) return "ERROR " + st.error().message();
  std::vector<std::string> argv = {"nsenter", "--target", std::to_string(st->pid), "--all"};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  auto r = run_checked(argv);
  return r.ok() ? *r : "ERROR " + r.error().message();
}

// Polls pred every 10 ms until it holds or the timeout passes; its last value.
template <typename Pred>
bool wait_for(Pred pred, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "t" + fs::random_hex(3);
    state_ = std::filesystem::path("/var/tmp") / ("prewarm-test-" + tag_);
    auto ctx = engine::make_context(state_);
    ASSERT_TRUE(ctx.ok()) << ctx.error().to_string();
    ctx_ = std::move(ctx).value();
    ctx_.net.bridge = "pwbr" + tag_;
    ctx_.net.state_dir = net::net_state_dir(ctx_.net.bridge);
    // A subnet of its own per test that nothing on the host overlaps.
    ctx_.net.subnet = testing::free_test_subnet(tag_.substr(1));
  }

  void TearDown() override {
    if (state_.empty()) return;
    if (auto l = lifecycle::list_instances(ctx_); l.ok())
      for (const auto& s : *l) {
        Status st = lifecycle::remove_instance(ctx_, s.record.id);
        EXPECT_TRUE(st.ok()) << st.error().to_string();
      }
    EXPECT_EQ(bridge_ports(ctx_.net.bridge), "") << "veths left on the bridge";
    (void)net::remove_bridge_if_unused(ctx_.net);
    EXPECT_FALSE(std::filesystem::exists("/sys/class/net/" + ctx_.net.bridge));
    std::string left = leftovers(state_.filename().string());
    // Instance ids don't carry the state dir's name; check them by their image names too.
    for (const auto& name : names_) left += leftovers(name + "-");
    EXPECT_EQ(left, "") << "left behind";
    if (HasFailure()) {
      std::cerr << "state dir kept for inspection: " << state_ << "\n";
    } else {
      (void)fs::remove_all(state_);
    }
  }

  // Registers an image name whose instances must all be gone after the test.
  void track(const std::string& name) { names_.push_back(name); }

  engine::Context ctx_;
  std::filesystem::path state_;
  std::string tag_;
  std::vector<std::string> names_;
};

}  // namespace prewarm::testing
