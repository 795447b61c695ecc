// Lazy restores with real CRIU (lazy-pages daemon, userfaultfd) and both restore backends: the
// restored app's state, the working set learnt at bake, the page server's lifetime, and what
// happens when the page server dies with pages still to copy.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "bake/bake.h"
#include "base/subprocess.h"
#include "criu/lazy_pages.h"
#include "image/image.h"
#include "image/pagemap.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "probe/probe.h"
#include "support/engine_fixture.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using lifecycle::StartMode;
using namespace std::chrono_literals;

std::string get(const std::string& ip, const std::string& path) {
  auto r = probe::http_get(ip, 8080, path, {}, std::chrono::milliseconds(3000));
  if (!r.ok()) return "ERROR " + r.error().message();
  return r->body;
}

bool alive(pid_t pid) {
  if (pid <= 0) return false;
  std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(") ");
  return paren != std::string::npos && stat.compare(paren + 2, 1, "Z") != 0;
}

// The supervisor's pid (from its pid file) and its child, the daemon.
std::pair<pid_t, pid_t> page_server_pids(const stdfs::path& work) {
  long sup = 0;
  std::sscanf(slurp(work / criu::kLazyPagesPidFile).c_str(), "%ld", &sup);
  long daemon = 0;
  std::string children =
      slurp("/proc/" + std::to_string(sup) + "/task/" + std::to_string(sup) + "/children");
  std::sscanf(children.c_str(), "%ld", &daemon);
  return {static_cast<pid_t>(sup), static_cast<pid_t>(daemon)};
}

class LazyTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    // The page server of a restore straight from the store runs prewarm itself.
    ctx_.config.prewarm_binary = PREWARM_BINARY_DIR "/cmd/prewarm/prewarm";
  }

  images::LoadedImage bake_tiny(bool working_set = true) {
    bake::BakeOptions o;
    o.name = "lazy-" + tag_;
    o.working_set = working_set;
    track(o.name);
    auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
    EXPECT_TRUE(baked.ok()) << baked.error().to_string();
    if (baked.ok() && working_set) {
      EXPECT_TRUE(baked->working_set_note.empty()) << baked->working_set_note;
      EXPECT_GT(baked->working_set_pages, 0u);
    }
    auto img = images::load_image(ctx_, o.name);
    EXPECT_TRUE(img.ok()) << img.error().to_string();
    return img.ok() ? *img : images::LoadedImage{};
  }

  Result<lifecycle::Started> start_lazy(const images::LoadedImage& img,
                                        const std::filesystem::path& record = {}) {
    lifecycle::StartOptions o;
    o.mode = StartMode::kRestore;
    o.paging = "lazy";
    o.record_faults = record;
    return lifecycle::Instances(ctx_).start(img, o);
  }

  // A restored tiny counter: its state continues from the checkpoint under its own name.
  void expect_warm(const lifecycle::Started& s) {
    EXPECT_EQ(s.record.started_by, "restore") << s.record.fallback_reason;
    EXPECT_EQ(s.record.paging, "lazy");
    std::string body = get(s.record.ip, "/");
    EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
    EXPECT_NE(body.find("hostname=" + s.record.id), std::string::npos) << body;
    EXPECT_EQ(exec_in(ctx_, s.record.id, {"cat", "/tmp/warm-marker"}), "warmed\n");
  }

  // Waits until the instance's page server has copied everything and gone.
  void expect_transfer_completes(const std::string& id) {
    const stdfs::path work = ctx_.instance_dir(id) / "criu";
    auto [sup, daemon] = page_server_pids(work);
    EXPECT_TRUE(wait_for(
        [&] {
          return criu::lazy_pages_outcome(work).state == criu::LazyPagesOutcome::State::kComplete;
        },
        20s))
        << slurp(work / criu::kLazyPagesOutcome) << slurp(work / criu::kLazyPagesLog);
    EXPECT_TRUE(wait_for([&] { return !alive(sup) && !alive(daemon); }, 5s))
        << "page server still running: " << sup << " " << daemon;
  }
};

TEST_F(LazyTest, BakeLearnsAWorkingSetAndALazyRestoreContinuesTheApp) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  auto ws = image::parse_working_set(slurp(img.dir / image::kWorkingSetFile));
  ASSERT_TRUE(ws.ok()) << ws.error().to_string();
  EXPECT_GT(image::working_set_pages(*ws), 0u);
  // The working set is part of the sealed image.
  EXPECT_NE(slurp(img.dir / "manifest.json").find(image::kWorkingSetFile), std::string::npos);

  auto s = start_lazy(img);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  expect_warm(*s);
  EXPECT_GT(s->timings.runtime_phases["working_set_pages"], 0);
  expect_transfer_completes(s->record.id);
  // After the transfer the app still has every page it had.
  EXPECT_NE(get(s->record.ip, "/").find("count=7 "), std::string::npos);
  auto l = lifecycle::list_instances(ctx_);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].runtime_state, "running");
  EXPECT_EQ((*l)[0].record.error, "");
}

TEST_F(LazyTest, RuncBackendRestoresLazilyToo) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  ASSERT_TRUE(ctx_.use_runtime("runc").ok());
  auto s = start_lazy(img);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.runtime, "runc");
  expect_warm(*s);
  expect_transfer_completes(s->record.id);
}

// Without a working set (baked with --no-working-set) and with a stale one (naming pages and
// tasks the checkpoint does not have), a lazy restore is only slower, never wrong.
TEST_F(LazyTest, MissingOrStaleWorkingSetStillRestoresCorrectly) {
  auto img = bake_tiny(/*working_set=*/false);
  ASSERT_FALSE(img.name.empty());
  EXPECT_FALSE(stdfs::exists(img.dir / image::kWorkingSetFile));
  auto s = start_lazy(img);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  expect_warm(*s);
  EXPECT_EQ(s->timings.runtime_phases["working_set_pages"], 0);
  expect_transfer_completes(s->record.id);

  // A copy of the image whose working set is another app's (addresses it never had).
  const stdfs::path copy = state_ / "stale-image";
  ASSERT_TRUE(run_checked({"cp", "-a", img.dir.string(), copy.string()}).ok());
  ASSERT_TRUE(fs::write_file(copy / image::kWorkingSetFile,
                             "1 7ff000000000 64\n1 10000 3\n4242 400000 10\n")
                  .ok());
  images::LoadedImage stale = img;
  stale.dir = copy;
  auto t = start_lazy(stale);
  ASSERT_TRUE(t.ok()) << t.error().to_string();
  expect_warm(*t);
  expect_transfer_completes(t->record.id);
  // A working-set file that is not one is ignored the same way.
  ASSERT_TRUE(fs::write_file(copy / image::kWorkingSetFile, "not a working set\n").ok());
  auto u = start_lazy(stale);
  ASSERT_TRUE(u.ok()) << u.error().to_string();
  expect_warm(*u);
}

// The page server dies while pages are still to be copied (here: a trial-mode server, which
// copies nothing in the background, so pages are certainly left): the instance is stopped,
// never left running on zero pages; the reason is in `ps` and the app's log; removal leaves
// nothing.
TEST_F(LazyTest, PageServerKilledMidTransferStopsTheInstanceAndSaysWhy) {
  auto img = bake_tiny(/*working_set=*/false);
  ASSERT_FALSE(img.name.empty());
  const stdfs::path record = state_ / "faults";
  auto s = start_lazy(img, record);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  ASSERT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
  const std::string id = s->record.id;
  const stdfs::path work = ctx_.instance_dir(id) / "criu";
  auto [sup, daemon] = page_server_pids(work);
  ASSERT_TRUE(alive(sup));
  ASSERT_TRUE(alive(daemon));
  EXPECT_EQ(criu::lazy_pages_outcome(work).state, criu::LazyPagesOutcome::State::kCopying);
  // The daemon recorded the faults the probe caused (the counter had to run to answer).
  EXPECT_FALSE(slurp(record).empty());

  ASSERT_EQ(::kill(daemon, SIGKILL), 0);
  EXPECT_TRUE(wait_for([&] { return !alive(s->pid); }, 10s)) << "the instance still runs";
  EXPECT_TRUE(wait_for([&] { return !alive(sup); }, 10s)) << "the supervisor still runs";
  auto outcome = criu::lazy_pages_outcome(work);
  EXPECT_EQ(outcome.state, criu::LazyPagesOutcome::State::kFailed);
  EXPECT_NE(outcome.reason.find("killed by signal 9"), std::string::npos) << outcome.reason;
  EXPECT_NE(outcome.reason.find("the instance was stopped"), std::string::npos) << outcome.reason;
  EXPECT_NE(slurp(ctx_.instance_dir(id) / "app.log").find("prewarm: lazy restore failed"),
            std::string::npos);
  auto l = lifecycle::list_instances(ctx_);
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_NE((*l)[0].runtime_state, "running");
  EXPECT_NE((*l)[0].record.error.find("lazy restore failed"), std::string::npos)
      << (*l)[0].record.error;
  Status rm = lifecycle::remove_instance(ctx_, id);
  EXPECT_TRUE(rm.ok()) << rm.error().to_string();
  EXPECT_FALSE(stdfs::exists(ctx_.instance_dir(id)));
}

// A node with the image in its store but no unpacked copy (e.g. just pulled): a lazy restore
// unpacks only the small files and the working set (a lazy copy, its pages files sparse), and
// the rest is served straight from the store's compressed chunks by prewarm's page server.
TEST_F(LazyTest, RestoresStraightFromTheStoreWithoutUnpacking) {
  auto baked = bake_tiny();
  ASSERT_FALSE(baked.name.empty());
  ASSERT_TRUE(fs::remove_all(ctx_.image_dir(baked.name)).ok());
  images::LoadOptions lo;
  lo.paging = "lazy";
  auto img = images::load_image(ctx_, baked.name, lo);
  ASSERT_TRUE(img.ok()) << img.error().to_string();
  EXPECT_EQ(img->pages_from_store, img->store_digest);
  EXPECT_FALSE(stdfs::exists(ctx_.image_dir(baked.name))) << "unpacked anyway";
  // The lazy copy's pages files hold only what is restored before the app resumes.
  uint64_t size = 0, allocated = 0;
  for (const auto& e : stdfs::directory_iterator(img->dir / image::kCheckpointDir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("pages-", 0) != 0) continue;
    struct stat st {};
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    size += static_cast<uint64_t>(st.st_size);
    allocated += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  EXPECT_GT(size, 0u);
  EXPECT_LT(allocated, size) << "the pages file was written whole";

  auto s = start_lazy(*img);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  expect_warm(*s);
  expect_transfer_completes(s->record.id);
  EXPECT_NE(get(s->record.ip, "/").find("count=7 "), std::string::npos);
  // `prewarm run`'s way, twice: the second start reuses the lazy copy.
  for (int i = 0; i < 2; ++i) {
    auto again = images::load_image(ctx_, baked.name, lo);
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    EXPECT_EQ(again->dir, img->dir);
    auto t = start_lazy(*again);
    ASSERT_TRUE(t.ok()) << t.error().to_string();
    expect_warm(*t);
  }
  // An eager start unpacks the image as before.
  auto eager = images::load_image(ctx_, baked.name);
  ASSERT_TRUE(eager.ok()) << eager.error().to_string();
  EXPECT_TRUE(eager->pages_from_store.empty());
  EXPECT_EQ(eager->dir, ctx_.image_dir(baked.name));
}

// Removing an instance while its pages are still being copied stops the page server with it.
TEST_F(LazyTest, RemovalDuringTheTransferStopsThePageServer) {
  auto img = bake_tiny(/*working_set=*/false);
  ASSERT_FALSE(img.name.empty());
  auto s = start_lazy(img, state_ / "faults");  // never completes by itself
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  auto [sup, daemon] = page_server_pids(ctx_.instance_dir(s->record.id) / "criu");
  ASSERT_TRUE(alive(sup));
  Status rm = lifecycle::remove_instance(ctx_, s->record.id);
  EXPECT_TRUE(rm.ok()) << rm.error().to_string();
  EXPECT_TRUE(wait_for([&] { return !alive(sup) && !alive(daemon); }, 5s));
}

}  // namespace
}  // namespace prewarm::testing
