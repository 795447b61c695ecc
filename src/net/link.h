// Typed rtnetlink operations on links, IPv4 addresses and routes, in whatever network
// namespace the socket belongs to. Errors carry the kernel's errno; callers add context.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "net/netlink.h"

namespace prewarm::net::link {

using Mac = std::array<uint8_t, 6>;

struct LinkInfo {
  int index = 0;
  std::string name;
  unsigned flags = 0;  // IFF_*
  int master = 0;      // ifindex of the bridge it is a port of, 0 if none
  std::string kind;    // "bridge", "veth", ... ("" for physical devices and lo)
};

// The link, or nullopt when no link has that name.
Result<std::optional<LinkInfo>> get(nl::Socket& sock, const std::string& name);
// Links that are ports of the given master.
Result<std::vector<LinkInfo>> ports_of(nl::Socket& sock, int master_index);

// Creates a bridge (down) with a fixed MAC, so it does not take over a port's address as
// ports come and go (which would leave stale gateway entries in the instances' ARP caches).
// EEXIST when it already exists.
Status create_bridge(nl::Socket& sock, const std::string& name, const Mac& mac);

struct VethSpec {
  std::string host_name;  // stays in sock's netns, up, port of master
  int master_index = 0;
  std::string peer_name;  // created directly inside peer_netns_fd, down
  int peer_netns_fd = -1;
  Mac peer_mac{};
};
// Creates both ends in one request; the kernel undoes everything if any part fails.
Status create_veth(nl::Socket& sock, const VethSpec& spec);

Status set_up(nl::Socket& sock, int index);
// ENODEV when missing. Slow (tens of ms): the kernel waits for an RCU barrier before it acks.
Status remove(nl::Socket& sock, const std::string& name);
// Takes the link out of its bridge and down, in one request. ENODEV when missing.
Status release_port(nl::Socket& sock, const std::string& name);

// Addresses and routes take IPv4 addresses in host byte order.
// EEXIST when the address is already there.
Status add_ipv4(nl::Socket& sock, int index, uint32_t addr, int prefix_len);
Status add_default_route(nl::Socket& sock, int index, uint32_t gateway);

struct Ipv4Address {
  int index = 0;
  std::string label;  // the interface's name (IPv4 addresses carry it)
  uint32_t addr = 0;
  int prefix_len = 0;
};
// Every IPv4 address in the socket's network namespace.
Result<std::vector<Ipv4Address>> ipv4_addresses(nl::Socket& sock);

}  // namespace prewarm::net::link
