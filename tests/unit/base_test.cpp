#include <gtest/gtest.h>
#include <signal.h>

#include "base/base64.h"
#include "base/result.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"

namespace prewarm {
namespace {

Result<int> half(int x) {
  if (x % 2) return Error("odd: " + std::to_string(x), EINVAL);
  return x / 2;
}

Result<int> quarter(int x) {
  PW_ASSIGN(int h, half(x));
  PW_ASSIGN(int q, half(h));
  return q;
}

TEST(Result, PropagatesErrorsWithContext) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "odd: 3");
  Error e = std::move(r).error();
  e.with_context("dividing");
  EXPECT_EQ(e.message(), "dividing: odd: 3");
}

TEST(Result, SysErrorNamesOpAndPath) {
  Error e = Error::sys("open", ENOENT, "/nope");
  EXPECT_EQ(e.message(), "open /nope: No such file or directory");
  EXPECT_EQ(e.errno_value(), ENOENT);
  Error d = Error("restore failed").with_detail("line one\nline two");
  EXPECT_EQ(d.to_string(), "restore failed\n    line one\n    line two");
}

TEST(Base64, EncodesRfc4648VectorsAndDecodesOnlyCanonicalText) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}, {"user:pass", "dXNlcjpwYXNz"}};
  for (const auto& [plain, coded] : vectors) {
    EXPECT_EQ(base64_encode(plain), coded);
    auto back = base64_decode(coded);
    ASSERT_TRUE(back) << coded;
    EXPECT_EQ(*back, plain);
  }
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zm9v\n", "Zm9v Yg==", "Zh==", "Zm9=", "=m9v", "Zm=v",
                          "Zg==Zg=="})
    EXPECT_FALSE(base64_decode(bad)) << bad;
}

TEST(Sha256, KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, StreamInPiecesMatchesTheWholeAndResets) {
  Sha256Stream h;
  h.update("a");
  h.update(std::string_view("bc"));
  EXPECT_EQ(h.final_hex(), sha256_hex("abc"));
  h.reset();
  h.update("x", 1);
  EXPECT_EQ(h.final_hex(), sha256_hex("x"));
}

TEST(Fs, RemoveOnExitRemovesTheTreeUnlessReleasedAndFollowsAMove) {
  auto base = std::filesystem::temp_directory_path() / ("prewarm-roe-" + fs::random_hex(4));
  auto a = base / "a", b = base / "b", c = base / "c";
  for (const auto& d : {a, b, c}) {
    ASSERT_TRUE(fs::make_dirs(d / "sub").ok());
    ASSERT_TRUE(fs::write_file(d / "sub" / "f", "x").ok());
  }
  {
    fs::RemoveOnExit ga(a), gb(b);
    gb.release();
    fs::RemoveOnExit moved_from(c);
    fs::RemoveOnExit gc(std::move(moved_from));
    EXPECT_TRUE(moved_from.path().empty());
    EXPECT_EQ(gc.path(), c);
  }
  EXPECT_FALSE(std::filesystem::exists(a));
  EXPECT_TRUE(std::filesystem::exists(b / "sub" / "f"));
  EXPECT_FALSE(std::filesystem::exists(c));
  std::filesystem::remove_all(base);
}

TEST(Subprocess, CapturesOutputAndExitCode) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"};
  auto r = run_capture(o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->success());
  EXPECT_EQ(r->describe(), "exited with code 3");
}

TEST(Subprocess, TimeoutKillsChild) {
  SpawnOptions o;
  o.argv = {"/bin/sleep", "30"};
  auto r = run_capture(o, std::chrono::milliseconds(200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().errno_value(), ETIMEDOUT);
}

TEST(Subprocess, RunCheckedQuotesStderr) {
  auto r = run_checked({"/bin/sh", "-c", "echo broken >&2; exit 1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("broken"), std::string::npos);
  EXPECT_NE(r.error().message().find("exited with code 1"), std::string::npos);
}

}  // namespace
}  // namespace prewarm

namespace prewarm {
namespace {

TEST(ErrorKind, GivenOrDerivedFromErrnoAndKeptThroughContext) {
  EXPECT_EQ(Error("x").kind(), ErrorKind::kInternal);
  EXPECT_EQ(Error::sys("open", ENOENT, "/x").kind(), ErrorKind::kNotFound);
  EXPECT_EQ(Error::sys("write", ENOSPC, "/x").kind(), ErrorKind::kIo);
  EXPECT_EQ(Error::sys("connect", ETIMEDOUT).kind(), ErrorKind::kUnavailable);
  EXPECT_EQ(Error::sys("chmod", EPERM, "/x").kind(), ErrorKind::kPermissionDenied);
  Error e = Error(ErrorKind::kIncompatibleHost, "cpu", ENOENT).with_context("restore");
  EXPECT_EQ(e.kind(), ErrorKind::kIncompatibleHost) << "a given kind wins over errno";
  EXPECT_EQ(e.message(), "restore: cpu");
  EXPECT_EQ(Error("x").with_kind(ErrorKind::kConflict).kind(), ErrorKind::kConflict);
  EXPECT_STREQ(error_kind_name(ErrorKind::kNotFound), "not found");
}

}  // namespace
}  // namespace prewarm

namespace prewarm {
namespace {

TEST(Subprocess, MoveAssignmentReapsTheChildItReplaces) {
  SpawnOptions o;
  o.argv = {"sleep", "30"};
  auto a = spawn(o);
  auto b = spawn(o);
  ASSERT_TRUE(a.ok() && b.ok());
  pid_t first = a->pid(), second = b->pid();
  Child held = std::move(a).value();
  held = std::move(b).value();
  // The first child was killed and reaped: its pid is no longer ours.
  EXPECT_EQ(::kill(first, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  EXPECT_EQ(held.pid(), second);
  EXPECT_GE(held.pidfd(), 0);
}

}  // namespace
}  // namespace prewarm
