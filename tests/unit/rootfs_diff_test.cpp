// The in-process rootfs diff extractor without root: round trips of what GNU tar writes
// (fixtures made with the real tar program), escape attempts, truncated archives, and
// diff_layer's extract-once contract under concurrency. Root-only parts (owners, whiteouts,
// trusted.* xattrs) run when the test runs as root.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "base/subprocess.h"
#include "rootfs/rootfs.h"
#include "support/files.h"
#include "support/tar_entry.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;
using testing::TempDir;
using testing::slurp;
using testing::spit;

// One ustar header block (+ data, padded), for archives GNU tar would never write.
std::string entry(const std::string& name, char type, const std::string& data = "",
                  const std::string& link = "", unsigned major = 0, unsigned minor = 0) {
  return testing::tar_entry(name, type, data, link, 0644, major, minor);
}
std::string end_marker() { return std::string(1024, '\0'); }

void write_bytes(const stdfs::path& p, const std::string& bytes) {
  FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

void gnu_tar(const stdfs::path& dir, const stdfs::path& out, const std::string& format = "") {
  std::vector<std::string> argv = {"tar", "--xattrs", "--xattrs-include=trusted.*",
                                   "--xattrs-include=user.*",
                                   "--xattrs-include=security.capability", "--numeric-owner"};
  if (format == "gnu") argv = {"tar", "--numeric-owner"};  // ././@LongLink names, no xattrs
  if (!format.empty()) argv.push_back("--format=" + format);
  for (const auto& a : {std::string("-cpf"), out.string(), std::string("-C"), dir.string(),
                        std::string(".")})
    argv.push_back(a);
  auto r = run_checked(argv);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
}

// type, mode, owner, mtime, content or link target, xattrs: everything a diff must keep.
std::map<std::string, std::string> describe_tree(const stdfs::path& root) {
  std::map<std::string, std::string> out;
  auto describe = [&](const stdfs::path& p, const std::string& rel) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      out[rel] = "missing";
      return;
    }
    std::string d = std::to_string(st.st_mode) + " " + std::to_string(st.st_uid) + ":" +
                    std::to_string(st.st_gid);
    if (!S_ISDIR(st.st_mode)) d += " t=" + std::to_string(st.st_mtim.tv_sec);
    if (S_ISREG(st.st_mode)) d += " " + slurp(p) + " n=" + std::to_string(st.st_nlink);
    if (S_ISLNK(st.st_mode)) d += " -> " + stdfs::read_symlink(p).string();
    if (S_ISCHR(st.st_mode)) d += " dev=" + std::to_string(st.st_rdev);
    char names[4096];
    ssize_t n = ::llistxattr(p.c_str(), names, sizeof names);
    std::vector<std::string> xs;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
      char v[256];
      ssize_t vn = ::lgetxattr(p.c_str(), names + i, v, sizeof v);
      xs.push_back(std::string(names + i) + "=" + std::string(v, vn > 0 ? vn : 0));
    }
    std::sort(xs.begin(), xs.end());
    for (auto& x : xs) d += " " + x;
    out[rel] = d;
  };
  describe(root, ".");
  for (auto it = stdfs::recursive_directory_iterator(root); it != stdfs::end(it); ++it)
    describe(it->path(), it->path().lexically_relative(root).string());
  return out;
}

class DiffTree : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = t_.path() / "src";
    const bool root = ::geteuid() == 0;
    spit(src_ / "etc/app.conf", "port: 8080\n");
    ::chmod((src_ / "etc/app.conf").c_str(), 0600);
    spit(src_ / "bin/tool", "#!/bin/sh\n");
    ::chmod((src_ / "bin/tool").c_str(), root ? 04755 : 0755);
    std::string long_dir(120, 'd');
    spit(src_ / long_dir / std::string(110, 'f'), "long\n");
    stdfs::create_directory_symlink("../etc", src_ / "bin/etc-link");
    stdfs::create_symlink("/usr/lib/x", src_ / "abs-link");
    ::link((src_ / "etc/app.conf").c_str(), (src_ / "hard").c_str());
    ::mkfifo((src_ / "fifo").c_str(), 0640);
    stdfs::create_directory(src_ / "ro");
    spit(src_ / "ro/inside", "x\n");
    ::chmod((src_ / "ro").c_str(), 0555);
    ::setxattr((src_ / "etc/app.conf").c_str(), "user.note", "v1", 2, 0);
    if (root) {
      ::mknod((src_ / "gone").c_str(), S_IFCHR | 0, makedev(0, 0));
      stdfs::create_directory(src_ / "opaque");
      ::setxattr((src_ / "opaque").c_str(), "trusted.overlay.opaque", "y", 1, 0);
      ::chown((src_ / "etc/app.conf").c_str(), 1234, 5678);
      ::lchown((src_ / "abs-link").c_str(), 42, 43);
    }
    ::chmod(src_.c_str(), 0751);
    for (auto& e : stdfs::recursive_directory_iterator(src_)) {
      timespec ts[2] = {{0, UTIME_OMIT}, {1600000000, 0}};
      ::utimensat(AT_FDCWD, e.path().c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }
  void TearDown() override {
    std::error_code ec;
    for (auto& e : stdfs::recursive_directory_iterator(t_.path(), ec))
      if (e.is_directory(ec) && !e.is_symlink(ec)) ::chmod(e.path().c_str(), 0755);
  }
  TempDir t_;
  stdfs::path src_;
};

TEST_F(DiffTree, RoundTripOfWhatGnuTarWrites) {
  for (std::string format : {"", "gnu", "posix"}) {
    SCOPED_TRACE("format " + (format.empty() ? std::string("default") : format));
    const stdfs::path tar = t_.path() / ("d-" + format + ".tar");
    gnu_tar(src_, tar, format);
    const stdfs::path dest = t_.path() / ("out-" + format);
    stdfs::create_directory(dest);
    Status st = extract_diff(tar, dest);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    auto want = describe_tree(src_);
    auto got = describe_tree(dest);
    if (format == "gnu") {  // GNU format carries no xattrs: compare without them
      for (auto* m : {&want, &got})
        for (auto& [k, v] : *m) v = v.substr(0, v.find(" user.")).substr(0, v.find(" trusted."));
    }
    EXPECT_EQ(got, want);
  }
}

TEST_F(DiffTree, ApplyDiffAndLayerNeedNoTarProgram) {
  const stdfs::path tar = t_.path() / "d.tar";
  gnu_tar(src_, tar);
  // With PATH emptied no tar can be found: extraction must be in-process.
  const char* old = std::getenv("PATH");
  std::string saved = old ? old : "";
  ::setenv("PATH", "/nonexistent", 1);
  Status st = apply_diff(tar, t_.path() / "upper");
  auto layer = diff_layer(tar, t_.path() / "layers");
  ::setenv("PATH", saved.c_str(), 1);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  ASSERT_TRUE(layer.ok()) << layer.error().to_string();
  EXPECT_EQ(describe_tree(t_.path() / "upper"), describe_tree(src_));
  EXPECT_EQ(describe_tree(*layer), describe_tree(src_));
}

// Each archive tries to write outside the destination; each must fail and leave outside alone.
TEST(DiffExtract, RefusesEscapes) {
  TempDir t;
  const stdfs::path outside = t.path() / "outside";
  stdfs::create_directory(outside);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"absolute", entry("/tmp/pwned", '0', "x")},
      {"dotdot", entry("../outside/pwned", '0', "x")},
      {"inner dotdot", entry("a/../../outside/pwned", '0', "x")},
      {"through planted symlink", entry("evil", '2', "", outside.string()) +
                                      entry("evil/pwned", '0', "x")},
      {"through relative symlink", entry("up", '2', "", "..") + entry("up/outside/pwned", '0', "x")},
      {"hard link outside", entry("hl", '1', "", "../outside/target")},
      {"hard link through symlink", entry("evil", '2', "", outside.string()) +
                                        entry("hl", '1', "", "evil/target")},
      {"block device", entry("sda", '4', "", "", 8, 0)},
      {"char device", entry("mem", '3', "", "", 1, 1)},
  };
  spit(outside / "target", "secret\n");
  for (const auto& [name, body] : cases) {
    SCOPED_TRACE(name);
    const stdfs::path tar = t.path() / "evil.tar";
    write_bytes(tar, body + end_marker());
    const stdfs::path dest = t.path() / "dest";
    stdfs::remove_all(dest);
    stdfs::create_directory(dest);
    Status st = extract_diff(tar, dest);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find("evil.tar"), std::string::npos) << st.error().message();
    EXPECT_FALSE(stdfs::exists(outside / "pwned"));
    EXPECT_FALSE(stdfs::exists(dest / "hl"));
    EXPECT_FALSE(stdfs::exists(dest / "sda"));
    EXPECT_EQ(slurp(outside / "target"), "secret\n");
  }
  EXPECT_FALSE(stdfs::exists("/tmp/pwned"));
}

TEST(DiffExtract, TruncatedArchivesAreClearErrors) {
  TempDir t;
  const std::string full = entry("a", '0', std::string(2000, 'a')) + end_marker();
  const std::vector<std::pair<size_t, std::string>> cuts = {
      {1024, "truncated in the data"},  // inside a's data
      {300, "truncated in a tar header"},
      {512 * 5, "end-of-archive marker"},  // all of a, no end marker
  };
  for (const auto& [cut, want] : cuts) {
    SCOPED_TRACE(cut);
    const stdfs::path tar = t.path() / "cut.tar";
    write_bytes(tar, full.substr(0, cut));
    const stdfs::path dest = t.path() / ("dest" + std::to_string(cut));
    stdfs::create_directory(dest);
    Status st = extract_diff(tar, dest);
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find(want), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find("cut.tar"), std::string::npos) << st.error().message();
  }
  std::string corrupt = full;
  corrupt[10] ^= 0x55;
  write_bytes(t.path() / "bad.tar", corrupt);
  stdfs::create_directory(t.path() / "bad");
  Status st = extract_diff(t.path() / "bad.tar", t.path() / "bad");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("checksum"), std::string::npos) << st.error().message();
}

TEST(DiffLayer, ConcurrentCallersGetOneLayerExtractedOnce) {
  TempDir t;
  spit(t.path() / "src/f", "content\n");
  const stdfs::path tar = t.path() / "d.tar";
  gnu_tar(t.path() / "src", tar);
  const stdfs::path layers = t.path() / "layers";
  std::vector<Result<stdfs::path>> results(8, Error("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i)
    threads.emplace_back([&, i] { results[i] = diff_layer(tar, layers); });
  for (auto& th : threads) th.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(*r, *results[0]);
  }
  EXPECT_EQ(slurp(*results[0] / "f"), "content\n");
  std::vector<std::string> names;
  for (auto& e : stdfs::directory_iterator(layers))
    if (!e.path().string().ends_with(".lock")) names.push_back(e.path().filename().string());
  ASSERT_EQ(names.size(), 1u) << "temporary directories left behind";
  EXPECT_EQ(names[0].size(), 64u) << names[0];

  // A complete layer is reused, not re-extracted; with the digest given, the archive isn't read.
  spit(*results[0] / "marker", "still here\n");
  auto again = diff_layer(tar, layers);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(slurp(*again / "marker"), "still here\n");
  const std::string sha = results[0]->filename().string();
  stdfs::remove(tar);
  auto by_digest = diff_layer(tar, layers, sha);
  ASSERT_TRUE(by_digest.ok()) << by_digest.error().to_string();
  EXPECT_EQ(*by_digest, *results[0]);
}

TEST(DiffLayer, FailedExtractionLeavesNoLayer) {
  TempDir t;
  const stdfs::path tar = t.path() / "evil.tar";
  write_bytes(tar, entry("ok", '0', "fine") + entry("../x", '0', "x") + end_marker());
  auto layer = diff_layer(tar, t.path() / "layers");
  ASSERT_FALSE(layer.ok());
  EXPECT_NE(layer.error().message().find("\"..\""), std::string::npos) << layer.error().message();
  for (auto& e : stdfs::directory_iterator(t.path() / "layers"))
    EXPECT_TRUE(e.path().string().ends_with(".lock")) << e.path();
  auto wrong = diff_layer(tar, t.path() / "layers", std::string(64, 'a'));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("expected " + std::string(64, 'a')), std::string::npos)
      << wrong.error().message();
  auto missing = diff_layer(t.path() / "missing.tar", t.path() / "layers");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("missing.tar"), std::string::npos);
}

}  // namespace
}  // namespace prewarm::rootfs
