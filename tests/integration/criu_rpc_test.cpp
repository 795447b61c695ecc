// The CRIU RPC client against the installed criu (4.2.x): version, check, cpuinfo dump/check.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "base/fs.h"
#include "criu/criu.h"
#include "support/files.h"

namespace prewarm::criu {
namespace {

std::optional<std::string> missing_requirement() {
  if (::geteuid() != 0) return "needs root (CRIU checkpoint/restore needs CAP_SYS_ADMIN and more)";
  if (criu_binary().empty()) return "criu not found; run scripts/setup.sh to install CRIU 4.2.1";
  return std::nullopt;
}

#define REQUIRE_CRIU()                                          \
  do {                                                          \
    if (auto why = missing_requirement()) GTEST_SKIP() << *why; \
  } while (0)

using testing::TempDir;

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(CriuRpc, Version) {
  REQUIRE_CRIU();
  auto v = version();
  ASSERT_TRUE(v.ok()) << v.error().to_string();
  EXPECT_EQ(v->major, 4);
  EXPECT_EQ(v->minor, 2);
  EXPECT_EQ(v->text.rfind("4.2", 0), 0u) << v->text;
  std::printf("criu %s at %s\n", v->text.c_str(), criu_binary().c_str());
}

TEST(CriuRpc, Check) {
  REQUIRE_CRIU();
  Status st = check();
  EXPECT_TRUE(st.ok()) << st.error().to_string();
}

TEST(CriuRpc, CpuinfoDumpThenCheck) {
  REQUIRE_CRIU();
  TempDir dir;
  Status dumped = cpuinfo_dump(dir.path());
  ASSERT_TRUE(dumped.ok()) << dumped.error().to_string();
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "cpuinfo.img"));
  // Logs go to a private work dir, not into the image dir.
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename(), "cpuinfo.img") << e.path();
  Status checked = cpuinfo_check(dir.path());
  EXPECT_TRUE(checked.ok()) << checked.error().to_string();
}

// keep_open: one criu process answers several requests, a failed one included, and exits when
// the session ends.
TEST(CriuRpc, KeptOpenSessionAnswersSeveralRequests) {
  REQUIRE_CRIU();
  TempDir dir, empty;
  pid_t pid = -1;
  {
    auto s = Session::open();
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    pid = s->pid();
    ASSERT_GT(pid, 0);
    auto v = s->version();
    ASSERT_TRUE(v.ok()) << v.error().to_string();
    EXPECT_EQ(v->major, 4);
    ASSERT_TRUE(s->cpuinfo_dump(dir.path()).ok());
    Status bad = s->cpuinfo_check(empty.path());  // no cpuinfo.img there
    EXPECT_FALSE(bad.ok());
    Status good = s->cpuinfo_check(dir.path());
    EXPECT_TRUE(good.ok()) << good.error().to_string();
    EXPECT_EQ(s->pid(), pid) << "the same criu served every request";
    EXPECT_EQ(::kill(pid, 0), 0);
    EXPECT_TRUE(s->check().ok());  // the last one: CRIU takes no keep_open with a check
    EXPECT_FALSE(s->version().ok());
  }
  // Reaped with the session.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(CriuRpc, CorruptedCpuinfoFailsClearly) {
  REQUIRE_CRIU();
  TempDir dir;
  ASSERT_TRUE(cpuinfo_dump(dir.path()).ok());
  auto img = dir.path() / "cpuinfo.img";
  auto size = std::filesystem::file_size(img);
  {
    std::ofstream f(img, std::ios::binary | std::ios::trunc);
    f << std::string(size, '\x5a');
  }
  Status st = cpuinfo_check(dir.path());
  ASSERT_FALSE(st.ok());
  std::string text = st.error().to_string();
  std::printf("error as the user sees it:\n%s\n", text.c_str());
  EXPECT_NE(text.find("cpuinfo.img"), std::string::npos);
  EXPECT_NE(text.find("CPUINFO_CHECK failed"), std::string::npos);
  // The CRIU log lines saying why come along.
  EXPECT_FALSE(st.error().detail().empty());
  EXPECT_NE(st.error().detail().find("Error ("), std::string::npos);
}

TEST(CriuRpc, MissingImageDir) {
  REQUIRE_CRIU();
  TempDir dir;
  Status st = cpuinfo_check(dir.path() / "nope");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().to_string().find("nope"), std::string::npos) << st.error().to_string();
}

TEST(CriuRpc, EmptyImageDirFails) {
  REQUIRE_CRIU();
  TempDir dir;
  Status st = cpuinfo_check(dir.path());
  ASSERT_FALSE(st.ok());
  std::printf("error as the user sees it:\n%s\n", st.error().to_string().c_str());
}

TEST(CriuRpc, BinaryThatDoesNotAnswer) {
  // Needs no root: the "criu" here exits at once without speaking RPC.
  ScopedEnv env("PREWARM_CRIU", "/bin/true");
  EXPECT_EQ(criu_binary(), "/bin/true");
  auto v = version();
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("exited without answering"), std::string::npos)
      << v.error().to_string();
}

TEST(CriuRpc, MissingBinary) {
  ScopedEnv env("PREWARM_CRIU", "/nonexistent/criu");
  auto v = version();
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().to_string().find("/nonexistent/criu"), std::string::npos)
      << v.error().to_string();
}

// Not a pass/fail check: prints what each call costs (it sits on the restore path).
TEST(CriuRpc, Latency) {
  REQUIRE_CRIU();
  TempDir dir;
  ASSERT_TRUE(cpuinfo_dump(dir.path()).ok());
  auto median_ms = [](auto fn) {
    std::vector<double> ms;
    for (int i = 0; i < 30; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      fn();
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return std::pair{ms[ms.size() / 2], ms.back()};
  };
  auto [v_med, v_max] = median_ms([] { ASSERT_TRUE(version().ok()); });
  auto [c_med, c_max] = median_ms([&] { ASSERT_TRUE(cpuinfo_check(dir.path()).ok()); });
  auto [k_med, k_max] = median_ms([] { ASSERT_TRUE(check().ok()); });
  std::printf("version():       median %.2f ms, max %.2f ms (30 runs)\n", v_med, v_max);
  std::printf("cpuinfo_check(): median %.2f ms, max %.2f ms (30 runs)\n", c_med, c_max);
  std::printf("check():         median %.2f ms, max %.2f ms (30 runs)\n", k_med, k_max);
}

}  // namespace
}  // namespace prewarm::criu
