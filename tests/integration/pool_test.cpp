// Warm pools with real CRIU and runc: instances parked restored and frozen before they ran,
// claimed with their own hostname and the checkpoint's state, adopted by recovery, removed
// frozen without leaving anything.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "bake/bake.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "oci/cgroup.h"
#include "probe/probe.h"
#include "support/engine_fixture.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;

std::string get(const std::string& ip) {
  auto r = probe::http_get(ip, 8080, "/", {}, std::chrono::milliseconds(3000));
  if (!r.ok()) return "ERROR " + r.error().message();
  return r->body;
}

// The v1 freezer state of the instance's cgroup, as the kernel reports it.
std::string freezer_state(const std::string& id) {
  std::string s = slurp(oci::CgroupSet("/prewarm-" + id).in("freezer") / "freezer.state");
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// A process the kernel has frozen: its cgroup's freezer says so and the task is in the
// refrigerator, not running or sleeping interruptibly as the counter does between requests.
bool task_frozen(pid_t pid) {
  std::string status = slurp("/proc/" + std::to_string(pid) + "/status");
  return status.find("State:\tD") != std::string::npos;
}

class PoolTest : public EngineTest {
 protected:
  images::LoadedImage bake_tiny() {
    bake::BakeOptions o;
    o.name = "pool-" + tag_;
    o.working_set = false;
    track(o.name);
    auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
    EXPECT_TRUE(baked.ok()) << baked.error().to_string();
    auto img = images::load_image(ctx_, o.name);
    EXPECT_TRUE(img.ok()) << img.error().to_string();
    return img.ok() ? *img : images::LoadedImage{};
  }

  void park_claim_and_check(const images::LoadedImage& img, const std::string& runtime) {
    lifecycle::Instances inst(ctx_);
    lifecycle::StartOptions park;
    park.park = true;
    auto parked = inst.start_many(img, 2, park);
    std::vector<std::string> ids;
    for (auto& p : parked) {
      ASSERT_TRUE(p.ok()) << p.error().to_string();
      EXPECT_EQ(p->record.state, lifecycle::InstanceState::kRestored);
      EXPECT_EQ(p->record.runtime, runtime);
      EXPECT_EQ(freezer_state(p->record.id), "FROZEN");
      EXPECT_TRUE(task_frozen(p->pid)) << slurp("/proc/" + std::to_string(p->pid) + "/status");
      ids.push_back(p->record.id);
    }
    auto listed = inst.list();
    ASSERT_TRUE(listed.ok());
    for (const auto& s : *listed) {
      EXPECT_EQ(s.runtime_state, "paused") << s.record.id;
      EXPECT_EQ(s.record.state, lifecycle::InstanceState::kRestored);
    }

    auto a = inst.claim(img);
    ASSERT_TRUE(a.ok()) << a.error().to_string();
    EXPECT_EQ(a->record.state, lifecycle::InstanceState::kReady);
    EXPECT_EQ(freezer_state(a->record.id), "THAWED");
    // The checkpoint's state (six requests at bake), under the claimed name.
    std::string body = get(a->record.ip);
    EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
    EXPECT_NE(body.find("hostname=" + a->record.id), std::string::npos) << body;

    lifecycle::StartOptions named;
    named.hostname = "claimed-" + tag_;
    auto b = inst.claim(img, named);
    ASSERT_TRUE(b.ok()) << b.error().to_string();
    EXPECT_NE(b->record.id, a->record.id);
    EXPECT_NE(b->record.ip, a->record.ip);
    body = get(b->record.ip);
    EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
    EXPECT_NE(body.find("hostname=claimed-" + tag_), std::string::npos) << body;

    auto none = inst.claim(img);
    ASSERT_FALSE(none.ok());
    EXPECT_EQ(none.error().kind(), ErrorKind::kNotFound);
  }
};

TEST_F(PoolTest, ParkedInstancesAreFrozenAndClaimsServeTheCheckpointedState) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  park_claim_and_check(img, "criu");
}

TEST_F(PoolTest, RuncBackendParksAndClaimsToo) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  ASSERT_TRUE(ctx_.use_runtime("runc").ok());
  park_claim_and_check(img, "runc");
}

// A prewarm that starts after the one that parked them adopts parked instances (they are a
// resting state, like ready ones); removing a frozen instance leaves nothing (TearDown checks).
TEST_F(PoolTest, RecoveryKeepsParkedInstancesClaimable) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  lifecycle::StartOptions park;
  park.park = true;
  auto p = lifecycle::Instances(ctx_).start(img, park);
  ASSERT_TRUE(p.ok()) << p.error().to_string();
  auto p2 = lifecycle::Instances(ctx_).start(img, park);
  ASSERT_TRUE(p2.ok()) << p2.error().to_string();
  auto rep = lifecycle::Instances(ctx_).recover();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->adopted.size(), 2u);
  EXPECT_TRUE(rep->removed.empty());
  auto c = lifecycle::Instances(ctx_).claim(img);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_NE(get(c->record.ip).find("count=6 "), std::string::npos);
  // The other one is removed while still frozen.
  auto left = lifecycle::Instances(ctx_).parked(img);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  ASSERT_TRUE(lifecycle::remove_instance(ctx_, (*left)[0]).ok());
}

}  // namespace
}  // namespace prewarm::testing
