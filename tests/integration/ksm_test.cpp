// KSM's host settings (needs root and a kernel with KSM): a SettingsGuard puts them back when it
// goes out of scope and when a signal ends the process first (`bench memory` raises ksmd's pace
// while it measures; Ctrl-C used to leave the host scanning at that pace).
#include "base/ksm.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

namespace prewarm::ksm {
namespace {

class KsmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (writes /sys/kernel/mm/ksm)";
    if (!std::filesystem::exists("/sys/kernel/mm/ksm/pages_to_scan"))
      GTEST_SKIP() << "this kernel has no KSM (/sys/kernel/mm/ksm)";
    auto s = read_settings();
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    host_ = *s;
    changed_ = host_;
    changed_.pages_to_scan = host_.pages_to_scan + 7;  // ksmd's pace only; run stays as it is
    changed_.sleep_millisecs = host_.sleep_millisecs + 3;
  }
  void TearDown() override {
    if (::geteuid() == 0 && std::filesystem::exists("/sys/kernel/mm/ksm/pages_to_scan"))
      (void)write_settings(host_);  // whatever a failed check left
  }
  static void expect_settings(const Settings& want, const char* when) {
    auto now = read_settings();
    ASSERT_TRUE(now.ok()) << now.error().to_string();
    EXPECT_EQ(now->run, want.run) << when;
    EXPECT_EQ(now->pages_to_scan, want.pages_to_scan) << when;
    EXPECT_EQ(now->sleep_millisecs, want.sleep_millisecs) << when;
  }
  Settings host_, changed_;
};

TEST_F(KsmTest, GuardPutsTheSettingsBackAtScopeExit) {
  {
    SettingsGuard guard(host_);
    ASSERT_TRUE(write_settings(changed_).ok());
    expect_settings(changed_, "inside the guard's scope");
  }
  expect_settings(host_, "after the guard's scope");
}

TEST_F(KsmTest, GuardPutsTheSettingsBackWhenASignalEndsTheProcess) {
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(ready[0]);
      SettingsGuard guard(host_);
      if (!write_settings(changed_).ok()) ::_exit(3);
      char c = 1;
      if (::write(ready[1], &c, 1) != 1) ::_exit(4);
      for (;;) ::pause();  // until the signal
    }
    ::close(ready[1]);
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1) << "the child did not get as far as changing them";
    ::close(ready[0]);
    expect_settings(changed_, "while the child runs");
    ASSERT_EQ(::kill(child, sig), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    // It still dies of the signal (the handler re-raises it), and the settings are back.
    ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    expect_settings(host_, strsignal(sig));
  }
}

}  // namespace
}  // namespace prewarm::ksm
