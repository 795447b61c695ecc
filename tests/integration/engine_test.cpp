// Bake and restore real containers (runc + CRIU 4.2.1), checking the state of what was
// restored: its counter, its rootfs changes, its own IP and hostname.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>

#include <future>
#include <regex>
#include <set>

#include "bake/bake.h"
#include "lifecycle/instance.h"
#include "image/image.h"
#include "probe/probe.h"
#include "spec/names.h"
#include "support/engine_fixture.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using lifecycle::StartMode;

std::string get(const std::string& ip, const std::string& path) {
  auto r = probe::http_get(ip, 8080, path, {}, std::chrono::milliseconds(3000));
  if (!r.ok()) return "ERROR " + r.error().message();
  return r->body;
}

class TinyTest : public EngineTest {
 protected:
  // Bakes the tiny counter example under a name of this test's own.
  images::LoadedImage bake_tiny(const stdfs::path& spec = PREWARM_EXAMPLE_TINY_SPEC) {
    bake::BakeOptions o;
    o.name = "counter-" + tag_;
    track(o.name);
    auto baked = bake::bake(ctx_, spec, o);
    EXPECT_TRUE(baked.ok()) << baked.error().to_string();
    auto img = images::load_image(ctx_, o.name);
    EXPECT_TRUE(img.ok()) << img.error().to_string();
    return img.ok() ? *img : images::LoadedImage{};
  }

  // Bakes a spec that must fail; checks that no image and no instance are left, and returns
  // the error message.
  std::string failed_bake(const stdfs::path& spec) {
    bake::BakeOptions o;
    o.name = "counter-" + tag_;
    track(o.name);
    auto r = bake::bake(ctx_, spec, o);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(stdfs::exists(ctx_.image_dir(o.name)));
    auto l = lifecycle::list_instances(ctx_);
    EXPECT_TRUE(l.ok() && l->empty());
    return r.ok() ? "" : r.error().message();
  }

  std::string exec_out(const std::string& id, const std::vector<std::string>& cmd) {
    return exec_in(ctx_, id, cmd);
  }
};

TEST_F(TinyTest, RestoredInstanceContinuesFromCheckpointedState) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  // The image holds the app's memory: owner-only, whatever modes CRIU wrote.
  for (const auto& e : stdfs::recursive_directory_iterator(img.dir)) {
    auto perms = e.status().permissions();
    auto want = e.is_directory() ? stdfs::perms::owner_all
                                 : stdfs::perms::owner_read | stdfs::perms::owner_write;
    EXPECT_EQ(perms, want) << e.path();
  }
  auto s = lifecycle::start_instance(ctx_, img, StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
  // The warm-up made 5 counted requests before the checkpoint.
  EXPECT_EQ(get(s->record.ip, "/count"), "5\n");
  std::string body = get(s->record.ip, "/");
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  // Its own hostname, not the baked one.
  EXPECT_NE(body.find("hostname=" + s->record.id), std::string::npos) << body;
  // Rootfs changes made before the checkpoint (warm-up exec) and spec files are there.
  EXPECT_EQ(exec_out(s->record.id, {"cat", "/tmp/warm-marker"}), "warmed\n");
  // /dev/shm is the instance's own directory; what the app left there came with the image.
  EXPECT_TRUE(stdfs::exists(img.dir / image::kDevShm));
  EXPECT_EQ(exec_out(s->record.id, {"cat", "/dev/shm/warm-shm"}), "shm\n");
  EXPECT_EQ(testing::slurp(ctx_.instance_dir(s->record.id) / "shm" / "warm-shm"), "shm\n");
  EXPECT_EQ(exec_out(s->record.id, {"cat", "/etc/prewarm-example"}), "tiny\n");
  EXPECT_EQ(exec_out(s->record.id, {"hostname"}), s->record.id + "\n");
}

// Bakes run with address randomisation off, so two bakes of one app lay out memory alike (and
// deduplicate in the store); instances keep that layout, but what they start later is
// randomised again because CRIU does not carry the personality over.
// Restoring reads the image and leaves it exactly as it was: no link, no write, not even a
// changed ctime (which would make the next start re-hash the whole image). Both backends.
TEST_F(TinyTest, RestoresLeaveTheImageUntouched) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  auto snapshot = [&] {
    std::map<std::string, std::pair<long, long>> out;
    for (const auto& e : stdfs::recursive_directory_iterator(img.dir)) {
      struct stat st {};
      ::lstat(e.path().c_str(), &st);
      out[e.path().string()] = {st.st_ctim.tv_sec * 1000000000L + st.st_ctim.tv_nsec,
                                static_cast<long>(st.st_nlink)};
    }
    return out;
  };
  auto before = snapshot();
  for (const char* backend : {"criu", "runc"}) {
    SCOPED_TRACE(backend);
    engine::Context ctx = ctx_;
    ASSERT_TRUE(ctx.use_runtime(backend).ok());
    auto s = lifecycle::start_instance(ctx, img, lifecycle::StartMode::kRestore);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    EXPECT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
    EXPECT_EQ(s->record.runtime, backend);
    EXPECT_EQ(get(s->record.ip, "/count"), "5\n") << "state continues from the checkpoint";
    ASSERT_TRUE(lifecycle::remove_instance(ctx, s->record.id).ok());
  }
  EXPECT_EQ(snapshot(), before);
}

// The longest name the naming rule allows bakes, restores, and gives a 63-character hostname;
// one longer is refused before anything starts.
TEST_F(TinyTest, LongestNameBakesAndRunsAndOneMoreIsRefused) {
  std::string name = "counter-" + tag_ + "-";
  name += std::string(spec::kMaxNameLength - name.size(), 'x');
  ASSERT_EQ(name.size(), spec::kMaxNameLength);
  track(name);
  bake::BakeOptions o;
  o.name = name;
  auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
  ASSERT_TRUE(baked.ok()) << baked.error().to_string();
  auto img = images::load_image(ctx_, name);
  ASSERT_TRUE(img.ok()) << img.error().to_string();
  auto s = lifecycle::start_instance(ctx_, *img, lifecycle::StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
  EXPECT_EQ(s->record.id.size(), 63u);
  EXPECT_EQ(exec_out(s->record.id, {"hostname"}), s->record.id + "\n");

  o.name = name + "y";
  auto refused = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(refused.error().message().find("at most 54"), std::string::npos)
      << refused.error().message();
}

TEST_F(TinyTest, BakeLaysOutMemoryWithoutRandomisation) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  auto s = lifecycle::start_instance(ctx_, img, StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  ASSERT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
  // Without randomisation the stack ends at the top of the x86-64 user address space.
  std::string stack = exec_out(s->record.id, {"grep", "\\[stack\\]", "/proc/1/maps"});
  EXPECT_NE(stack.find("-7ffffffff000 "), std::string::npos) << stack;
  EXPECT_EQ(exec_out(s->record.id, {"cat", "/proc/1/personality"}), "00000000\n");
}

TEST_F(TinyTest, FourConcurrentRestoresAreIndependent) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  std::vector<std::future<Result<lifecycle::Started>>> futs;
  for (int i = 0; i < 4; ++i)
    futs.push_back(std::async(std::launch::async, [&] {
      return lifecycle::start_instance(ctx_, img, StartMode::kRestore);
    }));
  std::set<std::string> ips, hosts;
  std::vector<lifecycle::Started> started;
  for (auto& f : futs) {
    auto s = f.get();
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    EXPECT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
    started.push_back(*s);
  }
  for (const auto& s : started) {
    ips.insert(s.record.ip);
    std::string body = get(s.record.ip, "/");
    // Each copy counts on its own from the checkpointed 5.
    EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(body, m, std::regex("hostname=(\\S+)"))) << body;
    hosts.insert(m[1]);
  }
  EXPECT_EQ(ips.size(), 4u);
  EXPECT_EQ(hosts.size(), 4u);
  // A second request to one instance doesn't move the others.
  EXPECT_NE(get(started[0].record.ip, "/").find("count=7 "), std::string::npos);
  EXPECT_EQ(get(started[1].record.ip, "/count"), "6\n");
}

TEST_F(TinyTest, ColdStartRunsTheSpecFromScratch) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  auto s = lifecycle::start_instance(ctx_, img, StartMode::kCold);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "cold");
  EXPECT_EQ(get(s->record.ip, "/count"), "0\n");
  EXPECT_EQ(exec_out(s->record.id, {"cat", "/etc/prewarm-example"}), "tiny\n");
}

TEST_F(TinyTest, FailedRestoreFallsBackToColdStartWithCriuReason) {
  // A private copy of the rootfs, so the test can change what the checkpoint expects.
  stdfs::path rootfs = state_ / "rootfs-copy";
  ASSERT_TRUE(run_checked({"cp", "-a", PREWARM_EXAMPLE_TINY_ROOTFS, rootfs.string()}).ok());
  std::string spec = slurp(PREWARM_EXAMPLE_TINY_SPEC);
  spec = std::regex_replace(spec, std::regex("directory: .*"), "directory: " + rootfs.string());
  ASSERT_TRUE(fs::write_file(state_ / "spec.yaml", spec).ok());
  auto img = bake_tiny(state_ / "spec.yaml");
  ASSERT_FALSE(img.name.empty());
  // The app's executable changes size under the checkpoint: CRIU must refuse to restore.
  {
    std::ofstream bin(rootfs / "bin/counter", std::ios::app | std::ios::binary);
    bin << std::string(4096, '\0');
  }
  auto s = lifecycle::start_instance(ctx_, img, StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "cold");
  EXPECT_NE(s->record.fallback_reason.find("restore"), std::string::npos) << s->record.fallback_reason;
  // CRIU's own words about the file, not just "criu failed".
  EXPECT_NE(s->record.fallback_reason.find("counter"), std::string::npos) << s->record.fallback_reason;
  EXPECT_EQ(get(s->record.ip, "/count"), "0\n");
  // No half-restored container under another name.
  auto l = lifecycle::list_instances(ctx_);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->size(), 1u);
}

TEST_F(TinyTest, IncompatibleHostFallsBackWithoutTryingRestore) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  img.manifest.host.criu_version = "3.17";
  auto s = lifecycle::start_instance(ctx_, img, StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "cold");
  EXPECT_NE(s->record.fallback_reason.find("CRIU 3.17"), std::string::npos) << s->record.fallback_reason;
}

TEST_F(TinyTest, TamperedImageIsRefusedBeforeAnythingStarts) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  // Flip one byte in the memory pages.
  stdfs::path pages;
  for (const auto& e : stdfs::directory_iterator(img.dir / image::kCheckpointDir))
    if (e.path().filename().string().rfind("pages-", 0) == 0) pages = e.path();
  ASSERT_FALSE(pages.empty());
  {
    std::fstream f(pages, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.get(c);
    f.seekp(100);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  auto again = images::load_image(ctx_, img.name);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find(pages.filename().string()), std::string::npos)
      << again.error().message();
  EXPECT_NE(again.error().message().find("SHA-256"), std::string::npos);
  auto l = lifecycle::list_instances(ctx_);
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(l->empty());
}

TEST_F(TinyTest, TruncatedImageIsRefused) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  stdfs::resize_file(img.dir / image::kRootfsDiff, 10);
  auto again = images::load_image(ctx_, img.name);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("rootfs-diff.tar has 10 bytes"), std::string::npos)
      << again.error().message();
}

TEST_F(TinyTest, UnlistedFileInImageIsRefused) {
  auto img = bake_tiny();
  ASSERT_FALSE(img.name.empty());
  ASSERT_TRUE(fs::write_file(img.dir / image::kCheckpointDir / "extra.img", "x").ok());
  auto again = images::load_image(ctx_, img.name);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("extra.img is not listed"), std::string::npos)
      << again.error().message();
}

TEST_F(TinyTest, MissingRootfsFailsClearlyAndLeavesNothing) {
  std::string spec = slurp(PREWARM_EXAMPLE_TINY_SPEC);
  spec = std::regex_replace(spec, std::regex("directory: .*"), "directory: /nonexistent/rootfs");
  ASSERT_TRUE(fs::write_file(state_ / "spec.yaml", spec).ok());
  std::string err = failed_bake(state_ / "spec.yaml");
  EXPECT_NE(err.find("/nonexistent/rootfs"), std::string::npos) << err;
}

TEST_F(TinyTest, MissingCriuFailsBakeBeforeStartingAnything) {
  ::setenv("PREWARM_CRIU", "/nonexistent/criu", 1);
  std::string err = failed_bake(PREWARM_EXAMPLE_TINY_SPEC);
  ::unsetenv("PREWARM_CRIU");
  EXPECT_NE(err.find("CRIU is not usable"), std::string::npos) << err;
  EXPECT_NE(err.find("setup.sh"), std::string::npos);
}

TEST_F(TinyTest, WarmupFailureLeavesNothingBehind) {
  std::string spec = slurp(PREWARM_EXAMPLE_TINY_SPEC);
  spec += "  - exec:\n      command: [\"/bin/false\"]\n";
  ASSERT_TRUE(fs::write_file(state_ / "spec.yaml", spec).ok());
  std::string err = failed_bake(state_ / "spec.yaml");
  EXPECT_NE(err.find("warmup[3]"), std::string::npos) << err;
}

}  // namespace
}  // namespace prewarm::testing

namespace prewarm::testing {
namespace {

// The reference Python service (numpy, scipy, pandas, scikit-learn; ~5 s to start cold).
// The first run builds its Debian rootfs (a minute or two); later runs reuse the cache.
TEST_F(EngineTest, PythonServiceRestoresWarmWithItsModel) {
  bake::BakeOptions o;
  o.name = "pyservice-" + tag_;
  track(o.name);
  auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_PYTHON_SPEC, o);
  ASSERT_TRUE(baked.ok()) << baked.error().to_string();
  auto img = images::load_image(ctx_, o.name);
  ASSERT_TRUE(img.ok()) << img.error().to_string();
  auto s = lifecycle::start_instance(ctx_, *img, lifecycle::StartMode::kRestore);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->record.started_by, "restore") << s->record.fallback_reason;
  auto r = probe::http_get(s->record.ip, 8080, "/predict", {}, std::chrono::seconds(5));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->status, 200);
  // 20 warm-up predictions were made before the checkpoint; the model is already fitted.
  EXPECT_NE(r->body.find("\"count\": 21"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("\"hostname\": \"" + s->record.id + "\""), std::string::npos) << r->body;

  // Lazily: the working set learnt at bake first, the rest on demand; the same answers.
  EXPECT_GT(baked->working_set_pages, 0u) << baked->working_set_note;
  lifecycle::StartOptions lazy;
  lazy.paging = "lazy";
  auto l = lifecycle::Instances(ctx_).start(*img, lazy);
  ASSERT_TRUE(l.ok()) << l.error().to_string();
  EXPECT_EQ(l->record.started_by, "restore") << l->record.fallback_reason;
  EXPECT_EQ(l->record.paging, "lazy");
  auto lr = probe::http_get(l->record.ip, 8080, "/predict", {}, std::chrono::seconds(5));
  ASSERT_TRUE(lr.ok()) << lr.error().message();
  EXPECT_NE(lr->body.find("\"count\": 21"), std::string::npos) << lr->body;
  EXPECT_NE(lr->body.find("\"hostname\": \"" + l->record.id + "\""), std::string::npos) << lr->body;
}

}  // namespace
}  // namespace prewarm::testing

namespace prewarm::testing {
namespace {

// Errors carry a kind an API can map to a status code.
TEST_F(EngineTest, ErrorsSayWhatKindTheyAre) {
  auto missing = images::load_image(ctx_, "no-such-image");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound) << missing.error().message();
  auto invalid = images::load_image(ctx_, "Not_A_Name");
  ASSERT_FALSE(invalid.ok());
  EXPECT_EQ(invalid.error().kind(), ErrorKind::kInvalidInput);
  Status gone = lifecycle::remove_instance(ctx_, "no-such-instance-12345678");
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().kind(), ErrorKind::kNotFound);
}

}  // namespace
}  // namespace prewarm::testing
