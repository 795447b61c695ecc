// rootfs without root: file placement inside a root, source validation, tarball caching,
// mirror discovery from fixture apt sources, debootstrap cache keys.
#include "rootfs/rootfs.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "base/sha256.h"
#include "base/subprocess.h"
#include "support/files.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;
using testing::TempDir;
using testing::slurp;
using testing::spit;

unsigned mode_of(const stdfs::path& p) {
  struct stat st {};
  EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

spec::FileEntry content_file(std::string path, std::string content, unsigned mode = 0644) {
  spec::FileEntry f;
  f.path = std::move(path);
  f.content = std::move(content);
  f.mode = mode;
  return f;
}

// Joins an absolute host path below root, as RESOLVE_IN_ROOT resolves it.
stdfs::path inside(const stdfs::path& root, const stdfs::path& abs) {
  return root / abs.relative_path();
}

// --- place_files -----------------------------------------------------------------------------

TEST(PlaceFiles, WritesContentModeAndParents) {
  TempDir t;
  spit(t.path() / "host-src", "#!/bin/sh\necho hi\n");
  spec::FileEntry from_host;
  from_host.path = "/usr/local/bin/run";
  from_host.source = t.path() / "host-src";
  from_host.mode = 0755;
  stdfs::path root = t.path() / "root";
  stdfs::create_directory(root);

  Status st = place_files({content_file("/etc/app/config.yaml", "a: 1\n", 0640), from_host}, root);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(root / "etc/app/config.yaml"), "a: 1\n");
  EXPECT_EQ(mode_of(root / "etc/app/config.yaml"), 0640u);
  EXPECT_EQ(mode_of(root / "etc/app"), 0755u);
  EXPECT_EQ(mode_of(root / "etc"), 0755u);
  EXPECT_EQ(slurp(root / "usr/local/bin/run"), "#!/bin/sh\necho hi\n");
  EXPECT_EQ(mode_of(root / "usr/local/bin/run"), 0755u);
}

// --- inline_sources: what an image carries instead of host paths ------------------------------

spec::FileEntry source_file(std::string path, stdfs::path source) {
  spec::FileEntry f;
  f.path = std::move(path);
  f.source = std::move(source);
  return f;
}

TEST(InlineSources, ReadsRegularFilesIntoContent) {
  TempDir t;
  spit(t.path() / "a", std::string("bin\0ary", 7));
  std::vector<spec::FileEntry> files = {source_file("/a", t.path() / "a"),
                                        content_file("/b", "kept\n")};
  Status st = inline_sources(files);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_FALSE(files[0].source.has_value());
  EXPECT_EQ(files[0].content, std::string("bin\0ary", 7));
  EXPECT_EQ(files[1].content, "kept\n");
}

TEST(InlineSources, RefusesDevicesFifosAndOversizedFiles) {
  TempDir t;
  ASSERT_EQ(::mkfifo((t.path() / "fifo").c_str(), 0600), 0);
  spit(t.path() / "big", std::string(kMaxInlineFileBytes + 1, 'x'));
  for (const stdfs::path& src : {stdfs::path("/dev/zero"), t.path() / "fifo", t.path() / "big",
                                 t.path() / "missing"}) {
    std::vector<spec::FileEntry> files = {source_file("/f", src)};
    Status st = inline_sources(files);
    ASSERT_FALSE(st.ok()) << src;
    EXPECT_NE(st.error().message().find(src.string()), std::string::npos) << st.error().message();
    EXPECT_TRUE(files[0].source.has_value()) << "left as it was";
  }
  // Files that are each small enough but too many together.
  std::vector<spec::FileEntry> many;
  spit(t.path() / "mib", std::string(kMaxInlineFileBytes, 'y'));
  for (size_t i = 0; i <= kMaxInlineTotalBytes / kMaxInlineFileBytes; ++i)
    many.push_back(source_file("/m" + std::to_string(i), t.path() / "mib"));
  Status st = inline_sources(many);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("add up to more than"), std::string::npos);
}

TEST(PlaceFiles, OverwritesAndResetsMode) {
  TempDir t;
  spit(t.path() / "etc/motd", "a much longer old content\n");
  ::chmod((t.path() / "etc/motd").c_str(), 0600);
  Status st = place_files({content_file("/etc/motd", "new\n", 0444)}, t.path());
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(t.path() / "etc/motd"), "new\n");
  EXPECT_EQ(mode_of(t.path() / "etc/motd"), 0444u);
}

TEST(PlaceFiles, SymlinkToEtcResolvesInsideRoot) {
  TempDir t;
  stdfs::path root = t.path();
  stdfs::create_directories(root / "etc");
  stdfs::create_symlink("/etc", root / "config");
  const std::string name = "prewarm-rootfs-test-" + std::to_string(::getpid());
  Status st = place_files({content_file("/config/" + name, "inside\n")}, root);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(root / "etc" / name), "inside\n");
  EXPECT_FALSE(stdfs::exists(stdfs::path("/etc") / name));
}

TEST(PlaceFiles, AbsoluteSymlinkToHostDirStaysInside) {
  TempDir host, t;
  stdfs::path root = t.path();
  // root/link -> <host dir>; the same path also exists inside the root.
  stdfs::create_symlink(host.path(), root / "link");
  stdfs::create_directories(inside(root, host.path()));
  Status st = place_files({content_file("/link/sub/f", "x")}, root);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(inside(root, host.path()) / "sub/f"), "x");
  EXPECT_TRUE(stdfs::is_empty(host.path()));
}

TEST(PlaceFiles, SymlinkedFileStaysInside) {
  TempDir host, t;
  stdfs::path root = t.path();
  stdfs::create_directories(root / "etc");
  stdfs::create_symlink(host.path() / "target", root / "etc/resolv.conf");
  stdfs::create_directories(inside(root, host.path()));
  Status st = place_files({content_file("/etc/resolv.conf", "nameserver 10.0.0.1\n")}, root);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(inside(root, host.path()) / "target"), "nameserver 10.0.0.1\n");
  EXPECT_FALSE(stdfs::exists(host.path() / "target"));
}

TEST(PlaceFiles, DanglingEscapeIsAnErrorAndTouchesNothing) {
  TempDir host, t;
  stdfs::path root = t.path();
  stdfs::create_symlink(host.path(), root / "escape");  // nothing at that path inside root
  Status st = place_files({content_file("/escape/f", "x")}, root);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("\"/escape/f\""), std::string::npos) << st.error().message();
  EXPECT_TRUE(stdfs::is_empty(host.path()));
}

TEST(PlaceFiles, DotDotSymlinkIsClampedToRoot) {
  TempDir t;
  stdfs::path root = t.path() / "root";
  stdfs::create_directories(root / "a");
  stdfs::create_symlink("../../../../../..", root / "a/up");
  Status st = place_files({content_file("/a/up/f", "x")}, root);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_EQ(slurp(root / "f"), "x");
  EXPECT_FALSE(stdfs::exists(t.path() / "f"));
}

TEST(PlaceFiles, RejectsBadPathsNamingThem) {
  TempDir t;
  for (std::string bad : {"", "relative/file", "/", "/a/../b", "/dir/"}) {
    Status st = place_files({content_file(bad, "x")}, t.path());
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().message().find("\"" + bad + "\""), std::string::npos)
        << st.error().message();
  }
  EXPECT_TRUE(stdfs::is_empty(t.path()));

  spec::FileEntry empty;
  empty.path = "/x";
  EXPECT_FALSE(place_files({empty}, t.path()).ok());

  spec::FileEntry missing;
  missing.path = "/x";
  missing.source = t.path() / "no-such-source";
  Status st = place_files({missing}, t.path());
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("no-such-source"), std::string::npos) << st.error().message();

  // A regular file where a parent directory should be.
  spit(t.path() / "file", "");
  st = place_files({content_file("/file/below", "x")}, t.path());
  EXPECT_FALSE(st.ok());
}

TEST(PlaceFiles, MissingRootIsAnError) {
  Status st = place_files({content_file("/a", "x")}, "/nonexistent-prewarm-root");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("/nonexistent-prewarm-root"), std::string::npos);
}

// --- directory source ------------------------------------------------------------------------

spec::RootfsSource source_of(spec::RootfsKind kind, stdfs::path path) {
  spec::RootfsSource s;
  s.kind = kind;
  s.path = std::move(path);
  return s;
}

TEST(DirectorySource, ValidatesAndIdentifiesByPath) {
  TempDir t, cache;
  auto missing =
      prepare_base(source_of(spec::RootfsKind::kDirectory, t.path() / "nope"), cache.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(),
            "rootfs.directory " + (t.path() / "nope").string() + ": does not exist");

  spit(t.path() / "file", "");
  auto file =
      prepare_base(source_of(spec::RootfsKind::kDirectory, t.path() / "file"), cache.path());
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.error().message().find("is not a directory"), std::string::npos);

  stdfs::create_directories(t.path() / "empty");
  auto empty =
      prepare_base(source_of(spec::RootfsKind::kDirectory, t.path() / "empty"), cache.path());
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().message().find("does not look like a root filesystem"),
            std::string::npos);

  stdfs::create_directories(t.path() / "rootfs/usr/bin");
  auto ok =
      prepare_base(source_of(spec::RootfsKind::kDirectory, t.path() / "rootfs/./"), cache.path());
  ASSERT_TRUE(ok.ok()) << ok.error().to_string();
  stdfs::path canon = stdfs::canonical(t.path() / "rootfs");
  EXPECT_EQ(ok->dir, canon);
  EXPECT_EQ(ok->id, "dir:" + canon.string());
  EXPECT_TRUE(stdfs::is_empty(cache.path()));
}

// --- tarball source --------------------------------------------------------------------------

// A tiny rootfs archived with tar, as a user would make one.
stdfs::path make_tarball(const stdfs::path& dir, bool with_bin = true) {
  stdfs::path src = dir / "src";
  if (with_bin) spit(src / "bin/sh", "not really a shell\n");
  spit(src / "etc/hostname", "tiny\n");
  ::chmod((src / "etc").c_str(), 0755);
  stdfs::path tar = dir / "rootfs.tar.gz";
  auto r = run_checked({"tar", "-czf", tar.string(), "-C", src.string(), "."});
  EXPECT_TRUE(r.ok()) << r.error().to_string();
  return tar;
}

std::vector<std::string> listing(const stdfs::path& dir) {
  std::vector<std::string> names;
  for (auto& e : stdfs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(TarballSource, ExtractsOnceIntoCacheBySha) {
  TempDir t, cache;
  stdfs::path tar = make_tarball(t.path());
  std::string sha = *sha256_file(tar);
  std::vector<std::string> progress;
  auto base = prepare_base(source_of(spec::RootfsKind::kTarball, tar), cache.path(),
                           [&](const std::string& m) { progress.push_back(m); });
  ASSERT_TRUE(base.ok()) << base.error().to_string();
  EXPECT_EQ(base->dir, cache.path() / "tar" / sha);
  EXPECT_EQ(base->id, "tar:" + sha);
  EXPECT_EQ(slurp(base->dir / "etc/hostname"), "tiny\n");
  EXPECT_EQ(mode_of(base->dir), 0755u);
  ASSERT_EQ(progress.size(), 1u);
  EXPECT_NE(progress[0].find("rootfs.tar.gz"), std::string::npos);

  // Reused: no second extraction (the marker survives, no progress).
  spit(base->dir / "marker", "");
  auto again = prepare_base(source_of(spec::RootfsKind::kTarball, tar), cache.path(),
                            [&](const std::string& m) { progress.push_back(m); });
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->dir, base->dir);
  EXPECT_TRUE(stdfs::exists(again->dir / "marker"));
  EXPECT_EQ(progress.size(), 1u);
  EXPECT_EQ(listing(cache.path() / "tar"), (std::vector<std::string>{sha, sha + ".lock"}));
}

TEST(TarballSource, ConcurrentPreparesExtractOnce) {
  TempDir t, cache;
  stdfs::path tar = make_tarball(t.path());
  std::atomic<int> extractions{0};
  std::vector<Result<Base>> results(6, Error("not run"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = prepare_base(source_of(spec::RootfsKind::kTarball, tar), cache.path(),
                                [&](const std::string&) { ++extractions; });
    });
  }
  for (auto& th : threads) th.join();
  for (auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(r->dir, results[0]->dir);
  }
  EXPECT_EQ(extractions.load(), 1);
  EXPECT_EQ(listing(cache.path() / "tar").size(), 2u);  // <sha> and <sha>.lock
}

TEST(TarballSource, FailuresLeaveNothingBehind) {
  TempDir t, cache;
  auto missing =
      prepare_base(source_of(spec::RootfsKind::kTarball, t.path() / "nope.tar"), cache.path());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().message(),
            "rootfs.tarball " + (t.path() / "nope.tar").string() + ": does not exist");

  spit(t.path() / "garbage.tar", "this is not a tar archive at all\n");
  auto garbage =
      prepare_base(source_of(spec::RootfsKind::kTarball, t.path() / "garbage.tar"), cache.path());
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.error().message().find("tar"), std::string::npos);
  EXPECT_NE(garbage.error().message().find("exited with code"), std::string::npos)
      << garbage.error().message();

  TempDir t2;
  stdfs::path not_rootfs = make_tarball(t2.path(), /*with_bin=*/false);
  auto bad = prepare_base(source_of(spec::RootfsKind::kTarball, not_rootfs), cache.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("does not look like a root filesystem"), std::string::npos)
      << bad.error().message();

  // Only lock files remain: no half-extracted or temporary directories.
  for (const auto& name : listing(cache.path() / "tar"))
    EXPECT_TRUE(name.ends_with(".lock")) << name;
}

TEST(TarballSource, StaleTemporaryDirsAreCleanedUp) {
  TempDir t, cache;
  stdfs::path tar = make_tarball(t.path());
  std::string sha = *sha256_file(tar);
  spit(cache.path() / "tar" / (sha + ".tmp-abcdef") / "half", "");
  auto base = prepare_base(source_of(spec::RootfsKind::kTarball, tar), cache.path());
  ASSERT_TRUE(base.ok()) << base.error().to_string();
  EXPECT_EQ(listing(cache.path() / "tar"), (std::vector<std::string>{sha, sha + ".lock"}));
}

// --- host_debian_mirror ----------------------------------------------------------------------

TEST(DebianMirror, Deb822SkipsSecuritySourceAndDisabled) {
  const std::string debian = R"(Types: deb
# a comment
URIs: http://security.mirror.test/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.mirror.test/debian
Suites: bookworm

Enabled: no
Types: deb
URIs: http://disabled.mirror.test/debian
Suites: bookworm

Types: deb
URIs:
 http://main.mirror.test/debian
 http://second.mirror.test/debian
Suites: bookworm bookworm-updates
Components: main
)";
  auto m = parse_debian_mirror({{"/etc/apt/sources.list.d/debian.sources", debian}});
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(*m, "http://main.mirror.test/debian");
}

TEST(DebianMirror, PrefersDistroArchiveOverThirdPartyListedFirst) {
  const std::string vendor = "Types: deb\nURIs: https://vendor.test/apt/stable\nSuites: nodistro\n";
  const std::string debian = "Types: deb\nURIs: http://mirror.test/debian/\nSuites: trixie\n";
  auto m = parse_debian_mirror({{"a-vendor.sources", vendor}, {"debian.sources", debian}});
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(*m, "http://mirror.test/debian/");
  // With nothing distro-shaped, the first usable entry is taken.
  auto only = parse_debian_mirror({{"a-vendor.sources", vendor}});
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(*only, "https://vendor.test/apt/stable");
}

TEST(DebianMirror, OneLineFormat) {
  const std::string list = R"(# deb http://commented.mirror.test/debian bookworm main
deb-src http://src.mirror.test/debian bookworm main
deb http://security.mirror.test/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.test/debian bookworm main # trailing
)";
  auto m = parse_debian_mirror({{"/etc/apt/sources.list", list}});
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(*m, "http://mirror.test/debian");
}

TEST(DebianMirror, NoneFoundNamesTheFiles) {
  auto m = parse_debian_mirror(
      {{"/x/debian.sources", "Types: deb-src\nURIs: http://m.test/debian\nSuites: sid\n"},
       {"/x/sources.list", "deb http://m.test/debian-security bookworm-security main\n"}});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("/x/debian.sources, /x/sources.list"), std::string::npos)
      << m.error().message();
  EXPECT_NE(m.error().message().find("PREWARM_DEBIAN_MIRROR"), std::string::npos);
  EXPECT_FALSE(parse_debian_mirror({}).ok());
}

TEST(DebianMirror, EnvironmentOverride) {
  ::setenv("PREWARM_DEBIAN_MIRROR", "http://override.mirror.test/debian", 1);
  auto m = host_debian_mirror();
  ::unsetenv("PREWARM_DEBIAN_MIRROR");
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(*m, "http://override.mirror.test/debian");
}

// --- debootstrap recipes ---------------------------------------------------------------------

TEST(Debootstrap, KeyCoversRecipeAndIgnoresPackageOrder) {
  spec::RootfsSource a;
  a.kind = spec::RootfsKind::kDebootstrap;
  a.suite = "bookworm";
  a.packages = {"python3", "curl", "curl"};
  spec::RootfsSource b = a;
  b.packages = {"curl", "python3"};
  const std::string mirror = "http://mirror.test/debian";
  std::string key = debootstrap_key(a, mirror);
  EXPECT_EQ(key.size(), 64u);
  EXPECT_EQ(key, debootstrap_key(b, mirror));
  EXPECT_EQ(key, debootstrap_key(a, mirror + "/"));
  EXPECT_NE(key, debootstrap_key(a, "http://other.test/debian"));
  spec::RootfsSource c = a;
  c.suite = "trixie";
  EXPECT_NE(key, debootstrap_key(c, mirror));
  c = a;
  c.variant = "buildd";
  EXPECT_NE(key, debootstrap_key(c, mirror));
  c = a;
  c.packages.push_back("jq");
  EXPECT_NE(key, debootstrap_key(c, mirror));
}

TEST(Debootstrap, RejectsRecipesBeforeBuilding) {
  TempDir cache;
  spec::RootfsSource s;
  s.kind = spec::RootfsKind::kDebootstrap;
  auto no_suite = prepare_base(s, cache.path());
  ASSERT_FALSE(no_suite.ok());
  EXPECT_NE(no_suite.error().message().find("rootfs.suite"), std::string::npos);
  s.suite = "--foreign";
  EXPECT_FALSE(prepare_base(s, cache.path()).ok());
  s.suite = "bookworm";
  s.packages = {"curl,wget"};
  auto bad_pkg = prepare_base(s, cache.path());
  ASSERT_FALSE(bad_pkg.ok());
  EXPECT_NE(bad_pkg.error().message().find("curl,wget"), std::string::npos);
  EXPECT_TRUE(stdfs::is_empty(cache.path()));
}

// --- overlay arguments (the mount itself is in the integration tests) ------------------------

TEST(Overlay, RefusesPathsOverlayOptionsCannotCarry) {
  TempDir t;
  stdfs::create_directories(t.path() / "lower");
  auto ov = mount_overlay(t.path() / "lower", t.path() / "inst,1");
  ASSERT_FALSE(ov.ok());
  EXPECT_NE(ov.error().message().find("','"), std::string::npos) << ov.error().message();
  auto missing = mount_overlay(t.path() / "no-lower", t.path() / "inst");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("no-lower"), std::string::npos);
}

// Images name their base by host path and may come from elsewhere: the host's own directories
// (directly or through a symlink) are never a container's root.
TEST(Overlay, RefusesTheHostRootSystemDirsAndAnythingHoldingTheInstance) {
  TempDir t;
  for (const char* bad : {"/", "/etc", "/root", "/usr"}) {
    auto ov = mount_overlay(bad, t.path() / "inst");
    ASSERT_FALSE(ov.ok()) << bad;
    EXPECT_NE(ov.error().message().find("base rootfs " + std::string(bad)), std::string::npos)
        << ov.error().message();
  }
  stdfs::create_directory_symlink("/", t.path() / "sneaky");
  auto via_link = mount_overlay(t.path() / "sneaky", t.path() / "inst");
  ASSERT_FALSE(via_link.ok());
  EXPECT_NE(via_link.error().message().find("(/)"), std::string::npos)
      << via_link.error().message();
  auto holding = mount_overlay(t.path(), t.path() / "inst");
  ASSERT_FALSE(holding.ok());
  EXPECT_NE(holding.error().message().find("contains prewarm's instance directory"),
            std::string::npos)
      << holding.error().message();
  EXPECT_FALSE(stdfs::exists(t.path() / "inst")) << "refused before creating anything";
}

}  // namespace
}  // namespace prewarm::rootfs
