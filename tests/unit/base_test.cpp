#include <gtest/gtest.h>

#include "base/result.h"
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
