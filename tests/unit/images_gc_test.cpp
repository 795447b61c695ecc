// gc and the staging dirs of bakes, imports, unpackings and transfers: what a killed prewarm
// left goes, what a live one holds stays.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fs.h"
#include "engine/context.h"
#include "images/images.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;

class ImagesGcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = stdfs::temp_directory_path() / ("prewarm-gc-" + fs::random_hex(4));
    engine::Config config;
    config.state_dir = state_;
    auto ctx = engine::make_context(std::move(config));
    ASSERT_TRUE(ctx.ok()) << ctx.error().message();
    ctx_.emplace(std::move(ctx).value());
  }
  void TearDown() override { (void)fs::remove_all(state_); }

  stdfs::path state_;
  std::optional<Context> ctx_;
};

// A child makes one staging dir of every kind, the way the operations make them, puts a
// file in each, and is killed: the leftovers of a prewarm that died mid-operation.
std::vector<stdfs::path> staging_of_a_killed_process(const Context& ctx, size_t file_bytes) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::vector<fs::StagingDir> held;
    for (const auto& [dir, prefix] :
         {std::pair{ctx.images_dir(), std::string(".bake-app-")}, {ctx.images_dir(), ".old-app-"},
          {ctx.images_dir(), ".import-app-"}, {ctx.images_dir(), ".app.tmp-"},
          {ctx.state_dir, ".tmp-pull-"}, {ctx.state_dir, ".tmp-push-"}}) {
      auto d = fs::StagingDir::create(dir, prefix);
      if (!d.ok() || !fs::write_file(d->path() / "pages-1.img", std::string(file_bytes, 'x')).ok())
        ::_exit(1);
      std::string line = d->path().string() + "\n";
      if (::write(pipefd[1], line.data(), line.size()) < 0) ::_exit(1);
      held.push_back(std::move(d).value());
    }
    ::close(pipefd[1]);
    ::raise(SIGKILL);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  std::vector<stdfs::path> dirs;
  for (size_t at = 0, nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1)
    dirs.emplace_back(out.substr(at, nl - at));
  return dirs;
}

TEST_F(ImagesGcTest, RemovesStagingDirsOfKilledOperationsAndKeepsLiveOnes) {
  auto stale = staging_of_a_killed_process(*ctx_, 1000);
  ASSERT_EQ(stale.size(), 6u);
  for (const auto& d : stale) ASSERT_TRUE(stdfs::exists(d / "pages-1.img")) << d;
  // A bake and an import in progress (this process holds their locks), and an installed image.
  std::optional<fs::StagingDir> live_bake, live_import;
  for (auto [held, prefix] :
       {std::pair{&live_bake, ".bake-app-"}, {&live_import, ".import-app-"}}) {
    auto d = fs::StagingDir::create(ctx_->images_dir(), prefix);
    ASSERT_TRUE(d.ok()) << d.error().message();
    ASSERT_TRUE(fs::write_file(d->path() / "pages-1.img", "live").ok());
    held->emplace(std::move(d).value());
  }
  ASSERT_TRUE(fs::make_dirs(ctx_->image_dir("app")).ok());
  ASSERT_TRUE(fs::write_file(ctx_->image_dir("app") / "manifest.json", "{}").ok());

  auto r = collect_garbage(*ctx_, {});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->staging.dirs, 6u);
  EXPECT_EQ(r->staging.bytes, 6000u);
  for (const auto& d : stale) EXPECT_FALSE(stdfs::exists(d)) << d;
  EXPECT_TRUE(stdfs::exists(live_bake->path() / "pages-1.img"));
  EXPECT_TRUE(stdfs::exists(live_import->path() / "pages-1.img"));
  EXPECT_TRUE(stdfs::exists(ctx_->image_dir("app") / "manifest.json"));

  // Once their makers are done, what they left goes too.
  std::vector<stdfs::path> kept{live_bake->path(), live_import->path()};
  live_bake->release();  // kept, as if its maker had been killed
  live_bake.reset();
  live_import.reset();  // removed by its maker
  EXPECT_FALSE(stdfs::exists(kept[1]));
  auto again = collect_garbage(*ctx_, {});
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->staging.dirs, 1u);
  EXPECT_FALSE(stdfs::exists(kept[0]));
}

TEST(StagingDir, MoveAsideKeepsTheLockAndRemovesUnderIt) {
  auto base = stdfs::temp_directory_path() / ("prewarm-aside-" + fs::random_hex(4));
  ASSERT_TRUE(fs::make_dirs(base / "img").ok());
  ASSERT_TRUE(fs::write_file(base / "img" / "f", "x").ok());
  {
    auto aside = fs::StagingDir::move_aside(base / "img", base / ".old-img");
    ASSERT_TRUE(aside.ok()) << aside.error().message();
    EXPECT_FALSE(stdfs::exists(base / "img"));
    auto swept = fs::remove_stale_staging(base, {"."});
    ASSERT_TRUE(swept.ok());
    EXPECT_EQ(swept->dirs, 0u);  // held
    EXPECT_TRUE(stdfs::exists(base / ".old-img" / "f"));
  }
  EXPECT_FALSE(stdfs::exists(base / ".old-img"));
  // A failed move leaves it where it was.
  EXPECT_FALSE(fs::StagingDir::move_aside(base / "missing", base / ".old-missing").ok());
  (void)fs::remove_all(base);
}

}  // namespace
}  // namespace prewarm::images
