// The large-heap examples through the CLI: bake, `prewarm run` (a restore), then state checked
// inside the restored copy: the heap example's every page (by checksum) and its counter, Redis's
// key count, a populated value and a sentinel key. Each test has its own state dir, bridge and
// subnet, and removes its instances and images.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "probe/probe.h"
#include "support/cli.h"
#include "support/engine_fixture.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

class ExamplesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "x" + fs::random_hex(3);
    state_ = stdfs::path("/var/tmp") / ("prewarm-e2e-" + tag_);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=pwbr" + tag_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_.substr(1))};
  }

  void TearDown() override {
    if (state_.empty()) return;
    auto rm = prewarm({"rm", "--all"});
    EXPECT_EQ(code(rm), 0) << rm.err;
    // The image and its blobs (hundreds of MB for the larger examples) go even when the test
    // failed; the state dir with the instances' and CRIU's logs stays then.
    if (!name_.empty()) {
      auto rmi = prewarm({"rmi", name_});
      if (baked_) EXPECT_EQ(code(rmi), 0) << rmi.err;
      auto gc = prewarm({"gc"});
      EXPECT_EQ(code(gc), 0) << gc.err;
    }
    EXPECT_EQ(bridge_ports("pwbr" + tag_), "") << "veths left on the bridge";
    remove_test_bridge("pwbr" + tag_);
    if (!name_.empty()) EXPECT_EQ(leftovers(name_ + "-"), "");
    if (HasFailure()) {
      std::cerr << "state dir kept for inspection: " << state_ << "\n";
    } else {
      (void)fs::remove_all(state_);
    }
  }

  RunResult prewarm(const std::vector<std::string>& args) { return run_prewarm(args, env_); }
  static int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

  // Bakes `spec` as name_; false after a failure.
  bool bake(const std::string& spec) {
    auto bake = prewarm({"bake", spec, "--name", name_});
    EXPECT_EQ(code(bake), 0) << bake.out << bake.err;
    if (code(bake) != 0) return false;
    baked_ = true;
    return true;
  }

  // Starts one instance of name_, restored with `paging` (lazy or eager); its IP, or "" after
  // a failure.
  std::string restore(const std::string& paging) {
    auto run = prewarm({"run", name_, "--paging", paging, "--json"});
    EXPECT_EQ(code(run), 0) << run.err;
    if (code(run) != 0) return {};
    auto started = json::parse(run.out);
    EXPECT_EQ(started.size(), 1u) << run.out;
    if (started.size() != 1) return {};
    EXPECT_EQ(started[0]["startedBy"], "restore") << run.out;
    EXPECT_EQ(started[0]["paging"], paging) << run.out;
    return started[0]["ip"].get<std::string>();
  }

  std::string tag_, name_;
  bool baked_ = false;
  stdfs::path state_;
  std::vector<std::string> env_;
};

// What heap.c computes at start for HEAP_MB=mb: xorshift64 from its fixed seed, one word per
// 8 bytes, folded FNV-1a style over the words. The test knows the answer without the app.
std::string expected_heap_sum(size_t mb) {
  uint64_t x = 0x9e3779b97f4a7c15ULL, h = 14695981039346656037ULL;
  for (size_t i = 0; i < (mb << 20) / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    h = (h ^ x) * 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, h);
  return buf;
}

// Eager and lazy restores (the lazy one's pages come through userfaultfd: on demand for what
// /check reads before the background copy gets there), each checked over every page.
TEST_F(ExamplesTest, HeapRestoresEveryPageAndTheCount) {
  constexpr size_t kMb = 64;
  name_ = "heap-" + tag_;
  const std::string spec = PREWARM_EXAMPLE_HEAP_SPEC_DIR "/heap-" + std::to_string(kMb) + ".yaml";
  ASSERT_TRUE(bake(spec));
  for (const char* paging : {"eager", "lazy"}) {
    SCOPED_TRACE(paging);
    std::string ip = restore(paging);
    ASSERT_FALSE(ip.empty());

    auto check = probe::http_get(ip, 8080, "/check", {}, std::chrono::seconds(30));
    ASSERT_TRUE(check.ok()) << check.error().to_string();
    EXPECT_EQ(check->status, 200) << check->body;
    EXPECT_EQ(check->body, "heap=64 sum=" + expected_heap_sum(kMb) + " ok\n");

    // Three counted requests at warm-up; /check does not count.
    auto first = probe::http_get(ip, 8080, "/", {}, std::chrono::seconds(5));
    ASSERT_TRUE(first.ok()) << first.error().to_string();
    EXPECT_EQ(first->body.find("count=4 "), 0u) << first->body;
    auto second = probe::http_get(ip, 8080, "/", {}, std::chrono::seconds(5));
    ASSERT_TRUE(second.ok()) << second.error().to_string();
    EXPECT_EQ(second->body.find("count=5 "), 0u) << second->body;
  }

  // As on a node that pulled the image and never unpacked it: the lazy restore's pages come
  // straight from the store's chunks; /check reads all of them.
  ASSERT_TRUE(fs::remove_all(state_ / "images" / name_).ok());
  std::string ip = restore("lazy");
  ASSERT_FALSE(ip.empty());
  EXPECT_FALSE(stdfs::exists(state_ / "images" / name_)) << "unpacked anyway";
  auto check = probe::http_get(ip, 8080, "/check", {}, std::chrono::seconds(30));
  ASSERT_TRUE(check.ok()) << check.error().to_string();
  EXPECT_EQ(check->body, "heap=64 sum=" + expected_heap_sum(kMb) + " ok\n");
}

// A RESP client for one command at a time: enough for DBSIZE, GET, STRLEN and CONFIG GET.
class Resp {
 public:
  Resp(const std::string& ip, int port) {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_.valid()) return;
    timeval tv{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, ip.c_str(), &a.sin_addr) != 1 ||
        ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      fd_.reset();
  }
  bool connected() const { return fd_.valid(); }

  // Sends the command; returns the reply's raw text (":20001\r\n", "$5\r\nbaked\r\n", ...),
  // or "ERROR ..." when the connection failed.
  std::string call(const std::vector<std::string>& argv) {
    std::string req = "*" + std::to_string(argv.size()) + "\r\n";
    for (const auto& a : argv) req += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    if (::send(fd_.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      return "ERROR send";
    std::string reply;
    char buf[4096];
    while (end_of(reply, 0) == std::string::npos) {
      ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
      if (n <= 0) return "ERROR recv after \"" + reply + "\"";
      reply.append(buf, static_cast<size_t>(n));
    }
    return reply;
  }

 private:
  // Where the reply starting at `at` ends, or npos while it is incomplete: a simple reply
  // (+, -, :) is one line, a bulk string ($) a length line and that many bytes, an array (*)
  // a count line and that many replies.
  static size_t end_of(const std::string& r, size_t at) {
    size_t eol = r.find("\r\n", at);
    if (eol == std::string::npos) return eol;
    const size_t next = eol + 2;
    if (r[at] != '$' && r[at] != '*') return next;
    long n = std::stol(r.substr(at + 1, eol - at - 1));
    if (n < 0) return next;  // a null bulk string or array
    if (r[at] == '$') {
      size_t end = next + static_cast<size_t>(n) + 2;
      return r.size() >= end ? end : std::string::npos;
    }
    size_t pos = next;
    for (long i = 0; i < n && pos != std::string::npos; ++i) pos = end_of(r, pos);
    return pos;
  }

  UniqueFd fd_;
};

TEST_F(ExamplesTest, RedisRestoresItsKeysAndTheSentinel) {
  name_ = "redis-" + tag_;
  // The first run builds the Debian base (a minute or two); later runs reuse the cached one.
  ASSERT_TRUE(bake(PREWARM_EXAMPLE_REDIS_TEST_SPEC));
  for (const char* paging : {"eager", "lazy"}) {
    SCOPED_TRACE(paging);
    std::string ip = restore(paging);
    ASSERT_FALSE(ip.empty());

    Resp redis(ip, 6379);
    ASSERT_TRUE(redis.connected()) << "connect to " << ip << ":6379";
    EXPECT_EQ(redis.call({"DBSIZE"}), ":20001\r\n");  // DEBUG POPULATE's 20000 and the sentinel
    EXPECT_EQ(redis.call({"GET", "prewarm:sentinel"}), "$5\r\nbaked\r\n");
    EXPECT_EQ(redis.call({"STRLEN", "key:19999"}), ":100\r\n");
    EXPECT_EQ(redis.call({"CONFIG", "GET", "save"}), "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    // Writable after the restore too.
    EXPECT_EQ(redis.call({"INCR", "prewarm:restored"}), ":1\r\n");
    EXPECT_EQ(redis.call({"DBSIZE"}), ":20002\r\n");
  }
}

}  // namespace
}  // namespace prewarm::testing
