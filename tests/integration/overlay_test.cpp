// Overlay mounts and rootfs diffs on the real kernel (needs root): changes made through one
// instance's merged view, captured and re-applied as another instance's upper dir, must look
// the same, deletions and opaque directories included.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "rootfs/rootfs.h"
#include "support/files.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;
using testing::TempDir;
using testing::slurp;
using testing::spit;

std::vector<std::string> listing(const stdfs::path& dir) {
  std::vector<std::string> names;
  for (auto& e : stdfs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Mount points at or below dir, from /proc/mounts.
std::vector<std::string> mounts_under(const stdfs::path& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/mounts");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string src, mp;
    fields >> src >> mp;
    if (mp == dir.string() || mp.starts_with(dir.string() + "/")) out.push_back(mp);
  }
  return out;
}

class OverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts overlayfs)";
    std::string tmpl = (stdfs::temp_directory_path() / "overlay-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    lower_ = dir_ / "lower";
    // The read-only base: a file to keep, one to change, one to delete, a directory the app
    // replaces wholesale (becomes opaque) and one it leaves alone.
    spit(lower_ / "keep.txt", "keep\n");
    spit(lower_ / "change.txt", "old\n");
    spit(lower_ / "delete.txt", "doomed\n");
    spit(lower_ / "replaced/a", "a\n");
    spit(lower_ / "replaced/b", "b\n");
    spit(lower_ / "untouched/x", "x\n");
    ::chmod(lower_.c_str(), 0755);
  }

  void TearDown() override {
    if (dir_.empty()) return;
    for (const auto& m : mounted_) (void)unmount(m);
    EXPECT_TRUE(mounts_under(dir_).empty()) << "mounts left behind under " << dir_;
    if (mounts_under(dir_).empty()) {
      std::error_code ec;
      stdfs::remove_all(dir_, ec);
    }
  }

  Overlay mount(const stdfs::path& instance) {
    auto ov = mount_overlay(lower_, instance);
    EXPECT_TRUE(ov.ok()) << ov.error().to_string();
    if (!ov.ok()) return {};
    mounted_.push_back(ov->merged);
    return *ov;
  }

  stdfs::path dir_, lower_;
  std::vector<stdfs::path> mounted_;
};

TEST_F(OverlayTest, DiffSurvivesCaptureAndApply) {
  Overlay one = mount(dir_ / "one");
  ASSERT_FALSE(one.merged.empty());
  EXPECT_EQ(slurp(one.merged / "keep.txt"), "keep\n");
  struct stat st {};
  ASSERT_EQ(::stat(one.merged.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "container root must be 0755";

  // The app's changes, made through the merged view.
  spit(one.merged / "change.txt", "new\n");
  spit(one.merged / "added/deep/file", "added\n");
  stdfs::remove(one.merged / "delete.txt");
  stdfs::remove_all(one.merged / "replaced");
  spit(one.merged / "replaced/c", "c\n");
  // Spec files placed into a live rootfs.
  spec::FileEntry f;
  f.path = "/etc/app.conf";
  f.content = "port: 8080\n";
  f.mode = 0600;
  Status placed = place_files({f}, one.merged);
  ASSERT_TRUE(placed.ok()) << placed.error().to_string();

  // The upper dir holds a whiteout for the deletion and an opaque marker for the replacement.
  ASSERT_EQ(::lstat((one.upper / "delete.txt").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
  char val[8] = {};
  EXPECT_EQ(
      ::lgetxattr((one.upper / "replaced").c_str(), "trusted.overlay.opaque", val, sizeof val), 1);
  EXPECT_EQ(val[0], 'y');

  const stdfs::path tar = dir_ / "diff.tar";
  Status captured = capture_diff(one.upper, tar);
  ASSERT_TRUE(captured.ok()) << captured.error().to_string();
  ASSERT_TRUE(unmount(one.merged).ok());
  EXPECT_TRUE(mounts_under(one.merged).empty());

  // A second instance whose upper dir is the captured diff.
  Status applied = apply_diff(tar, dir_ / "two" / "upper");
  ASSERT_TRUE(applied.ok()) << applied.error().to_string();
  Overlay two = mount(dir_ / "two");
  ASSERT_FALSE(two.merged.empty());

  ASSERT_EQ(::stat(two.merged.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(slurp(two.merged / "keep.txt"), "keep\n");
  EXPECT_EQ(slurp(two.merged / "change.txt"), "new\n");
  EXPECT_EQ(slurp(two.merged / "added/deep/file"), "added\n");
  EXPECT_FALSE(stdfs::exists(two.merged / "delete.txt")) << "deleted lower file came back";
  EXPECT_EQ(listing(two.merged / "replaced"), std::vector<std::string>{"c"})
      << "opaque directory shows lower entries";
  EXPECT_EQ(listing(two.merged / "untouched"), std::vector<std::string>{"x"});
  EXPECT_EQ(slurp(two.merged / "etc/app.conf"), "port: 8080\n");
  ASSERT_EQ(::stat((two.merged / "etc/app.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // The lower dir itself never changed.
  EXPECT_EQ(slurp(lower_ / "change.txt"), "old\n");
  EXPECT_TRUE(stdfs::exists(lower_ / "delete.txt"));
  EXPECT_EQ(listing(lower_ / "replaced"), (std::vector<std::string>{"a", "b"}));
}

// The captured diff as a shared read-only layer between the base and a fresh upper: whiteouts
// and opaque markers act in a lower layer as in an upper one, and metadata survives the
// in-process extraction.
TEST_F(OverlayTest, DiffLayerActsAsLowerLayer) {
  Overlay one = mount(dir_ / "one");
  ASSERT_FALSE(one.merged.empty());
  spit(one.merged / "change.txt", "new\n");
  spit(one.merged / "added/deep/file", "added\n");
  stdfs::remove(one.merged / "delete.txt");
  stdfs::remove_all(one.merged / "replaced");
  spit(one.merged / "replaced/c", "c\n");
  spit(one.merged / "owned", "owned\n");
  ASSERT_EQ(::chown((one.merged / "owned").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::chmod((one.merged / "owned").c_str(), 04750), 0);
  ASSERT_EQ(::setxattr((one.merged / "owned").c_str(), "user.note", "hi", 2, 0), 0);
  ASSERT_EQ(::symlink("/keep.txt", (one.merged / "link").c_str()), 0);
  ASSERT_EQ(::link((one.merged / "added/deep/file").c_str(), (one.merged / "hard").c_str()), 0);
  ASSERT_EQ(::mkdir((one.merged / "sticky").c_str(), 01777), 0);
  ASSERT_EQ(::chmod((one.merged / "sticky").c_str(), 01777), 0);

  const stdfs::path tar = dir_ / "diff.tar";
  Status captured = capture_diff(one.upper, tar);
  ASSERT_TRUE(captured.ok()) << captured.error().to_string();
  ASSERT_TRUE(unmount(one.merged).ok());

  auto layer = diff_layer(tar, dir_ / "layers");
  ASSERT_TRUE(layer.ok()) << layer.error().to_string();
  auto again = diff_layer(tar, dir_ / "layers");
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(*again, *layer);

  auto two = mount_overlay(std::vector<stdfs::path>{*layer, lower_}, dir_ / "two");
  ASSERT_TRUE(two.ok()) << two.error().to_string();
  mounted_.push_back(two->merged);
  EXPECT_TRUE(listing(two->upper).empty()) << "the instance starts with an empty upper";
  const stdfs::path m = two->merged;
  struct stat st {};
  ASSERT_EQ(::stat(m.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(slurp(m / "keep.txt"), "keep\n");
  EXPECT_EQ(slurp(m / "change.txt"), "new\n");
  EXPECT_EQ(slurp(m / "added/deep/file"), "added\n");
  EXPECT_FALSE(stdfs::exists(m / "delete.txt")) << "deleted lower file came back";
  EXPECT_EQ(listing(m / "replaced"), std::vector<std::string>{"c"})
      << "opaque directory shows lower entries";
  EXPECT_EQ(listing(m / "untouched"), std::vector<std::string>{"x"});
  ASSERT_EQ(::lstat((m / "owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 5678u);
  EXPECT_EQ(st.st_mode & 07777, 04750u);
  char val[8] = {};
  EXPECT_EQ(::getxattr((m / "owned").c_str(), "user.note", val, sizeof val), 2);
  EXPECT_EQ(std::string(val, 2), "hi");
  EXPECT_EQ(stdfs::read_symlink(m / "link"), "/keep.txt");
  struct stat a {}, b {};
  ASSERT_EQ(::stat((*layer / "hard").c_str(), &a), 0);
  ASSERT_EQ(::stat((*layer / "added/deep/file").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "hard link became a copy";
  ASSERT_EQ(::stat((m / "sticky").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);

  // Writes go to the instance's upper; the shared layer and the base never change.
  spit(m / "change.txt", "mine\n");
  stdfs::remove(m / "keep.txt");
  EXPECT_EQ(slurp(*layer / "change.txt"), "new\n");
  EXPECT_EQ(slurp(lower_ / "keep.txt"), "keep\n");
  ASSERT_EQ(::lstat((*layer / "delete.txt").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0));
  EXPECT_EQ(::lgetxattr((*layer / "replaced").c_str(), "trusted.overlay.opaque", val, sizeof val),
            1);

  // A second instance on the same layer sees the layer, not the first instance's writes.
  auto three = mount_overlay(std::vector<stdfs::path>{*layer, lower_}, dir_ / "three");
  ASSERT_TRUE(three.ok()) << three.error().to_string();
  mounted_.push_back(three->merged);
  EXPECT_EQ(slurp(three->merged / "change.txt"), "new\n");
  EXPECT_EQ(slurp(three->merged / "keep.txt"), "keep\n");
}

// The shared /dev layer: every instance's root shows runc's /dev (and none of the base's own
// entries), the nodes work through the overlay, and a write lands in that instance's upper.
TEST_F(OverlayTest, DevLayerGivesEveryInstanceTheSameDevAndKeepsWritesApart) {
  spit(lower_ / "dev/console", "the base's console\n");
  spit(lower_ / "dev/null", "a regular file in the base\n");
  auto dev = dev_layer(dir_ / "layers");
  ASSERT_TRUE(dev.ok()) << dev.error().to_string();
  EXPECT_EQ(dev->filename(), kDevLayerName);
  auto again = dev_layer(dir_ / "layers");
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(*again, *dev);

  auto one = mount_overlay(std::vector<stdfs::path>{*dev, lower_}, dir_ / "one");
  ASSERT_TRUE(one.ok()) << one.error().to_string();
  mounted_.push_back(one->merged);
  const stdfs::path d = one->merged / "dev";
  EXPECT_EQ(listing(d), (std::vector<std::string>{"fd", "full", "mqueue", "null", "ptmx", "pts",
                                                  "random", "shm", "stderr", "stdin", "stdout",
                                                  "tty", "urandom", "zero"}));
  struct stat st {};
  ASSERT_EQ(::lstat((d / "null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  EXPECT_EQ(stdfs::read_symlink(d / "fd"), "/proc/self/fd");
  EXPECT_EQ(slurp(one->merged / "keep.txt"), "keep\n") << "the base is still below";
  {
    UniqueFd null(::open((d / "null").c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(null.valid()) << "open /dev/null through the overlay: " << std::strerror(errno);
    EXPECT_EQ(::write(null.get(), "x", 1), 1);
  }
  {
    UniqueFd zero(::open((d / "zero").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(zero.valid()) << std::strerror(errno);
    char c = 'x';
    EXPECT_EQ(::read(zero.get(), &c, 1), 1);
    EXPECT_EQ(c, '\0');
  }

  // A file the app makes in /dev is that instance's, in its upper; the layer never changes.
  spit(d / "mine", "one's\n");
  EXPECT_EQ(slurp(one->upper / "dev/mine"), "one's\n");
  EXPECT_FALSE(stdfs::exists(*dev / "dev/mine"));
  auto two = mount_overlay(std::vector<stdfs::path>{*dev, lower_}, dir_ / "two");
  ASSERT_TRUE(two.ok()) << two.error().to_string();
  mounted_.push_back(two->merged);
  EXPECT_FALSE(stdfs::exists(two->merged / "dev/mine"));
  EXPECT_FALSE(stdfs::exists(two->merged / "dev/console"));
}

TEST_F(OverlayTest, UnmountHandlesBusyAndNotMounted) {
  Overlay ov = mount(dir_ / "busy");
  ASSERT_FALSE(ov.merged.empty());
  auto again = mount_overlay(lower_, dir_ / "busy");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("already mounted"), std::string::npos)
      << again.error().message();

  UniqueFd open_file(::open((ov.merged / "keep.txt").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(open_file.valid());
  Status st = unmount(ov.merged);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_TRUE(mounts_under(ov.merged).empty());
  open_file.reset();

  EXPECT_TRUE(unmount(ov.merged).ok()) << "not mounted is fine";
  EXPECT_TRUE(unmount(dir_ / "never-existed").ok());
}

TEST_F(OverlayTest, CaptureErrorQuotesTar) {
  Status st = capture_diff(dir_ / "no-such-upper", dir_ / "out.tar");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("no-such-upper"), std::string::npos) << st.error().message();
  EXPECT_FALSE(stdfs::exists(dir_ / "out.tar"));
  Status ap = apply_diff(dir_ / "missing.tar", dir_ / "up");
  ASSERT_FALSE(ap.ok());
  EXPECT_NE(ap.error().message().find("missing.tar"), std::string::npos) << ap.error().message();
}

}  // namespace
}  // namespace prewarm::rootfs
