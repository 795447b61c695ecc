// net on the real kernel (needs root): bridge creation races, two concurrent attaches with
// distinct addresses, the inside configuration as `ip` sees it, a TCP connection from the host
// to a listener inside an instance's netns, cleanup on failure and on detach, and the latency
// of attach/detach (printed, not asserted). Uses a random test bridge and a free 10.90.x.0/24
// subnet; the fixture removes every netns, veth and bridge it made, even when checks fail.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "net/ipam.h"
#include "net/net.h"
#include "support/subnets.h"

namespace prewarm::net {
namespace {

namespace stdfs = std::filesystem;

// stdout of a command, "" when it fails.
std::string sh(const std::vector<std::string>& argv) {
  SpawnOptions opts;
  opts.argv = argv;
  auto r = run_capture(opts, std::chrono::seconds(20));
  if (!r.ok() || !r->success()) return "";
  return r->out;
}

bool link_exists(const std::string& name) {
  SpawnOptions opts;
  opts.argv = {"ip", "link", "show", "dev", name};
  auto r = run_capture(opts, std::chrono::seconds(20));
  return r.ok() && r->success();
}

bool netns_listed(const std::string& name) {
  std::string list = sh({"ip", "netns", "list"});
  size_t pos = 0;
  while ((pos = list.find(name, pos)) != std::string::npos) {
    bool starts_line = pos == 0 || list[pos - 1] == '\n';
    size_t end = pos + name.size();
    bool ends_word = end == list.size() || list[end] == ' ' || list[end] == '\n';
    if (starts_line && ends_word) return true;
    pos = end;
  }
  return false;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class NetRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (find_executable("ip").empty()) GTEST_SKIP() << "needs iproute2's ip to inspect results";
    std::string tmpl = (stdfs::temp_directory_path() / "net-root-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    state_dir_ = tmpl;
    // Two free /24s: one test makes a second bridge on octet_ + 1.
    octet_ = testing::free_test_octet(std::stoul(fs::random_hex(2), nullptr, 16), 2);
    cfg_.bridge = "pwtest" + fs::random_hex(3);
    cfg_.subnet = testing::test_subnet(octet_);
    cfg_.state_dir = state_dir_;
    bridges_.push_back(cfg_.bridge);
  }

  void TearDown() override {
    for (const auto& [cfg, id] : attached_) {
      Status st = detach(cfg, recover_attachment(cfg, id));
      if (!st.ok()) ADD_FAILURE() << "teardown: " << st.error().message();
      // Belt and braces: whatever detach missed must not outlive the test.
      if (link_exists(host_veth_name(id))) sh({"ip", "link", "del", host_veth_name(id)});
      if (netns_listed(netns_name(id))) sh({"ip", "netns", "del", netns_name(id)});
    }
    for (const auto& name : extra_links_)
      if (link_exists(name)) sh({"ip", "link", "del", name});
    for (const auto& name : bridges_)
      if (link_exists(name)) sh({"ip", "link", "del", name});
    if (!state_dir_.empty()) {
      std::error_code ec;
      stdfs::remove_all(state_dir_, ec);
    }
  }

  // Registers the id for teardown before attaching, so a half-failed attach is cleaned too.
  Result<Attachment> attach_tracked(const Config& cfg, const std::string& id) {
    {
      std::lock_guard lock(mu_);
      attached_.emplace_back(cfg, id);
    }
    return attach(cfg, id);
  }

  std::string unique_id(const std::string& base) { return base + "-" + fs::random_hex(4); }

  // Right after detach: netns and address gone, veth out of the bridge; the kernel deletes the
  // veth pair with the netns shortly after.
  void expect_gone(const Attachment& att, const std::string& bridge) {
    EXPECT_FALSE(netns_listed(att.netns_name)) << sh({"ip", "netns", "list"});
    EXPECT_FALSE(stdfs::exists(att.netns_path));
    EXPECT_FALSE(stdfs::exists(state_dir_ / "ips" / att.ip));
    std::string ports = sh({"ip", "-o", "link", "show", "master", bridge});
    EXPECT_FALSE(contains(ports, att.host_veth)) << ports;
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (link_exists(att.host_veth) && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(link_exists(att.host_veth)) << "veth still there 10 s after detach";
  }

  Config cfg_;
  stdfs::path state_dir_;
  int octet_ = 0;
  std::mutex mu_;
  std::vector<std::pair<Config, std::string>> attached_;
  std::vector<std::string> bridges_;
  std::vector<std::string> extra_links_;
};

// A listener inside the netns: this thread setns()es into it and accepts one connection.
class ListenerInNetns {
 public:
  explicit ListenerInNetns(const stdfs::path& netns_path) {
    std::promise<int> port;
    auto ready = port.get_future();
    thread_ = std::thread([this, netns_path, p = std::move(port)]() mutable {
      UniqueFd ns(::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns.valid() || ::setns(ns.get(), CLONE_NEWNET) != 0) return p.set_value(-1);
      UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
      socklen_t len = sizeof addr;
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
          ::listen(s.get(), 1) != 0 ||
          ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
        return p.set_value(-1);
      p.set_value(ntohs(addr.sin_port));
      pollfd pfd{s.get(), POLLIN, 0};
      if (::poll(&pfd, 1, 10000) != 1) return;
      UniqueFd conn(::accept4(s.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn.valid()) return;
      char c = 0;
      if (::read(conn.get(), &c, 1) == 1) {
        char reply = static_cast<char>(c + 1);
        got_ = c;
        (void)!::write(conn.get(), &reply, 1);
      }
    });
    port_ = ready.get();
  }
  ~ListenerInNetns() { thread_.join(); }
  int port() const { return port_; }
  char got() const { return got_; }

 private:
  std::thread thread_;
  int port_ = -1;
  char got_ = 0;
};

// Connects from the host (this thread's netns), sends 'a', returns the reply byte or 0.
char ping_tcp(const std::string& ip, int port) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  timeval tv{5, 0};
  ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return 0;
  char c = 'a', reply = 0;
  if (::write(s.get(), &c, 1) != 1 || ::read(s.get(), &reply, 1) != 1) return 0;
  return reply;
}

TEST_F(NetRootTest, ConcurrentAttachesAreIsolatedReachableAndFullyDetached) {
  std::string ids[2] = {unique_id("a"), unique_id("b")};
  auto first = std::async(std::launch::async, [&] { return attach_tracked(cfg_, ids[0]); });
  auto second = std::async(std::launch::async, [&] { return attach_tracked(cfg_, ids[1]); });
  Result<Attachment> results[2] = {first.get(), second.get()};
  for (auto& r : results) ASSERT_TRUE(r.ok()) << r.error().to_string();
  const Attachment* atts[2] = {&*results[0], &*results[1]};

  EXPECT_NE(atts[0]->ip, atts[1]->ip);
  Subnet subnet = *parse_subnet(cfg_.subnet);
  std::string gw = "10.90." + std::to_string(octet_) + ".1";
  std::string bridge_info = sh({"ip", "-o", "-4", "addr", "show", "dev", cfg_.bridge});
  EXPECT_TRUE(contains(bridge_info, "inet " + gw + "/24")) << bridge_info;

  for (int i = 0; i < 2; ++i) {
    const Attachment& att = *atts[i];
    SCOPED_TRACE(ids[i]);
    EXPECT_EQ(att.netns_name, "pw-" + ids[i]);
    EXPECT_EQ(att.netns_path, "/run/netns/pw-" + ids[i]);
    EXPECT_EQ(att.gateway, gw);
    EXPECT_EQ(att.prefix_len, 24);
    EXPECT_EQ(att.host_veth, host_veth_name(ids[i]));
    auto ip = parse_ipv4(att.ip);
    ASSERT_TRUE(ip.ok());
    EXPECT_TRUE(subnet.contains(*ip) && *ip >= subnet.first_instance() &&
                *ip <= subnet.last_instance())
        << att.ip;
    EXPECT_EQ(fs::read_file(state_dir_ / "ips" / att.ip).value(), ids[i]);
    EXPECT_TRUE(netns_listed(att.netns_name)) << sh({"ip", "netns", "list"});

    std::string lo = sh({"ip", "-n", att.netns_name, "-o", "link", "show", "lo"});
    EXPECT_TRUE(contains(lo, "<LOOPBACK,UP,LOWER_UP>")) << lo;
    std::string eth0 = sh({"ip", "-n", att.netns_name, "-o", "link", "show", "eth0"});
    EXPECT_TRUE(contains(eth0, ",UP,LOWER_UP>")) << eth0;
    std::string addr = sh({"ip", "-n", att.netns_name, "-o", "-4", "addr", "show", "dev", "eth0"});
    EXPECT_TRUE(contains(addr, "inet " + att.ip + "/24")) << addr;
    std::string route = sh({"ip", "-n", att.netns_name, "-4", "route", "show", "default"});
    EXPECT_TRUE(contains(route, "default via " + gw + " dev eth0")) << route;
    std::string links = sh({"ip", "-n", att.netns_name, "-o", "link", "show"});
    EXPECT_EQ(std::count(links.begin(), links.end(), '\n'), 2) << links;  // lo and eth0 only

    std::string host = sh({"ip", "-o", "link", "show", "dev", att.host_veth});
    EXPECT_TRUE(contains(host, "master " + cfg_.bridge)) << host;
    EXPECT_TRUE(contains(host, ",UP,LOWER_UP>")) << host;

    ListenerInNetns listener(att.netns_path);
    ASSERT_GT(listener.port(), 0);
    EXPECT_EQ(ping_tcp(att.ip, listener.port()), 'b') << "connect to " << att.ip;
  }

  // A bridge in use stays.
  ASSERT_TRUE(remove_bridge_if_unused(cfg_).ok());
  EXPECT_TRUE(link_exists(cfg_.bridge));

  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(detach(cfg_, *atts[i]).ok());
    expect_gone(*atts[i], cfg_.bridge);
    Status again = detach(cfg_, *atts[i]);  // idempotent
    EXPECT_TRUE(again.ok()) << again.error().to_string();
  }
  ASSERT_TRUE(remove_bridge_if_unused(cfg_).ok());
  EXPECT_FALSE(link_exists(cfg_.bridge));
}

TEST_F(NetRootTest, RacingEnsureBridgeBothSucceed) {
  Config cfg = cfg_;
  cfg.bridge = "pwtr" + fs::random_hex(4);
  cfg.subnet = testing::test_subnet(octet_ + 1);
  bridges_.push_back(cfg.bridge);
  std::vector<std::future<Status>> racers;
  for (int i = 0; i < 4; ++i)
    racers.push_back(std::async(std::launch::async, [&] { return ensure_bridge(cfg); }));
  for (auto& r : racers) {
    Status st = r.get();
    EXPECT_TRUE(st.ok()) << st.error().to_string();
  }
  std::string info = sh({"ip", "-o", "-4", "addr", "show", "dev", cfg.bridge});
  EXPECT_EQ(std::count(info.begin(), info.end(), '\n'), 1) << info;
  EXPECT_TRUE(contains(info, "inet 10.90." + std::to_string(octet_ + 1) + ".1/24")) << info;
  std::string link = sh({"ip", "-o", "-d", "link", "show", "dev", cfg.bridge});
  EXPECT_TRUE(contains(link, "BROADCAST,MULTICAST,UP")) << link;
  EXPECT_TRUE(contains(link, "bridge")) << link;
  ASSERT_TRUE(ensure_bridge(cfg).ok());  // again, on an existing bridge
  ASSERT_TRUE(remove_bridge_if_unused(cfg).ok());
  EXPECT_FALSE(link_exists(cfg.bridge));
  ASSERT_TRUE(remove_bridge_if_unused(cfg).ok());  // already gone
}

// A bridge left by an earlier run held the same /24 as a new test's bridge: every probe of the
// new instances failed with "No route to host" for six minutes. Now the second bridge is
// refused, naming the first, before anything is made.
TEST_F(NetRootTest, ASubnetAnotherInterfaceHoldsIsRefusedBeforeAnythingIsMade) {
  ASSERT_TRUE(ensure_bridge(cfg_).ok());
  Config other = cfg_;
  other.bridge = "pwto" + fs::random_hex(4);
  other.state_dir = state_dir_ / "other";
  bridges_.push_back(other.bridge);
  std::string held = "10.90." + std::to_string(octet_) + ".1/24 on " + cfg_.bridge;
  for (const char* subnet : {"same", "wider"}) {
    other.subnet = std::string(subnet) == "same" ? cfg_.subnet : "10.90.0.0/16";
    Status st = ensure_bridge(other);
    ASSERT_FALSE(st.ok()) << subnet;
    EXPECT_EQ(st.error().errno_value(), EADDRINUSE) << st.error().to_string();
    EXPECT_TRUE(contains(st.error().message(), "bridge " + other.bridge + ": subnet " +
                                                   other.subnet + " overlaps " + held))
        << st.error().message();
    EXPECT_TRUE(contains(st.error().message(), "PREWARM_SUBNET")) << st.error().message();
    EXPECT_FALSE(link_exists(other.bridge)) << subnet;

    std::string id = unique_id("ovl");
    auto att = attach(other, id);
    ASSERT_FALSE(att.ok()) << subnet;
    EXPECT_TRUE(contains(att.error().message(), "overlaps " + held)) << att.error().to_string();
    EXPECT_FALSE(link_exists(other.bridge));
    EXPECT_FALSE(netns_listed(netns_name(id)));
    EXPECT_FALSE(link_exists(host_veth_name(id)));
    std::error_code ec;
    EXPECT_TRUE(!stdfs::exists(other.state_dir / "ips", ec) ||
                stdfs::is_empty(other.state_dir / "ips", ec))
        << "a lease was left behind";
  }
}

TEST_F(NetRootTest, FailedAttachLeavesNothingBehind) {
  ASSERT_TRUE(ensure_bridge(cfg_).ok());

  // The netns name is taken (a previous instance with this id was never detached).
  std::string dup = unique_id("dup");
  auto one = attach_tracked(cfg_, dup);
  ASSERT_TRUE(one.ok()) << one.error().to_string();
  auto two = attach(cfg_, dup);
  ASSERT_FALSE(two.ok());
  EXPECT_TRUE(contains(two.error().message(), "create netns pw-" + dup + " for instance " + dup))
      << two.error().message();
  EXPECT_TRUE(contains(two.error().message(), "File exists")) << two.error().to_string();
  size_t files = 0;
  for (auto& e : stdfs::directory_iterator(state_dir_ / "ips")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);                      // the second attempt's address was released
  EXPECT_TRUE(link_exists(one->host_veth));  // and the first instance is untouched
  EXPECT_TRUE(netns_listed(one->netns_name));

  // The host veth name is taken by another kind of device.
  std::string clash = unique_id("clash");
  std::string veth = host_veth_name(clash);
  extra_links_.push_back(veth);
  sh({"ip", "link", "add", veth, "type", "bridge"});
  ASSERT_TRUE(link_exists(veth));
  auto failed = attach_tracked(cfg_, clash);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(contains(failed.error().message(),
                       "create veth " + veth + " for instance " + clash + ": File exists"))
      << failed.error().message();
  EXPECT_FALSE(netns_listed(netns_name(clash)));
  EXPECT_FALSE(stdfs::exists(stdfs::path("/run/netns") / netns_name(clash)));
  EXPECT_EQ(recover_attachment(cfg_, clash).ip, "");

  // A bridge name used by a non-bridge device.
  Config wrong = cfg_;
  wrong.bridge = "pwp" + fs::random_hex(4);
  std::string peer = "pwq" + fs::random_hex(4);
  extra_links_.push_back(wrong.bridge);
  extra_links_.push_back(peer);
  sh({"ip", "link", "add", wrong.bridge, "type", "veth", "peer", "name", peer});
  ASSERT_TRUE(link_exists(wrong.bridge));
  auto not_bridge = attach_tracked(wrong, unique_id("nb"));
  ASSERT_FALSE(not_bridge.ok());
  EXPECT_TRUE(contains(not_bridge.error().message(), "bridge " + wrong.bridge + ": a veth device"))
      << not_bridge.error().message();

  ASSERT_TRUE(detach(cfg_, *one).ok());
  expect_gone(*one, cfg_.bridge);
}

TEST_F(NetRootTest, DetachToleratesMissingPieces) {
  std::string id = unique_id("partial");
  auto att = attach_tracked(cfg_, id);
  ASSERT_TRUE(att.ok()) << att.error().to_string();
  sh({"ip", "link", "del", att->host_veth});  // e.g. removed by hand after a crash
  Status st = detach(cfg_, recover_attachment(cfg_, id));
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  expect_gone(*att, cfg_.bridge);
  st = detach(cfg_, Attachment{});
  EXPECT_TRUE(st.ok()) << st.error().to_string();
}

TEST_F(NetRootTest, ReattachSameIdRightAfterDetach) {
  std::string id = unique_id("again");
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    auto att = attach_tracked(cfg_, id);
    ASSERT_TRUE(att.ok()) << att.error().to_string();
    ListenerInNetns listener(att->netns_path);
    ASSERT_GT(listener.port(), 0);
    EXPECT_EQ(ping_tcp(att->ip, listener.port()), 'b') << "connect to " << att->ip;
    Status st = detach(cfg_, *att);  // the veth is still being deleted when the next round starts
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Prints attach/detach latency over repeated cycles; only correctness is asserted.
TEST_F(NetRootTest, AttachDetachLatency) {
  ASSERT_TRUE(ensure_bridge(cfg_).ok());
  constexpr int kRuns = 50;
  std::vector<double> attach_ms, detach_ms;
  for (int i = 0; i < kRuns; ++i) {
    std::string id = unique_id("lat" + std::to_string(i));
    Stopwatch sw;
    auto att = attach_tracked(cfg_, id);
    attach_ms.push_back(sw.millis());
    ASSERT_TRUE(att.ok()) << att.error().to_string();
    sw.restart();
    Status st = detach(cfg_, *att);
    detach_ms.push_back(sw.millis());
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }
  std::printf(
      "attach: median %.2f ms, p90 %.2f ms; detach: median %.2f ms, p90 %.2f ms "
      "(%d runs)\n",
      median(attach_ms), percentile(attach_ms, 0.9), median(detach_ms), percentile(detach_ms, 0.9),
      kRuns);
}

}  // namespace
}  // namespace prewarm::net
