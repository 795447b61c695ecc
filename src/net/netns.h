// Named network namespaces, the way `ip netns add/del` keeps them: a bind mount of the
// namespace onto /run/netns/<name>, with /run/netns a shared mount point.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "net/netlink.h"

namespace prewarm::net {

inline constexpr const char* kNetnsRunDir = "/run/netns";

struct NamedNetns {
  std::filesystem::path path;
  UniqueFd ns_fd;   // the namespace itself (for IFLA_NET_NS_FD and setns)
  nl::Socket rtnl;  // a NETLINK_ROUTE socket opened inside it
};

// Creates a fresh netns and pins it at /run/netns/<name>; EEXIST if the name is taken. On
// failure nothing is left behind.
Result<NamedNetns> create_named_netns(const std::string& name);
// Unmounts and removes /run/netns/<name>; a missing one is fine.
Status remove_named_netns(const std::string& name);

}  // namespace prewarm::net
