// Which folio sizes the host's THP settings give memory advised MADV_HUGEPAGE, read from a
// directory laid out as /sys/kernel/mm/transparent_hugepage.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "base/fs.h"
#include "base/thp.h"

namespace prewarm::thp {
namespace {

namespace stdfs = std::filesystem;

class ThpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = stdfs::temp_directory_path() /
           ("prewarm-thp-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    stdfs::remove_all(dir_);
    stdfs::create_directories(dir_);
    write("hpage_pmd_size", "2097152\n");
  }
  void TearDown() override { stdfs::remove_all(dir_); }
  void write(const std::string& rel, const std::string& text) {
    stdfs::create_directories((dir_ / rel).parent_path());
    ASSERT_TRUE(fs::write_file(dir_ / rel, text).ok());
  }
  void size(const std::string& kb, const std::string& mode) {
    const std::string all[] = {"always", "inherit", "madvise", "never"};
    std::string line;
    for (const auto& m : all) line += (line.empty() ? "" : " ") + (m == mode ? "[" + m + "]" : m);
    write("hugepages-" + kb + "kB/enabled", line + "\n");
  }
  stdfs::path dir_;
};

// This machine's defaults: 2 MiB inherits madvise, the smaller sizes are off.
TEST_F(ThpTest, DefaultsGiveAdvisedMemoryOnly2MiB) {
  write("enabled", "always [madvise] never\n");
  size("2048", "inherit");
  size("64", "never");
  size("16", "never");
  AdvisedSizes s = advised_sizes(dir_);
  EXPECT_EQ(s.pmd_bytes, 2u << 20);
  EXPECT_TRUE(s.pmd);
  EXPECT_TRUE(s.smaller.empty());
  EXPECT_FALSE(small_folios_only(s));
}

// The recommended node setting: 64 KiB for advised memory, 2 MiB never.
TEST_F(ThpTest, SixtyFourKiBWithout2MiBIsSmallFoliosOnly) {
  write("enabled", "always [madvise] never\n");
  size("2048", "never");
  size("64", "madvise");
  size("16", "never");
  AdvisedSizes s = advised_sizes(dir_);
  EXPECT_FALSE(s.pmd);
  ASSERT_EQ(s.smaller.size(), 1u);
  EXPECT_EQ(s.smaller[0], 64u << 10);
  EXPECT_TRUE(small_folios_only(s));
}

// inherit follows the top level; 2 MiB allowed too is not "small only".
TEST_F(ThpTest, InheritFollowsTheTopLevelAnd2MiBAllowedIsNotSmallOnly) {
  write("enabled", "always madvise [never]\n");
  size("2048", "inherit");
  size("64", "inherit");
  size("32", "always");
  AdvisedSizes s = advised_sizes(dir_);
  EXPECT_FALSE(s.pmd) << "inherit of never";
  ASSERT_EQ(s.smaller.size(), 1u);
  EXPECT_EQ(s.smaller[0], 32u << 10);
  EXPECT_TRUE(small_folios_only(s));

  write("enabled", "[always] madvise never\n");
  s = advised_sizes(dir_);
  EXPECT_TRUE(s.pmd);
  EXPECT_EQ(s.smaller.size(), 2u);
  EXPECT_FALSE(small_folios_only(s));
}

// A kernel without per-size settings, and a host without THP at all.
TEST_F(ThpTest, NoPerSizeSettingsOrNoThpAtAll) {
  write("enabled", "always [madvise] never\n");
  AdvisedSizes s = advised_sizes(dir_);
  EXPECT_TRUE(s.pmd);
  EXPECT_FALSE(small_folios_only(s));

  AdvisedSizes none = advised_sizes(dir_ / "missing");
  EXPECT_FALSE(none.pmd);
  EXPECT_TRUE(none.smaller.empty());
  EXPECT_FALSE(small_folios_only(none));
}

}  // namespace
}  // namespace prewarm::thp
