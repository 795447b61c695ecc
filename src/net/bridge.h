// Internal bridge helpers shared by ensure_bridge, attach and remove_bridge_if_unused.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "net/ipam.h"
#include "net/link.h"
#include "net/net.h"
#include "net/netlink.h"

namespace prewarm::net {

// flock on <state_dir>/bridge-<name>.lock: attach and ensure_bridge hold it shared while they
// add to the bridge, removal holds it exclusively, so a bridge is never deleted under a
// half-done attach.
Result<UniqueFd> lock_bridge(const Config& cfg, bool exclusive);

// The bridge's ifindex. When full is false and the bridge is already up, that is all (the
// bridge only goes up after its address is set); otherwise it is created, addressed and
// brought up as needed, tolerating concurrent creators.
Result<int> bridge_index(nl::Socket& sock, const Config& cfg, const Subnet& subnet, bool full);

// Why bridge `bridge` cannot take subnet: another interface has an address in a network that
// overlaps it, so the host would route some of its addresses (the other's or ours) to the wrong
// link (a bridge left by another installation or an earlier run, another container network, the
// host's own LAN). Empty when nothing overlaps. Addresses on `bridge` itself are its own.
std::string subnet_conflict(const Subnet& subnet, const std::string& bridge,
                            const std::vector<link::Ipv4Address>& addresses);

Status validate_ifname(const std::string& name, const char* what);

}  // namespace prewarm::net
