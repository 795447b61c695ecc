// The prewarm CLI as a user runs it: bake, run, ps, rm, images, inspect, doctor, and its
// errors. Each test has its own state dir, bridge and subnet.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <regex>
#include <csignal>
#include <thread>

#include "base/fs.h"
#include "base/subprocess.h"
#include "support/cli.h"
#include "support/engine_fixture.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "e" + fs::random_hex(3);
    state_ = stdfs::path("/var/tmp") / ("prewarm-e2e-" + tag_);
    unsigned third = 100 + (std::stoul(tag_.substr(1), nullptr, 16) % 150);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=pwbr" + tag_,
            "PREWARM_SUBNET=10.89." + std::to_string(third) + ".0/24"};
  }

  void TearDown() override {
    if (state_.empty()) return;
    auto rm = prewarm({"rm", "--all"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(bridge_ports("pwbr" + tag_), "") << "veths left on the bridge";
    (void)run_checked({"ip", "link", "del", "pwbr" + tag_});
    EXPECT_EQ(leftovers(name_ + "-"), "");
    if (!HasFailure()) (void)fs::remove_all(state_);
  }

  RunResult prewarm(const std::vector<std::string>& args) { return run_prewarm(args, env_); }

  static int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

  std::string tag_, name_ = "never";
  stdfs::path state_;
  std::vector<std::string> env_;
};

TEST_F(CliTest, BakeRunPsRmRoundTrip) {
  name_ = "counter-" + tag_;
  auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;
  EXPECT_NE(bake.out.find("baked " + name_), std::string::npos) << bake.out;
  EXPECT_NE(bake.out.find("checkpoint"), std::string::npos);  // phase timings

  auto images = prewarm({"images"});
  EXPECT_NE(images.out.find(name_), std::string::npos) << images.out;
  auto inspect = prewarm({"inspect", name_});
  ASSERT_EQ(code(inspect), 0) << inspect.err;
  auto manifest = json::parse(inspect.out);
  EXPECT_EQ(manifest["verified"], true);
  EXPECT_EQ(manifest["host"]["criuVersion"].get<std::string>().substr(0, 3), "4.2");

  auto run = prewarm({"run", name_, "--count", "2"});
  ASSERT_EQ(code(run), 0) << run.err;
  std::regex line(name_ + "-[0-9a-f]{8} +(10\\.89\\.[0-9.]+) +ready in .* restore");
  auto lines = std::distance(std::sregex_iterator(run.out.begin(), run.out.end(), line),
                             std::sregex_iterator());
  EXPECT_EQ(lines, 2) << run.out;

  auto ps = prewarm({"ps", "--json"});
  ASSERT_EQ(code(ps), 0) << ps.err;
  auto list = json::parse(ps.out);
  ASSERT_EQ(list.size(), 2u);
  for (const auto& i : list) {
    EXPECT_EQ(i["state"], "ready");  // the lifecycle's
    EXPECT_EQ(i["runtimeState"], "running");  // the process's, as the runtime sees it
    EXPECT_EQ(i["startedBy"], "restore");
    EXPECT_EQ(i["runtime"], "criu");
  }

  auto cold = prewarm({"run", name_, "--cold"});
  ASSERT_EQ(code(cold), 0) << cold.err;
  EXPECT_NE(cold.out.find(" cold"), std::string::npos) << cold.out;

  auto rm_one = prewarm({"rm", list[0]["id"].get<std::string>()});
  EXPECT_EQ(code(rm_one), 0) << rm_one.err;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 2u);
  auto rm_all = prewarm({"rm", "--all"});
  EXPECT_EQ(code(rm_all), 0) << rm_all.err;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 0u);
  EXPECT_EQ(leftovers(name_ + "-"), "");
}

TEST_F(CliTest, MalformedSpecNamesTheField) {
  auto spec = state_ / "bad.yaml";
  ASSERT_TRUE(fs::make_dirs(state_).ok());
  ASSERT_TRUE(fs::write_file(spec, "name: bad\nrootfs: {directory: /}\ncommand: [\"/bin/true\"]\n"
                                   "readinessProbe:\n  httpGet: {path: /, port: 70000}\n").ok());
  auto r = prewarm({"bake", spec.string()});
  EXPECT_EQ(code(r), 1);
  EXPECT_NE(r.err.find("readinessProbe.httpGet.port"), std::string::npos) << r.err;
}

TEST_F(CliTest, UnknownImageAndInstanceAreClearErrors) {
  auto run = prewarm({"run", "nosuchimage"});
  EXPECT_EQ(code(run), 1);
  EXPECT_NE(run.err.find("no image named 'nosuchimage'"), std::string::npos) << run.err;
  auto rm = prewarm({"rm", "nosuchinstance"});
  EXPECT_EQ(code(rm), 1);
  EXPECT_NE(rm.err.find("no instance nosuchinstance"), std::string::npos) << rm.err;
  auto missing_spec = prewarm({"bake", "/nonexistent/spec.yaml"});
  EXPECT_EQ(code(missing_spec), 1);
  EXPECT_NE(missing_spec.err.find("/nonexistent/spec.yaml"), std::string::npos) << missing_spec.err;
}

TEST_F(CliTest, DoctorPassesOnAPreparedHost) {
  auto r = prewarm({"doctor"});
  EXPECT_EQ(code(r), 0) << r.out;
  EXPECT_NE(r.out.find("criu"), std::string::npos);
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST_F(CliTest, DoctorSaysWhatIsMissing) {
  env_.push_back("PREWARM_CRIU=/nonexistent/criu");
  auto r = prewarm({"doctor"});
  EXPECT_EQ(code(r), 1);
  EXPECT_NE(r.out.find("FAIL criu"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("setup.sh"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace prewarm::testing

namespace prewarm::testing {
namespace {

// prewarm killed (SIGKILL) at different points of `run --count 2`: the next command undoes what
// the dead one left half-made (netns, veth, IP, overlay, cgroups, CRIU and what it restored,
// backend state), keeps what it had finished, and nothing leaks (TearDown checks).
TEST_F(CliTest, KilledRunIsRecoveredByTheNextCommand) {
  name_ = "counter-" + tag_;
  auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;
  int recovered = 0;
  for (int delay_ms : {0, 3, 6, 10, 15, 25, 40, 70, 120}) {
    SCOPED_TRACE("killed after " + std::to_string(delay_ms) + " ms");
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm", "run", name_, "--count", "2"};
    o.env = env_;
    auto child = spawn(o);
    ASSERT_TRUE(child.ok()) << child.error().message();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    child->kill(SIGKILL);
    ASSERT_TRUE(child->wait(std::chrono::seconds(10)).ok());

    auto ps = prewarm({"ps", "--json"});
    ASSERT_EQ(code(ps), 0) << ps.err;
    if (ps.err.find("left half-made") != std::string::npos) ++recovered;
    auto list = json::parse(ps.out);
    for (const auto& i : list) {
      // Only instances that were ready survive, and they run.
      EXPECT_EQ(i["state"], "ready") << i.dump();
      EXPECT_EQ(i["runtimeState"], "running") << i.dump();
    }
  }
  // Some kills must have hit a start in the middle, or this tested nothing.
  EXPECT_GT(recovered, 0);
  auto rm = prewarm({"rm", "--all"});
  EXPECT_EQ(code(rm), 0) << rm.err;
  EXPECT_TRUE(stdfs::is_empty(state_ / "instances"));
}

}  // namespace
}  // namespace prewarm::testing
