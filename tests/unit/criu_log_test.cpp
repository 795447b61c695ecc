// relevant_log_lines / relevant_log_tail on logs recorded from CRIU 4.2.1 on the dev host.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "criu/criu.h"

namespace prewarm::criu {
namespace {

// `criu dump` of a process with a connected TCP socket (shortened): the cause is the
// sk-inet line; "Dump files ... failed" and "Dumping FAILED." only repeat that it failed, and
// the RLIMIT error appears on every run.
constexpr std::string_view kDumpTcpLog =
    R"((00.000000) CRIU run id = 6b1e4c3e-8f2f-4a57-9d2b-0f4a2a3c7b11
(00.000227) Version: 4.2.1 (gitid 0)
(00.000255) Loaded kdat cache from /dev/shm/criu.kdat
(00.000790) Dumping processes (pid: 19311 comm: python3)
(00.000798) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.000807) Running pre-dump scripts
(00.005544) 19311 fdinfo 3: pos:                0 flags:                2/0x1
(00.005549) sockets: Searching for socket 0xa7fd family 2
(00.005561) sockets: No filter for socket
(00.005562) inet: Dumping inet socket at 3
(00.005564) inet: 	Dumping: ino   0xa7fd family AF_INET    type SOCK_STREAM    port    51443 state TCP_LISTEN       src_addr 127.0.0.1
(00.005566) inet: 	Dumped: family AF_INET    type SOCK_STREAM    proto IPPROTO_TCP      port 51443 state 0                src_addr 127.0.0.1
(00.005582) 19311 fdinfo 4: pos:                0 flags:                2/0x1
(00.005584) sockets: Searching for socket 0xa7fe family 2
(00.005585) Error (criu/sk-inet.c:200): inet: Connected TCP socket, consider using --tcp-established option.
(00.005588) ----------------------------------------
(00.005597) Error (criu/cr-dump.c:1545): Dump files (pid: 19311) failed with -1
(00.005607) Waiting for 19311 to trap
(00.005609) Daemon 19311 exited trapping
(00.005613) Sent msg to daemon 3 0 0
pie: 19311: __fetched msg: 3 0 0
(00.005686) 19311 was trapped
(00.005837) net: Unlock network
(00.005840) Unfreezing tasks into 1
(00.005841) 	Unseizing 19311 into 1
(00.005847) Error (criu/cr-dump.c:1975): Dumping FAILED.
)";

// `criu restore` whose task fails to reopen a deleted file: pid-prefixed errors.
constexpr std::string_view kRestoreFileLog =
    R"((00.000000) CRIU run id = a5bc720f-5431-4aa8-a8d1-d71dcbb48108
(00.000227) Version: 4.2.1 (gitid 0)
(00.000985) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.001022) Dump CRIU run id = 9c9d96cb-6fa0-43b2-84be-56cf389c1149
(00.002236)  19509: Restore on-core sigactions for 19509
(00.002260)  19509: Restoring children in alien sessions:
(00.002262)  19509: Restoring children in our session:
(00.002273)  19509: Restoring 19509 to 19509 pgid
(00.002277)  19509: Restoring resources
(00.002285)  19509: Opening fdinfo-s
(00.002297)  19509: 		Create fd for 0
(00.002303)  19509: Error (criu/files-reg.c:2353): Can't open file tmp/crlog/g.txt on restore: No such file or directory
(00.002305)  19509: Error (criu/files-reg.c:2267): Can't open file tmp/crlog/g.txt: No such file or directory
(00.002306)  19509: Error (criu/files.c:1221): Unable to open fd=1 id=0x12
(00.002362) Error (criu/cr-restore.c:2331): Restoring FAILED.
)";

bool contains(const std::vector<std::string>& lines, std::string_view needle) {
  for (const auto& l : lines) {
    if (l.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(CriuLog, DumpFailurePointsAtTheCauseNotTheSummary) {
  auto lines = relevant_log_lines(kDumpTcpLog);
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(lines.size(), 12u);
  EXPECT_TRUE(contains(lines, "Connected TCP socket, consider using --tcp-established"));
  // Lines before the error say what CRIU was doing; a few after say what it did next.
  EXPECT_TRUE(contains(lines, "Searching for socket 0xa7fe"));
  EXPECT_TRUE(contains(lines, "Dump files (pid: 19311) failed with -1"));
  EXPECT_FALSE(contains(lines, "RLIMIT_NOFILE"));
  // Timestamps are kept.
  for (const auto& l : lines) {
    if (l.find("Connected TCP socket") != std::string::npos) {
      EXPECT_EQ(l.rfind("(00.005585) Error (criu/sk-inet.c:200)", 0), 0u) << l;
    }
  }
}

TEST(CriuLog, RestoreFailureWithPidPrefix) {
  auto lines = relevant_log_lines(kRestoreFileLog);
  ASSERT_FALSE(lines.empty());
  EXPECT_LE(lines.size(), 12u);
  EXPECT_EQ(lines.back(), "(00.002362) Error (criu/cr-restore.c:2331): Restoring FAILED.");
  EXPECT_TRUE(contains(lines, "Unable to open fd=1 id=0x12"));
  EXPECT_TRUE(contains(lines, "Can't open file tmp/crlog/g.txt on restore"));
  EXPECT_FALSE(contains(lines, "RLIMIT_NOFILE"));
}

TEST(CriuLog, AnchorIsTheLastRealError) {
  std::string log;
  for (int i = 0; i < 40; ++i)
    log += "(00.0000" + std::to_string(10 + i) + ") step " + std::to_string(i) + "\n";
  std::string text = "(00.000001) Error (criu/a.c:1): first error\n" + log +
                     "(00.000100) Error (criu/b.c:2): second error\n" +
                     "(00.000101) after 1\n(00.000102) after 2\n(00.000103) after 3\n"
                     "(00.000104) after 4\n(00.000105) after 5\n";
  auto lines = relevant_log_lines(text, 8);
  ASSERT_EQ(lines.size(), 8u);
  EXPECT_FALSE(contains(lines, "first error"));
  EXPECT_TRUE(contains(lines, "second error"));
  EXPECT_TRUE(contains(lines, "step 39"));
  EXPECT_TRUE(contains(lines, "after 3"));
  EXPECT_FALSE(contains(lines, "after 4"));
}

TEST(CriuLog, ErrorMatchIsCaseSensitiveWithParenthesis) {
  std::string text =
      "(00.000001) Error (criu/x.c:9): the real one\n"
      "(00.000002) sockets: error (not a CRIU error line)\n"
      "(00.000003) Errors are fine here\n"
      "(00.000004) ERROR (also not one)\n";
  auto lines = relevant_log_lines(text, 12);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.front(), "(00.000001) Error (criu/x.c:9): the real one");
}

TEST(CriuLog, OnlyBenignErrorsGivesTheTail) {
  std::string text =
      "(00.000798) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: "
      "Operation not permitted\n";
  for (int i = 0; i < 20; ++i)
    text += "(00.001" + std::to_string(100 + i) + ") line " + std::to_string(i) + "\n";
  auto lines = relevant_log_lines(text, 5);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines.front(), "(00.001115) line 15");
  EXPECT_EQ(lines.back(), "(00.001119) line 19");
}

TEST(CriuLog, WarningIsKeptWhenThereIsNoError) {
  std::string text = "(00.000100) Warn  (criu/kerndat.c:1): Can't load kdat cache\n";
  for (int i = 0; i < 20; ++i)
    text += "(00.001" + std::to_string(100 + i) + ") line " + std::to_string(i) + "\n";
  auto lines = relevant_log_lines(text, 4);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "(00.000100) Warn  (criu/kerndat.c:1): Can't load kdat cache");
  EXPECT_EQ(lines[1], "(00.001117) line 17");
  EXPECT_EQ(lines[3], "(00.001119) line 19");
}

TEST(CriuLog, ShortAndEmptyLogs) {
  EXPECT_TRUE(relevant_log_lines("").empty());
  EXPECT_TRUE(relevant_log_lines("\n\n").empty());
  auto one = relevant_log_lines("(00.1) 1234: Error (criu/x.c:1): boom\r\n");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], "(00.1) 1234: Error (criu/x.c:1): boom");
  EXPECT_TRUE(relevant_log_lines(kDumpTcpLog, 0).empty());
  auto single = relevant_log_lines(kDumpTcpLog, 1);
  ASSERT_EQ(single.size(), 1u);
  EXPECT_NE(single[0].find("Connected TCP socket"), std::string::npos);
}

TEST(CriuLog, SummaryOnlyFailureStillShown) {
  std::string text =
      "(00.000001) Restoring resources\n"
      "(00.000002) Error (criu/cr-restore.c:2331): Restoring FAILED.\n";
  auto lines = relevant_log_lines(text);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1], "(00.000002) Error (criu/cr-restore.c:2331): Restoring FAILED.");
}

TEST(CriuLog, BenignErrors) {
  EXPECT_TRUE(
      is_benign_error("rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted"));
  EXPECT_FALSE(
      is_benign_error("inet: Connected TCP socket, consider using --tcp-established option."));
}

TEST(CriuLog, TailOfFile) {
  auto path = std::filesystem::temp_directory_path() /
              ("criu_log_test-" + std::to_string(::getpid()) + ".log");
  {
    std::ofstream f(path);
    f << kDumpTcpLog;
  }
  std::string tail = relevant_log_tail(path);
  std::filesystem::remove(path);
  EXPECT_NE(tail.find("Connected TCP socket"), std::string::npos);
  EXPECT_EQ(tail.find("RLIMIT"), std::string::npos);
  EXPECT_NE(tail.back(), '\n');
  EXPECT_EQ(relevant_log_tail(path), "");  // gone: unreadable gives ""
}

TEST(CriuLog, TailOfHugeFileReadsOnlyTheEnd) {
  auto path = std::filesystem::temp_directory_path() /
              ("criu_log_test-big-" + std::to_string(::getpid()) + ".log");
  {
    std::ofstream f(path);
    f << "(00.000001) Error (criu/early.c:1): early error far up\n";
    std::string filler = "(00.000002) " + std::string(100, 'x') + "\n";
    for (int i = 0; i < 100000; ++i) f << filler;  // ~11 MB
    f << "(00.000003) Error (criu/late.c:2): late error\n(00.000004) done\n";
  }
  std::string tail = relevant_log_tail(path, 3);
  std::filesystem::remove(path);
  EXPECT_EQ(tail.find("early"), std::string::npos);
  EXPECT_NE(tail.find("late error"), std::string::npos);
  EXPECT_NE(tail.find("done"), std::string::npos);
}

}  // namespace
}  // namespace prewarm::criu
