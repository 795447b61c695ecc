// Subnets for the bridges tests make: /24s of 10.90.0.0/16, outside prewarm's default
// 10.89.0.0/16, skipping any that an interface's network on this host overlaps (a bridge an
// interrupted run left, another installation's), so that a leftover cannot make a test's
// instances unreachable. Failures throw (gtest reports an exception in a test or its SetUp as a
// failure with its message; the pods bench, which shares the CRI node, dies with it).
#pragma once

#include <stdexcept>
#include <string>

#include "net/bridge.h"
#include "net/ipam.h"
#include "net/link.h"

namespace prewarm::testing {

// The third octet X of the first run of `span` free /24s R.X.0/24 .. R.(X+span-1).0/24 of the
// /16 R (10.90 unless said), looking from one derived from seed (a test's random tag) so that
// tests made at the same time start apart.
inline int free_test_octet(unsigned long seed, int span = 1, const std::string& range = "10.90") {
  auto sock = net::nl::Socket::open();
  if (!sock.ok()) throw std::runtime_error(sock.error().to_string());
  auto addresses = net::link::ipv4_addresses(*sock);
  if (!addresses.ok()) throw std::runtime_error(addresses.error().to_string());
  auto free = [&](int octet) {
    auto subnet = net::parse_subnet(range + "." + std::to_string(octet) + ".0/24");
    return subnet.ok() && net::subnet_conflict(*subnet, "", *addresses).empty();
  };
  const int slots = 257 - span;
  for (int i = 0; i < slots; ++i) {
    int first = static_cast<int>((seed + static_cast<unsigned long>(i)) % slots);
    bool all = true;
    for (int k = 0; k < span && all; ++k) all = free(first + k);
    if (all) return first;
  }
  throw std::runtime_error("no free /24 left in " + range +
                           ".0.0/16 for a test bridge (see `ip -4 addr`)");
}

inline std::string test_subnet(int octet) { return "10.90." + std::to_string(octet) + ".0/24"; }

// A free test subnet, from a test's hexadecimal tag.
inline std::string free_test_subnet(const std::string& hex_tag) {
  return test_subnet(free_test_octet(std::stoul(hex_tag, nullptr, 16)));
}

}  // namespace prewarm::testing
