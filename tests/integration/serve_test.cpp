// On-demand activation (`prewarm serve`'s Activator) with real CRIU: the first request from zero
// is answered by a freshly restored instance with the checkpoint's state, idle instances go,
// concurrent first requests start no more than max, and a warm pool turns the first request into
// a claim.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <chrono>
#include <set>
#include <thread>

#include "bake/bake.h"
#include "base/subprocess.h"
#include "daemon/activation.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "support/engine_fixture.h"
#include "support/loopback.h"

namespace prewarm::testing {
namespace {

using namespace std::chrono_literals;

// GET / through the activator; the whole answer ("" when the connection failed).
std::string get_via(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string req = "GET / HTTP/1.0\r\nHost: x\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

class ServeTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (IsSkipped()) return;
    bake::BakeOptions o;
    o.name = "serve-" + tag_;
    o.working_set = false;
    track(o.name);
    auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
    ASSERT_TRUE(baked.ok()) << baked.error().to_string();
    auto img = images::load_image(ctx_, o.name);
    ASSERT_TRUE(img.ok());
    img_ = *img;
  }
  size_t instances() {
    auto l = lifecycle::list_instances(ctx_);
    return l.ok() ? l->size() : 999;
  }
  images::LoadedImage img_;
};

TEST_F(ServeTest, FirstRequestFromZeroIsAnsweredWarmAndIdleInstancesGo) {
  daemon::ActivationOptions o;
  o.max = 2;
  o.idle_timeout = 600ms;
  daemon::Activator act(ctx_, img_, o);
  ASSERT_TRUE(act.start().ok());
  EXPECT_EQ(instances(), 0u) << "scaled to zero before the first request";
  std::string first = get_via(act.port());
  EXPECT_NE(first.find("count=6 "), std::string::npos) << first;
  std::string second = get_via(act.port());
  EXPECT_NE(second.find("count=7 "), std::string::npos) << "the same instance serves on: " << second;
  EXPECT_EQ(act.stats().started, 1);
  EXPECT_TRUE(wait_for([&] { return instances() == 0; }, 10s)) << "the idle instance is removed";
  EXPECT_EQ(act.stats().removed_idle, 1);
  // And the next request starts one again, from the checkpoint.
  std::string again = get_via(act.port());
  EXPECT_NE(again.find("count=6 "), std::string::npos) << again;
  act.stop();
  EXPECT_EQ(instances(), 0u) << "stop removes what serve made";
}

TEST_F(ServeTest, ConcurrentFirstRequestsStartNoMoreThanMax) {
  daemon::ActivationOptions o;
  o.max = 2;
  o.concurrency = 1;
  o.idle_timeout = 30s;
  daemon::Activator act(ctx_, img_, o);
  ASSERT_TRUE(act.start().ok());
  std::atomic<int> peak{0};
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done) {
      peak = std::max(peak.load(), act.instances());
      std::this_thread::sleep_for(2ms);
    }
  });
  std::vector<std::thread> clients;
  std::vector<std::string> answers(8);
  for (int i = 0; i < 8; ++i) clients.emplace_back([&, i] { answers[i] = get_via(act.port()); });
  for (auto& t : clients) t.join();
  done = true;
  watcher.join();
  std::set<std::string> hosts;
  for (const auto& a : answers) {
    EXPECT_NE(a.find("count="), std::string::npos) << a;
    size_t h = a.find("hostname=");
    if (h != std::string::npos) hosts.insert(a.substr(h, a.find(' ', h) - h));
  }
  EXPECT_LE(hosts.size(), 2u);
  EXPECT_LE(peak.load(), 2);
  EXPECT_LE(act.stats().peak_instances, 2);
  // A second instance may have been started and found the first free again before it was
  // ready: started counts it, the answers need not.
  EXPECT_GE(act.stats().started, static_cast<int>(hosts.size()));
  EXPECT_LE(act.stats().started, 2);
  act.stop();
  EXPECT_EQ(instances(), 0u);
}

TEST_F(ServeTest, AWarmPoolTurnsTheFirstRequestIntoAClaim) {
  daemon::ActivationOptions o;
  o.min = 1;
  o.max = 2;
  o.idle_timeout = 30s;
  daemon::Activator act(ctx_, img_, o);
  ASSERT_TRUE(act.start().ok());
  ASSERT_TRUE(wait_for([&] { return lifecycle::Instances(ctx_).parked(img_)->size() == 1; }, 20s));
  std::string first = get_via(act.port());
  EXPECT_NE(first.find("count=6 "), std::string::npos) << first;
  EXPECT_EQ(act.stats().claimed, 1);
  EXPECT_EQ(act.stats().started, 0);
  // The pool is refilled behind it.
  EXPECT_TRUE(wait_for([&] { return lifecycle::Instances(ctx_).parked(img_)->size() == 1; }, 20s));
  act.stop();
  EXPECT_EQ(instances(), 0u) << "the claimed one and the refilled parked one are removed";
}

// `prewarm serve` killed with SIGKILL leaves its instances (a ready one and a parked one); the
// next serve on the same address removes them before it serves.
TEST_F(ServeTest, TheNextServeRemovesWhatAKilledOneLeft) {
  const int port = free_port();  // for both serves
  const std::string listen = "127.0.0.1:" + std::to_string(port);
  SpawnOptions so;
  so.env = {"PREWARM_STATE_DIR=" + ctx_.state_dir.string(), "PREWARM_BRIDGE=" + ctx_.net.bridge,
            "PREWARM_SUBNET=" + ctx_.net.subnet, "PREWARM_CACHE_DIR=" + ctx_.cache_dir.string()};
  const std::string prewarm = PREWARM_BINARY_DIR "/cmd/prewarm/prewarm";
  so.argv = {prewarm, "--no-daemon", "serve", img_.name, "--listen", listen, "--min", "1",
             "--idle-timeout", "600"};
  auto first = spawn(so);
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  lifecycle::Instances inst(ctx_);
  ASSERT_TRUE(
      wait_for([&] { return inst.parked(img_).ok() && inst.parked(img_)->size() == 1; }, 30s));
  // A request: the parked one is claimed (ready, the serve's) and another is parked.
  std::string answer;
  ASSERT_TRUE(wait_for([&] { return !(answer = get_via(port)).empty(); }, 10s));
  EXPECT_NE(answer.find("count=6 "), std::string::npos) << answer;
  ASSERT_TRUE(wait_for([&] { return inst.parked(img_)->size() == 1 && instances() == 2; }, 30s))
      << instances() << " instances";
  const auto owned = ctx_.state_dir / "serve" / (listen + ".json");
  EXPECT_TRUE(std::filesystem::exists(owned));
  first->kill(SIGKILL);
  ASSERT_TRUE(first->wait(10s).ok());
  EXPECT_EQ(instances(), 2u) << "a killed serve cannot remove its instances itself";

  // The next one, without a pool: it removes both and starts from zero.
  so.argv = {prewarm, "--no-daemon", "serve", img_.name, "--listen", listen, "--idle-timeout",
             "600"};
  int err[2];
  ASSERT_EQ(::pipe2(err, O_CLOEXEC), 0);
  so.stderr_fd = err[1];
  auto second = spawn(so);
  ::close(err[1]);
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  EXPECT_TRUE(wait_for([&] { return instances() == 0; }, 30s)) << instances() << " instances";
  // And it serves: one instance restored for the next request.
  answer.clear();
  ASSERT_TRUE(wait_for([&] { return !(answer = get_via(port)).empty(); }, 10s));
  EXPECT_NE(answer.find("count=6 "), std::string::npos) << answer;
  EXPECT_EQ(instances(), 1u);
  second->kill(SIGTERM);
  ASSERT_TRUE(second->wait(30s).ok());
  std::string said;
  char buf[4096];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;)
    said.append(buf, static_cast<size_t>(n));
  ::close(err[0]);
  EXPECT_NE(
      said.find("serve: removed 2 instance(s) that a serve on " + listen + " left when it died"),
      std::string::npos)
      << said;
  EXPECT_EQ(instances(), 0u) << "a serve stopped by SIGTERM removes its own";
  EXPECT_FALSE(std::filesystem::exists(owned)) << "a serve that stops cleanly leaves no record";
}

}  // namespace
}  // namespace prewarm::testing
