// net without root: subnet parsing, the file-based address allocator (allocation, release,
// exhaustion, concurrency) and the names derived from instance ids.
#include "net/net.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "net/bridge.h"
#include "net/ipam.h"
#include "support/files.h"

namespace prewarm::net {
namespace {

namespace stdfs = std::filesystem;
using testing::TempDir;
using testing::slurp;
using testing::spit;

Subnet subnet_of(const std::string& cidr) {
  auto s = parse_subnet(cidr);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message());
  return s.ok() ? *s : Subnet{};
}

TEST(SubnetTest, ParsesCidr) {
  Subnet s = subnet_of("10.89.0.0/16");
  EXPECT_EQ(format_ipv4(s.network), "10.89.0.0");
  EXPECT_EQ(s.prefix_len, 16);
  EXPECT_EQ(format_ipv4(s.gateway()), "10.89.0.1");
  EXPECT_EQ(format_ipv4(s.first_instance()), "10.89.0.2");
  EXPECT_EQ(format_ipv4(s.last_instance()), "10.89.255.254");
  EXPECT_EQ(format_ipv4(s.broadcast()), "10.89.255.255");
  EXPECT_EQ(s.instance_count(), 65536u - 3);
  EXPECT_EQ(s.to_string(), "10.89.0.0/16");

  Subnet small = subnet_of("192.168.7.8/29");
  EXPECT_EQ(small.instance_count(), 5u);
  EXPECT_TRUE(small.contains(*parse_ipv4("192.168.7.15")));
  EXPECT_FALSE(small.contains(*parse_ipv4("192.168.7.16")));
  EXPECT_EQ(subnet_of("10.0.0.0/30").instance_count(), 1u);
}

TEST(SubnetTest, RejectsBadInput) {
  struct Case {
    const char* cidr;
    const char* says;
  };
  for (auto [cidr, says] :
       {Case{"10.89.0.0", "missing /prefix"}, Case{"10.89.0/16", "not an IPv4 address"},
        Case{"10.89.0.256/24", "not an IPv4 address"}, Case{"hello/24", "not an IPv4 address"},
        Case{"10.89.0.0/", "not a number"}, Case{"10.89.0.0/x", "not a number"},
        Case{"10.89.0.0/16 ", "not a number"}, Case{"10.89.0.0/31", "1..30"},
        Case{"10.89.0.0/32", "1..30"}, Case{"0.0.0.0/0", "1..30"},
        Case{"10.89.0.1/16",
             "host bits are set; the network address is "
             "10.89.0.0/16"},
        Case{"", "missing /prefix"}}) {
    auto s = parse_subnet(cidr);
    ASSERT_FALSE(s.ok()) << cidr;
    EXPECT_NE(s.error().message().find(says), std::string::npos) << s.error().message();
    EXPECT_NE(s.error().message().find(std::string("\"") + cidr + "\""), std::string::npos)
        << s.error().message();
    EXPECT_EQ(s.error().errno_value(), EINVAL);
  }
}

// A bridge's subnet must not overlap any other interface's network: a bridge left by an
// earlier run with the same /24 made every probe of a new instance fail with "No route to host".
TEST(SubnetTest, ConflictsWithEveryOverlappingNetworkButItsOwnBridge) {
  Subnet ours = subnet_of("10.89.121.0/24");
  auto addr = [](const char* ip, int len, const char* label) {
    return link::Ipv4Address{7, label, *parse_ipv4(ip), len};
  };
  // Free: other networks, its own address, a shorter network's neighbour.
  EXPECT_EQ(subnet_conflict(ours, "pwbrA",
                            {addr("127.0.0.1", 8, "lo"), addr("192.0.2.2", 24, "eth0"),
                             addr("10.89.121.1", 24, "pwbrA"), addr("10.89.122.1", 24, "x"),
                             addr("10.89.120.255", 32, "y"), addr("10.90.0.1", 16, "z")}),
            "");
  struct Case {
    link::Ipv4Address other;
    const char* says;
  };
  for (const auto& [other, says] :
       {Case{addr("10.89.121.1", 24, "pwbrB"), "overlaps 10.89.121.1/24 on pwbrB"},
        Case{addr("10.89.0.1", 16, "prewarm0"), "overlaps 10.89.0.1/16 on prewarm0"},
        Case{addr("10.89.121.130", 25, "half"), "overlaps 10.89.121.130/25 on half"},
        Case{addr("10.89.121.7", 32, "one"), "overlaps 10.89.121.7/32 on one"},
        Case{addr("10.0.0.5", 8, ""), "overlaps 10.0.0.5/8 on interface #7"},
        Case{addr("0.0.0.1", 0, "all"), "overlaps 0.0.0.1/0 on all"}}) {
    std::string why = subnet_conflict(ours, "pwbrA", {addr("192.0.2.2", 24, "eth0"), other});
    EXPECT_NE(why.find(std::string("subnet 10.89.121.0/24 ") + says), std::string::npos) << why;
    EXPECT_NE(why.find("PREWARM_SUBNET"), std::string::npos) << why;
  }
}

TEST(IpamTest, AllocatesEveryInstanceAddressOnceThenReportsExhaustion) {
  TempDir tmp;
  Subnet s = subnet_of("10.89.200.0/29");
  Ipam ipam(tmp.path() / "state" / "ips");  // created on first use
  std::set<std::string> got;
  for (int i = 0; i < 5; ++i) {
    std::string owner = "inst-" + std::to_string(i);
    auto ip = ipam.allocate(s, owner);
    ASSERT_TRUE(ip.ok()) << ip.error().message();
    EXPECT_GE(*ip, s.first_instance());  // never the network address or the gateway
    EXPECT_LE(*ip, s.last_instance());   // never the broadcast address
    got.insert(format_ipv4(*ip));
    EXPECT_EQ(slurp(ipam.dir() / format_ipv4(*ip)), owner);
  }
  EXPECT_EQ(got, (std::set<std::string>{"10.89.200.2", "10.89.200.3", "10.89.200.4", "10.89.200.5",
                                        "10.89.200.6"}));

  auto full = ipam.allocate(s, "one-too-many");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().errno_value(), EADDRNOTAVAIL);
  EXPECT_NE(full.error().message().find("no free address in subnet 10.89.200.0/29"),
            std::string::npos)
      << full.error().message();
  EXPECT_NE(full.error().message().find("all 5 instance addresses"), std::string::npos);

  // Releasing one makes exactly that one available again.
  uint32_t freed = *parse_ipv4("10.89.200.4");
  std::string holder = slurp(ipam.dir() / "10.89.200.4");
  ASSERT_TRUE(ipam.release(freed, holder).ok());
  EXPECT_FALSE(stdfs::exists(ipam.dir() / "10.89.200.4"));
  auto again = ipam.allocate(s, "newcomer");
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(format_ipv4(*again), "10.89.200.4");
  EXPECT_EQ(slurp(ipam.dir() / "10.89.200.4"), "newcomer");
}

TEST(IpamTest, ReleaseIsIdempotentAndLeavesOtherOwnersAlone) {
  TempDir tmp;
  Subnet s = subnet_of("10.89.200.0/29");
  Ipam ipam(tmp.path());
  auto ip = ipam.allocate(s, "a");
  ASSERT_TRUE(ip.ok());
  ASSERT_TRUE(ipam.release(*ip, "b").ok());  // not b's: kept
  EXPECT_TRUE(stdfs::exists(ipam.dir() / format_ipv4(*ip)));
  EXPECT_EQ(ipam.find(s, "a"), std::optional<uint32_t>(*ip));
  EXPECT_EQ(ipam.find(s, "b"), std::nullopt);
  ASSERT_TRUE(ipam.release(*ip, "a").ok());
  EXPECT_FALSE(stdfs::exists(ipam.dir() / format_ipv4(*ip)));
  ASSERT_TRUE(ipam.release(*ip, "a").ok());  // already gone: fine
  EXPECT_EQ(ipam.find(s, "a"), std::nullopt);
}

TEST(IpamTest, ConcurrentAllocatorsNeverShareAnAddress) {
  TempDir tmp;
  Subnet s = subnet_of("10.89.200.0/26");  // 61 instance addresses
  constexpr int kThreads = 8, kEach = 10;  // 80 requests: some must fail cleanly
  std::vector<std::vector<uint32_t>> got(kThreads);
  std::atomic<int> exhausted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Ipam ipam(tmp.path() / "ips");  // separate instances, as separate processes would have
      for (int i = 0; i < kEach; ++i) {
        auto ip = ipam.allocate(s, "t" + std::to_string(t) + "-" + std::to_string(i));
        if (ip.ok()) {
          got[t].push_back(*ip);
        } else {
          ++exhausted;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint32_t> all;
  size_t total = 0;
  for (auto& v : got) {
    total += v.size();
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(total, all.size());
  EXPECT_EQ(total, 61u);
  EXPECT_EQ(exhausted.load(), kThreads * kEach - 61);
}

TEST(IpamTest, UnwritableDirectoryIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can write anywhere";
  Ipam ipam("/proc/net-test-not-writable");
  auto ip = ipam.allocate(subnet_of("10.89.200.0/29"), "x");
  EXPECT_FALSE(ip.ok());
}

TEST(NamesTest, HostVethNamesFitAndDifferPerInstance) {
  std::string long_id(128, 'a');
  for (const std::string& id : {std::string("abc"), long_id, std::string("web-1.replica_2")}) {
    std::string name = host_veth_name(id);
    EXPECT_LE(name.size(), 15u) << name;
    EXPECT_EQ(name.rfind("pwv", 0), 0u) << name;
    EXPECT_EQ(name, host_veth_name(id));  // stable
    EXPECT_EQ(name.find_first_not_of("pwv0123456789abcdef"), std::string::npos) << name;
  }
  // Ids sharing a long prefix must still get different names.
  EXPECT_NE(host_veth_name(long_id + "1"), host_veth_name(long_id + "2"));
  EXPECT_EQ(netns_name("abc"), "pw-abc");
}

TEST(NamesTest, InstanceIdsAreValidated) {
  EXPECT_TRUE(validate_instance_id("web-1.replica_2").ok());
  EXPECT_TRUE(validate_instance_id(std::string(128, 'x')).ok());
  for (const std::string& bad : {std::string(), std::string(129, 'x'), std::string("a/b"),
                                 std::string("a b"), std::string("ä")}) {
    Status st = validate_instance_id(bad);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.error().message().find("invalid instance id"), std::string::npos);
  }
}

TEST(AttachTest, InvalidInputFailsBeforeTouchingAnything) {
  TempDir tmp;
  Config cfg;
  cfg.state_dir = tmp.path();
  cfg.subnet = "10.89.200.0/33";
  auto att = attach(cfg, "ok-id");
  ASSERT_FALSE(att.ok());
  EXPECT_NE(att.error().message().find("invalid subnet"), std::string::npos);
  cfg.subnet = "10.89.200.0/24";
  att = attach(cfg, "bad/id");
  ASSERT_FALSE(att.ok());
  EXPECT_NE(att.error().message().find("invalid instance id"), std::string::npos);
  cfg.bridge = "a-bridge-name-too-long";
  att = attach(cfg, "ok-id");
  ASSERT_FALSE(att.ok());
  EXPECT_NE(att.error().message().find("invalid bridge name"), std::string::npos);
  EXPECT_TRUE(stdfs::is_empty(tmp.path()));
}

TEST(AttachTest, RecoverAttachmentFindsTheAddress) {
  TempDir tmp;
  Config cfg;
  cfg.state_dir = tmp.path();
  cfg.subnet = "10.89.200.0/29";
  Ipam ipam(tmp.path() / "ips");
  auto ip = ipam.allocate(*parse_subnet(cfg.subnet), "lost");
  ASSERT_TRUE(ip.ok());
  Attachment att = recover_attachment(cfg, "lost");
  EXPECT_EQ(att.netns_name, "pw-lost");
  EXPECT_EQ(att.netns_path, "/run/netns/pw-lost");
  EXPECT_EQ(att.host_veth, host_veth_name("lost"));
  EXPECT_EQ(att.ip, format_ipv4(*ip));
  EXPECT_EQ(att.gateway, "10.89.200.1");
  EXPECT_EQ(att.prefix_len, 29);
  EXPECT_EQ(recover_attachment(cfg, "never").ip, "");
}

}  // namespace
}  // namespace prewarm::net
