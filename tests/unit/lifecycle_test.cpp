// The instance lifecycle with fake seams (no root): states, the restore → cold fallback, identity
// before resume, undo on failure, removal, listing and crash recovery.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "base/fs.h"
#include "lifecycle/instance.h"
#include "lifecycle/lock.h"
#include "spec/app_spec.h"
#include "support/fakes.h"
#include "support/files.h"

namespace prewarm::lifecycle {
namespace {

namespace stdfs = std::filesystem;
using testing::EventLog;
using testing::FakeIdentity;
using testing::FakeRootfs;
using testing::FakeRuntime;
using testing::FakeSandbox;

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_.state_dir = tmp_.path() / "state";
    for (const auto& d : {ctx_.state_dir, ctx_.images_dir(), ctx_.instances_dir(),
                          ctx_.stamps_dir(), ctx_.layers_dir()})
      ASSERT_TRUE(fs::make_dirs(d).ok());
    runtime_ = std::make_shared<FakeRuntime>(log_);
    ctx_.runtime = runtime_;
    ctx_.runtimes["fake"] = runtime_;
    sandbox_ = std::make_shared<FakeSandbox>(log_);

    auto spec = spec::parse_spec("name: app\nrootfs: {directory: /r}\ncommand: [/app]\n", "/");
    ASSERT_TRUE(spec.ok()) << spec.error().to_string();
    img_.name = "app";
    img_.dir = ctx_.image_dir("app");
    img_.spec = *spec;
    img_.store_digest = "sha256:feed";
  }

  Seams seams() {
    Seams s;
    s.sandbox = sandbox_;
    s.rootfs = [this](const LoadedImage&) {
      return std::make_unique<FakeRootfs>(log_, fail_rootfs_);
    };
    s.release_rootfs = [](const stdfs::path& dir) { return fs::remove_all(dir / "rootfs"); };
    s.identity = [this](const InstanceRecord& r) {
      return std::make_unique<FakeIdentity>(log_, r.hostname, fail_identity_);
    };
    s.host_check = [this](const LoadedImage&) { return host_; };
    s.probe_target = [](const InstanceRecord& r) { return probe::Target{r.ip, {}}; };
    return s;
  }

  // Nothing of any instance is left: directories, sandboxes, containers.
  void expect_nothing_left() {
    EXPECT_TRUE(stdfs::is_empty(ctx_.instances_dir()));
    EXPECT_TRUE(sandbox_->live().empty());
    EXPECT_EQ(runtime_->count(), 0u);
  }

  std::vector<std::string> events_for(const std::string& id) {
    std::vector<std::string> out;
    for (const auto& e : log_.events())
      if (e.find(id) != std::string::npos) out.push_back(e.substr(0, e.find(' ')));
    return out;
  }

  testing::TempDir tmp_;
  EventLog log_;
  engine::Context ctx_;
  std::shared_ptr<FakeRuntime> runtime_;
  std::shared_ptr<FakeSandbox> sandbox_;
  LoadedImage img_;
  HostCheck host_;
  bool fail_rootfs_ = false, fail_identity_ = false;
};

TEST_F(LifecycleTest, RestoreReachesReadyWithIdentityAppliedBeforeResume) {
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  const auto& r = s->record;
  EXPECT_EQ(r.state, InstanceState::kReady);
  EXPECT_EQ(r.started_by, "restore");
  EXPECT_EQ(r.runtime, "fake");
  EXPECT_EQ(r.hostname, r.id);
  EXPECT_EQ(r.image_digest, "sha256:feed");
  EXPECT_EQ(r.id.rfind("app-", 0), 0u);
  EXPECT_EQ(r.id.size(), 3u + 9u);
  EXPECT_EQ(s->pid, 1000);
  // sandbox, rootfs, restore, identity (the tasks still stopped), then resume.
  EXPECT_EQ(events_for(r.id), (std::vector<std::string>{"sandbox", "rootfs-restore", "restore",
                                                         "identity", "resume"}));
  // The one record on disk says the same.
  auto disk = load_record(ctx_.instance_dir(r.id));
  ASSERT_TRUE(disk.ok()) << disk.error().to_string();
  EXPECT_EQ(disk->state, InstanceState::kReady);
  EXPECT_EQ(disk->ip, r.ip);
  // Every millisecond is in a bucket; the runtime's own split is kept.
  const auto& t = s->timings;
  double sum = t.verify_ms + t.record_ms + t.network_ms + t.prepare_ms + t.runtime_ms +
               t.identity_ms + t.probe_ms + t.other_ms;
  EXPECT_NEAR(sum, t.total_ms, 1e-6);
  EXPECT_GE(t.other_ms, 0);
  EXPECT_EQ(t.runtime_phases.at("criu_ms"), 1.0);
}

TEST_F(LifecycleTest, FailedRestoreFallsBackToColdWithTheReasonAndAFreshSandbox) {
  runtime_->fail_restore = true;
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  const auto& r = s->record;
  EXPECT_EQ(r.started_by, "cold");
  EXPECT_EQ(r.state, InstanceState::kReady);
  EXPECT_NE(r.fallback_reason.find("fake restore failed"), std::string::npos);
  EXPECT_NE(r.fallback_reason.find("fake reason"), std::string::npos) << "CRIU's log lines";
  EXPECT_FALSE(s->host_cannot_restore) << "a restore was tried and failed";
  EXPECT_EQ(events_for(r.id),
            (std::vector<std::string>{"sandbox", "rootfs-restore", "restore", "remove",
                                      "unsandbox", "sandbox", "rootfs-cold", "run"}));
  EXPECT_EQ(sandbox_->live(), std::set<std::string>{r.id});
}

TEST_F(LifecycleTest, IdentityFailureFailsTheRestoreNotTheInstance) {
  fail_identity_ = true;
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "cold");
  EXPECT_NE(s->record.fallback_reason.find("fake identity failed"), std::string::npos);
  EXPECT_FALSE(log_.has("resume ")) << "the app must never run with the baked identity";
}

TEST_F(LifecycleTest, HostThatCannotRestoreGoesColdWithoutTrying) {
  host_.blocker = "CPU lacks avx512";
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "cold");
  EXPECT_EQ(s->record.fallback_reason, "CPU lacks avx512");
  EXPECT_TRUE(s->host_cannot_restore);
  EXPECT_FALSE(log_.has("restore "));
}

TEST_F(LifecycleTest, FailedStartUndoesEverything) {
  runtime_->fail_restore = true;
  runtime_->fail_run = true;
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().kind(), ErrorKind::kRuntime);
  EXPECT_NE(s.error().message().find("fake run failed"), std::string::npos);
  expect_nothing_left();
}

TEST_F(LifecycleTest, FailedSandboxOrRootfsUndoesEverything) {
  {
    sandbox_->fail_create = true;
    auto s = Instances(ctx_, seams()).start(img_);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().kind(), ErrorKind::kIo);
    expect_nothing_left();
  }
  sandbox_->fail_create = false;
  fail_rootfs_ = true;
  auto s = Instances(ctx_, seams()).start(img_);
  // The restore's rootfs failing falls back to cold, whose rootfs fails too.
  ASSERT_FALSE(s.ok());
  expect_nothing_left();
}

TEST_F(LifecycleTest, StartManyGivesIndependentInstances) {
  Instances inst(ctx_, seams());
  auto all = inst.start_many(img_, 4);
  ASSERT_EQ(all.size(), 4u);
  std::set<std::string> ids, ips;
  for (auto& s : all) {
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    ids.insert(s->record.id);
    ips.insert(s->record.ip);
  }
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(ips.size(), 4u);
  auto l = inst.list();
  ASSERT_TRUE(l.ok()) << l.error().to_string();
  ASSERT_EQ(l->size(), 4u);
  for (const auto& st : *l) EXPECT_EQ(st.runtime_state, "running");
  for (const auto& id : ids) ASSERT_TRUE(inst.remove(id).ok());
  expect_nothing_left();
}

TEST_F(LifecycleTest, RemoveOfUnknownInstanceIsNotFound) {
  Status st = Instances(ctx_, seams()).remove("app-00000000");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(Instances(ctx_, seams()).remove("../etc").error().kind(), ErrorKind::kInvalidInput);
}

TEST_F(LifecycleTest, ListSaysWhenTheRuntimeCannotTell) {
  Instances inst(ctx_, seams());
  ASSERT_TRUE(inst.start(img_).ok());
  runtime_->fail_list = true;
  auto l = inst.list();
  ASSERT_FALSE(l.ok()) << "a runtime failure must not show every instance as missing";
  EXPECT_NE(l.error().message().find("fake list failed"), std::string::npos);
}

TEST_F(LifecycleTest, RecoveryUndoesHalfMadeInstancesAndAdoptsLiveOnes) {
  Instances inst(ctx_, seams());
  auto ready = inst.start(img_);
  ASSERT_TRUE(ready.ok());
  // A start that died after allocating its sandbox, before writing any record.
  const std::string norec = "app-0000dead";
  ASSERT_EQ(::mkdir(ctx_.instance_dir(norec).c_str(), 0700), 0);
  sandbox_->leak(norec);
  // One that died mid-restore.
  const std::string mid = "app-0000beef";
  ASSERT_EQ(::mkdir(ctx_.instance_dir(mid).c_str(), 0700), 0);
  InstanceRecord rec;
  rec.id = mid;
  rec.state = InstanceState::kRestoring;
  rec.runtime = "fake";
  rec.sandbox = "own";
  ASSERT_TRUE(save_record(ctx_.instance_dir(mid), rec).ok());
  sandbox_->leak(mid);
  // One another prewarm is still starting (it holds the lock).
  const std::string busy = "app-0000b05e";
  auto lock = InstanceLock::create(ctx_.instance_dir(busy));
  ASSERT_TRUE(lock.ok());

  auto rep = inst.recover();
  ASSERT_TRUE(rep.ok()) << rep.error().to_string();
  EXPECT_EQ(rep->adopted, std::vector<std::string>{ready->record.id});
  EXPECT_EQ(std::set<std::string>(rep->removed.begin(), rep->removed.end()),
            (std::set<std::string>{norec, mid}));
  EXPECT_EQ(rep->busy, std::vector<std::string>{busy});
  EXPECT_TRUE(rep->problems.empty());
  EXPECT_FALSE(stdfs::exists(ctx_.instance_dir(norec)));
  EXPECT_FALSE(stdfs::exists(ctx_.instance_dir(mid)));
  EXPECT_TRUE(stdfs::exists(ctx_.instance_dir(busy)));
  EXPECT_EQ(sandbox_->live(), std::set<std::string>{ready->record.id});
}

// A bake keeps its instance's lock until it is done; a bake instance whose lock is free was left
// by a bake that died, ready or not.
TEST_F(LifecycleTest, BakeInstancesAreKeptWhileTheirBakeLivesAndUndoneAfter) {
  Instances inst(ctx_, seams());
  spec::AppSpec spec = img_.spec;
  auto s = inst.start_cold_from_spec(spec, tmp_.path() / "base", "app-0000ba4e", -1);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  ASSERT_TRUE(s->lock);
  EXPECT_EQ(s->record.hostname, "app") << "the checkpoint's hostname is the app's name";
  EXPECT_EQ(s->record.image, "");
  auto rep = inst.recover();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->busy, std::vector<std::string>{"app-0000ba4e"});
  s->lock.reset();  // the bake died
  rep = inst.recover();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->removed, std::vector<std::string>{"app-0000ba4e"});
  expect_nothing_left();
}

TEST_F(LifecycleTest, RecordsRoundTripAndOldFormatReads) {
  InstanceRecord r;
  r.id = "app-12345678";
  r.state = InstanceState::kPersonalising;
  r.ip = "10.0.0.9";
  r.fallback_reason = "why";
  auto back = record_from_json(record_to_json(r), "x");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, InstanceState::kPersonalising);
  EXPECT_EQ(back->ip, "10.0.0.9");
  // Written before the lifecycle existed: a started instance.
  auto old = record_from_json(R"({"id":"a-1","startedBy":"restore","ip":"10.0.0.2"})", "x");
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->state, InstanceState::kReady);
  EXPECT_EQ(record_from_json(R"({"format":99})", "x").error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(record_from_json(R"({"format":2,"state":"zombie"})", "x").error().kind(),
            ErrorKind::kInvalidInput);
  EXPECT_EQ(record_from_json("[", "x").error().kind(), ErrorKind::kInvalidInput);
}

TEST_F(LifecycleTest, LocksRefuseDuplicatesAndNoticeRemoval) {
  auto dir = ctx_.instance_dir("app-1");
  auto a = InstanceLock::create(dir);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(InstanceLock::create(dir).error().kind(), ErrorKind::kConflict);
  auto b = InstanceLock::try_acquire(dir);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->has_value()) << "held by a";
  EXPECT_EQ(InstanceLock::acquire(dir, std::chrono::milliseconds(20)).error().kind(),
            ErrorKind::kUnavailable);
  // The holder removes the directory: a waiter finds it gone rather than locking a ghost.
  std::thread remover([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    (void)fs::remove_all(dir);
    auto released = std::move(*a);
    (void)released;
  });
  auto c = InstanceLock::acquire(dir, std::chrono::seconds(10));
  remover.join();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind(), ErrorKind::kNotFound);
}

TEST_F(LifecycleTest, StateNamesRoundTrip) {
  for (auto s : {InstanceState::kPreparing, InstanceState::kRestoring, InstanceState::kRestored,
                 InstanceState::kPersonalising, InstanceState::kStarting, InstanceState::kReady,
                 InstanceState::kStopping, InstanceState::kFailed}) {
    EXPECT_EQ(parse_state(state_name(s)), s);
    // Ready and parked (restored) instances rest; the others are a prewarm's work in progress.
    EXPECT_EQ(is_transitional(s), s != InstanceState::kReady && s != InstanceState::kRestored);
  }
  EXPECT_FALSE(parse_state("zombie").has_value());
}


StartOptions parking() {
  StartOptions o;
  o.park = true;
  return o;
}

TEST_F(LifecycleTest, ParkedInstanceIsRestoredFrozenAndNotPersonalised) {
  Instances inst(ctx_, seams());
  auto s = inst.start(img_, parking());
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  const auto& r = s->record;
  EXPECT_EQ(r.state, InstanceState::kRestored);
  EXPECT_EQ(r.started_by, "restore");
  EXPECT_FALSE(r.ip.empty()) << "the network is attached";
  // Restored and frozen: no identity, no resume, no probe.
  EXPECT_EQ(events_for(r.id), (std::vector<std::string>{"sandbox", "rootfs-restore", "restore", "freeze"}));
  EXPECT_EQ(runtime_->state(r.id)->status, "paused");
  auto on_disk = load_record(ctx_.instance_dir(r.id));
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(on_disk->state, InstanceState::kRestored);
  EXPECT_EQ(*inst.parked(img_), std::vector<std::string>{r.id});
  // A parked instance rests: recovery adopts it.
  auto rep = inst.recover();
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(rep->adopted, std::vector<std::string>{r.id});
  EXPECT_TRUE(rep->removed.empty());
}

TEST_F(LifecycleTest, ClaimPersonalisesThawsAndLeavesTheRestParked) {
  Instances inst(ctx_, seams());
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    auto s = inst.start(img_, parking());
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    ids.push_back(s->record.id);
  }
  ASSERT_EQ(inst.parked(img_)->size(), 2u);
  auto c = inst.claim(img_);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  const std::string first = c->record.id;
  ASSERT_TRUE(first == ids[0] || first == ids[1]);
  const std::string other = first == ids[0] ? ids[1] : ids[0];
  EXPECT_EQ(c->record.state, InstanceState::kReady);
  EXPECT_EQ(c->record.hostname, first);
  EXPECT_GE(c->timings.total_ms, c->timings.identity_ms + c->timings.runtime_ms);
  // Identity while still frozen, then thawed.
  EXPECT_EQ(events_for(first), (std::vector<std::string>{"sandbox", "rootfs-restore", "restore",
                                                         "freeze", "identity", "thaw"}));
  EXPECT_EQ(runtime_->state(first)->status, "running");
  EXPECT_EQ(load_record(ctx_.instance_dir(first))->state, InstanceState::kReady);
  EXPECT_EQ(*inst.parked(img_), std::vector<std::string>{other});

  StartOptions named;
  named.hostname = "web-1";
  auto second = inst.claim(img_, named);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->record.id, other);
  EXPECT_EQ(second->record.hostname, "web-1");
  EXPECT_EQ(load_record(ctx_.instance_dir(other))->hostname, "web-1");
  auto none = inst.claim(img_);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(inst.parked(img_)->empty());
}

TEST_F(LifecycleTest, ClaimLeavesParkedInstancesOfAnotherBuildAlone) {
  Instances inst(ctx_, seams());
  ASSERT_TRUE(inst.start(img_, parking()).ok());
  LoadedImage rebaked = img_;
  rebaked.store_digest = "sha256:beef";
  EXPECT_TRUE(inst.parked(rebaked)->empty());
  auto c = inst.claim(rebaked);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(inst.parked(img_)->size(), 1u);
}

TEST_F(LifecycleTest, AParkedInstanceThatFailsItsClaimIsRemovedAndTheNextOneServes) {
  Instances inst(ctx_, seams());
  ASSERT_TRUE(inst.start(img_, parking()).ok());
  ASSERT_TRUE(inst.start(img_, parking()).ok());
  // The first one's container is gone (killed while parked): its claim fails at state().
  const std::string oldest = (*inst.parked(img_))[0];
  ASSERT_TRUE(runtime_->remove(oldest).ok());
  auto c = inst.claim(img_);
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_NE(c->record.id, oldest);
  EXPECT_FALSE(stdfs::exists(ctx_.instance_dir(oldest))) << "the failed one is removed";
  EXPECT_EQ(sandbox_->live().size(), 1u);
}

TEST_F(LifecycleTest, AFailedParkIsAnErrorNotAColdStartAndLeavesNothing) {
  runtime_->fail_restore = true;
  Instances inst(ctx_, seams());
  auto s = inst.start(img_, parking());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("fake restore failed"), std::string::npos) << s.error().to_string();
  expect_nothing_left();
  host_.blocker = "CPU lacks avx512";
  runtime_->fail_restore = false;
  auto blocked = inst.start(img_, parking());
  ASSERT_FALSE(blocked.ok());
  EXPECT_EQ(blocked.error().kind(), ErrorKind::kIncompatibleHost);
  expect_nothing_left();
  StartOptions cold = parking();
  cold.mode = StartMode::kCold;
  EXPECT_EQ(inst.start(img_, cold).error().kind(), ErrorKind::kInvalidInput);
}

TEST_F(LifecycleTest, InspectShowsOneInstanceAsListDoes) {
  Instances inst(ctx_, seams());
  auto s = inst.start(img_);
  ASSERT_TRUE(s.ok());
  auto one = inst.inspect(s->record.id);
  ASSERT_TRUE(one.ok()) << one.error().to_string();
  auto all = inst.list();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(one->record.id, (*all)[0].record.id);
  EXPECT_EQ(one->record.state, InstanceState::kReady);
  EXPECT_EQ(one->runtime_state, (*all)[0].runtime_state);
  EXPECT_EQ(one->runtime_state, "running");
  EXPECT_EQ(one->pid, (*all)[0].pid);
  ASSERT_TRUE(runtime_->remove(s->record.id).ok());
  EXPECT_EQ(inst.inspect(s->record.id)->runtime_state, "missing");
  EXPECT_EQ(inst.inspect("app-nope").error().kind(), ErrorKind::kNotFound);
  EXPECT_EQ(inst.inspect("../x").error().kind(), ErrorKind::kInvalidInput);
}

}  // namespace
}  // namespace prewarm::lifecycle
