// Pod-sandbox-style networking for instances: a host bridge, and per instance a network
// namespace with loopback up and a veth to the bridge carrying a unique IPv4 address.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"

namespace prewarm::net {

struct Config {
  std::string bridge = "prewarm0";
  std::string subnet = "10.89.0.0/16";  // the bridge takes the first address
  // IP allocations and the bridge's lock: one directory per bridge, host-wide
  // (net_state_dir(bridge)), so that every state dir on a bridge draws from one pool.
  std::filesystem::path state_dir = "/run/prewarm/net/prewarm0";
};

// Where a bridge's allocations live: /run/prewarm/net/<bridge>. Under /run: instances, veths
// and bridges do not survive a reboot, and neither do their leases.
inline constexpr const char* kNetStateRoot = "/run/prewarm/net";
inline std::filesystem::path net_state_dir(const std::string& bridge) {
  return std::filesystem::path(kNetStateRoot) / bridge;
}

// (The CLI's environment overrides, PREWARM_BRIDGE and PREWARM_SUBNET, are read by
// engine::config_from_env.)

struct Attachment {
  std::string netns_name;           // "pw-<id>", visible in `ip netns list`
  std::filesystem::path netns_path;  // /run/netns/pw-<id>
  std::string ip;                   // instance address, reachable from the host
  std::string gateway;              // the bridge's address
  int prefix_len = 0;
  std::string host_veth;            // host end of the veth pair
};

// Names attach() gives an instance's pieces. Instance ids are 1-128 characters of
// [A-Za-z0-9_.-].
Status validate_instance_id(const std::string& instance_id);
std::string netns_name(const std::string& instance_id);  // "pw-<id>"
// "pwv" + 12 hex digits of the id's SHA-256, as interface names are limited to 15 characters.
std::string host_veth_name(const std::string& instance_id);

// Creates the bridge when missing (idempotent, safe to race).
Status ensure_bridge(const Config& cfg);

// Allocates an IP (atomically, safe across concurrent processes), makes or repairs the bridge
// as ensure_bridge does, creates the netns, the veth
// pair (eth0 inside, attached to the bridge outside), brings lo and eth0 up and adds a
// default route via the bridge. On failure nothing is left behind.
Result<Attachment> attach(const Config& cfg, const std::string& instance_id);

// Undoes attach: takes the veth out of the bridge, unmounts and removes the netns, releases the
// IP. Parts that are already gone are fine (used by `rm` after crashes too). The kernel deletes
// the veth pair with the netns, asynchronously (~10-50 ms later, or when whatever still holds
// the netns lets go), because a synchronous delete costs ~40 ms of RCU waiting; attach() of the
// same id deletes such a leftover itself.
Status detach(const Config& cfg, const Attachment& att);

// The Attachment attach() made for this instance, rebuilt from the names and the address files
// (ip is empty when the instance holds no address), so `rm` can detach after a crash.
Attachment recover_attachment(const Config& cfg, const std::string& instance_id);

// Removes the bridge (only when no veth is attached to it).
Status remove_bridge_if_unused(const Config& cfg);

}  // namespace prewarm::net
