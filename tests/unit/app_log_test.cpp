// App logs without root and without the engine library: the log file as stdio and the
// in-process pipe drainer (no process forked; destruction never hangs on a live writer).
#include "engine/app_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <string>
#include <thread>

#include "support/files.h"

namespace prewarm::engine {
namespace {

namespace stdfs = std::filesystem;
using testing::TempDir;
using testing::slurp;

void write_str(int fd, const std::string& s) {
  ASSERT_EQ(::write(fd, s.data(), s.size()), static_cast<ssize_t>(s.size()));
}

int child_count() {
  int n = 0;
  std::string path = "/proc/self/task/" + std::to_string(::gettid()) + "/children";
  std::string text = slurp(path);
  for (char c : text) n += c == ' ';
  return n;
}

TEST(AppLogFile, AppendsWithPrivateMode) {
  TempDir t;
  const stdfs::path log = t.path() / "app.log";
  {
    auto fd = open_app_log_file(log);
    ASSERT_TRUE(fd.ok()) << fd.error().to_string();
    write_str(fd->get(), "one\n");
    EXPECT_NE(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC, 0);
  }
  {
    auto fd = open_app_log_file(log);
    ASSERT_TRUE(fd.ok());
    write_str(fd->get(), "two\n");
  }
  EXPECT_EQ(slurp(log), "one\ntwo\n");
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto bad = open_app_log_file(t.path() / "no/such/dir/app.log");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("no/such/dir/app.log"), std::string::npos);
}

TEST(LogDrain, CopiesUntilEveryWriterClosed) {
  TempDir t;
  const stdfs::path log = t.path() / "app.log";
  int before = child_count();
  auto d = LogDrain::open(log);
  ASSERT_TRUE(d.ok()) << d.error().to_string();
  EXPECT_EQ(child_count(), before) << "the drain must not fork";
  // What the container would hold: a dup of the write end.
  int container = ::dup((*d)->write_end());
  (*d)->close_write_end();
  std::string big(1 << 20, 'x');
  std::thread writer([&] {
    write_str(container, "hello\n");
    write_str(container, big);  // more than a pipe holds: the drain must keep reading
    ::close(container);
  });
  writer.join();
  ASSERT_TRUE((*d)->wait_eof(std::chrono::seconds(10)));
  EXPECT_TRUE((*d)->status().ok());
  EXPECT_EQ((*d)->bytes(), 6u + big.size());
  EXPECT_EQ(slurp(log), "hello\n" + big);
}

TEST(LogDrain, DestructorDoesNotWaitForALiveWriter) {
  TempDir t;
  const stdfs::path log = t.path() / "app.log";
  int container = -1;
  auto start = std::chrono::steady_clock::now();
  {
    auto d = LogDrain::open(log);
    ASSERT_TRUE(d.ok());
    container = ::dup((*d)->write_end());
    write_str(container, "before stop\n");
    EXPECT_FALSE((*d)->wait_eof(std::chrono::milliseconds(50))) << "a writer is still open";
  }  // the writer end stays open: destruction must still return
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(slurp(log), "before stop\n") << "buffered output is copied before stopping";
  // The read end is gone: a late write fails instead of blocking.
  ::signal(SIGPIPE, SIG_IGN);
  EXPECT_EQ(::write(container, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  ::close(container);
}

TEST(LogDrain, DestructorStopsAWriterThatNeverPauses) {
  // The writer gets EPIPE once the drain is gone; as a signal that would end the test.
  ::signal(SIGPIPE, SIG_IGN);
  TempDir t;
  auto d = LogDrain::open(t.path() / "app.log");
  ASSERT_TRUE(d.ok());
  int container = ::dup((*d)->write_end());
  ::fcntl(container, F_SETFL, O_NONBLOCK);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::string chunk(4096, 'y');
    while (!stop) (void)!::write(container, chunk.data(), chunk.size());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto start = std::chrono::steady_clock::now();
  d->reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  stop = true;
  writer.join();
  ::close(container);
}

TEST(LogDrain, OpenErrorNamesTheFile) {
  TempDir t;
  auto d = LogDrain::open(t.path() / "missing-dir" / "app.log");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("missing-dir/app.log"), std::string::npos);
}

}  // namespace
}  // namespace prewarm::engine
