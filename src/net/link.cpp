// rtnetlink link, address and route requests (what `ip link/addr/route` would send).
#include "net/link.h"

#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/veth.h>

#include <cstring>

namespace prewarm::net::link {
namespace {

LinkInfo parse_link(const nlmsghdr* h) {
  auto* ifi = static_cast<const ifinfomsg*>(NLMSG_DATA(h));
  LinkInfo info;
  info.index = ifi->ifi_index;
  info.flags = ifi->ifi_flags;
  size_t hdr = NLMSG_LENGTH(sizeof(ifinfomsg));
  if (h->nlmsg_len <= hdr) return info;
  nl::Attrs attrs(reinterpret_cast<const char*>(h) + NLMSG_ALIGN(hdr), h->nlmsg_len - hdr,
                  IFLA_MAX);
  info.name = attrs.str(IFLA_IFNAME);
  info.master = static_cast<int>(attrs.u32(IFLA_MASTER));
  if (const rtattr* li = attrs.get(IFLA_LINKINFO)) {
    nl::Attrs linkinfo(RTA_DATA(li), RTA_PAYLOAD(li), IFLA_INFO_MAX);
    info.kind = linkinfo.str(IFLA_INFO_KIND);
  }
  return info;
}

ifinfomsg up_ifinfo(int index = 0) {
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  return ifi;
}

constexpr uint16_t kCreate = NLM_F_CREATE | NLM_F_EXCL;

}  // namespace

Result<std::optional<LinkInfo>> get(nl::Socket& sock, const std::string& name) {
  nl::Message msg(RTM_GETLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  msg.put_struct(ifi);
  msg.put_str(IFLA_IFNAME, name);
  msg.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  std::optional<LinkInfo> found;
  Status st = sock.request(msg, [&](const nlmsghdr* h) {
    if (h->nlmsg_type == RTM_NEWLINK) found = parse_link(h);
  });
  if (!st.ok()) {
    if (st.error().errno_value() == ENODEV) return std::optional<LinkInfo>();
    return std::move(st).error();
  }
  return found;
}

Result<std::vector<LinkInfo>> ports_of(nl::Socket& sock, int master_index) {
  nl::Message msg(RTM_GETLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  msg.put_struct(ifi);
  msg.put_u32(IFLA_MASTER, static_cast<uint32_t>(master_index));  // the kernel filters on it
  msg.put_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
  std::vector<LinkInfo> ports;
  PW_TRY(sock.dump(msg, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWLINK) return;
    LinkInfo info = parse_link(h);
    if (info.master == master_index) ports.push_back(std::move(info));
  }));
  return ports;
}

Status create_bridge(nl::Socket& sock, const std::string& name, const Mac& mac) {
  nl::Message msg(RTM_NEWLINK, kCreate);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  msg.put_struct(ifi);
  msg.put_str(IFLA_IFNAME, name);
  msg.put(IFLA_ADDRESS, mac.data(), mac.size());
  size_t linkinfo = msg.begin_nest(IFLA_LINKINFO);
  msg.put_str(IFLA_INFO_KIND, "bridge");
  msg.end_nest(linkinfo);
  return sock.request(msg);
}

Status create_veth(nl::Socket& sock, const VethSpec& spec) {
  nl::Message msg(RTM_NEWLINK, kCreate);
  msg.put_struct(up_ifinfo());
  msg.put_str(IFLA_IFNAME, spec.host_name);
  msg.put_u32(IFLA_MASTER, static_cast<uint32_t>(spec.master_index));
  size_t linkinfo = msg.begin_nest(IFLA_LINKINFO);
  msg.put_str(IFLA_INFO_KIND, "veth");
  size_t data = msg.begin_nest(IFLA_INFO_DATA);
  size_t peer = msg.begin_nest(VETH_INFO_PEER);
  // Not up yet: veth configures the peer before pairing the two, so an up request here fails
  // with ENOTCONN.
  ifinfomsg peer_ifi{};
  peer_ifi.ifi_family = AF_UNSPEC;
  msg.put_struct(peer_ifi);
  msg.put_str(IFLA_IFNAME, spec.peer_name);
  msg.put(IFLA_ADDRESS, spec.peer_mac.data(), spec.peer_mac.size());
  // SAFETY: the kernel resolves the fd during this request; the caller keeps it open until then.
  msg.put_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(spec.peer_netns_fd));
  msg.end_nest(peer);
  msg.end_nest(data);
  msg.end_nest(linkinfo);
  return sock.request(msg);
}

Status set_up(nl::Socket& sock, int index) {
  nl::Message msg(RTM_NEWLINK, 0);
  msg.put_struct(up_ifinfo(index));
  return sock.request(msg);
}

Status remove(nl::Socket& sock, const std::string& name) {
  nl::Message msg(RTM_DELLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  msg.put_struct(ifi);
  msg.put_str(IFLA_IFNAME, name);
  return sock.request(msg);
}

Status release_port(nl::Socket& sock, const std::string& name) {
  nl::Message msg(RTM_NEWLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_change = IFF_UP;  // and ifi_flags without IFF_UP: down
  msg.put_struct(ifi);
  msg.put_str(IFLA_IFNAME, name);
  msg.put_u32(IFLA_MASTER, 0);
  return sock.request(msg);
}

Status add_ipv4(nl::Socket& sock, int index, uint32_t addr, int prefix_len) {
  nl::Message msg(RTM_NEWADDR, kCreate);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefix_len);
  ifa.ifa_scope = RT_SCOPE_UNIVERSE;
  ifa.ifa_index = static_cast<unsigned>(index);
  msg.put_struct(ifa);
  uint32_t be = htonl(addr);
  msg.put(IFA_LOCAL, &be, sizeof be);
  msg.put(IFA_ADDRESS, &be, sizeof be);
  if (prefix_len < 31) {
    uint32_t bcast = htonl(addr | (0xffffffffu >> prefix_len));
    msg.put(IFA_BROADCAST, &bcast, sizeof bcast);
  }
  return sock.request(msg);
}

Status add_default_route(nl::Socket& sock, int index, uint32_t gateway) {
  nl::Message msg(RTM_NEWROUTE, kCreate);
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = 0;
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = RTPROT_BOOT;
  rt.rtm_scope = RT_SCOPE_UNIVERSE;
  rt.rtm_type = RTN_UNICAST;
  msg.put_struct(rt);
  uint32_t gw = htonl(gateway);
  msg.put(RTA_GATEWAY, &gw, sizeof gw);
  msg.put_u32(RTA_OIF, static_cast<uint32_t>(index));
  return sock.request(msg);
}

Result<std::vector<Ipv4Address>> ipv4_addresses(nl::Socket& sock) {
  nl::Message msg(RTM_GETADDR, 0);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  msg.put_struct(ifa);
  std::vector<Ipv4Address> out;
  PW_TRY(sock.dump(msg, [&](const nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWADDR) return;
    auto* a = static_cast<const ifaddrmsg*>(NLMSG_DATA(h));
    if (a->ifa_family != AF_INET) return;
    size_t hdr = NLMSG_LENGTH(sizeof(ifaddrmsg));
    if (h->nlmsg_len <= hdr) return;
    nl::Attrs attrs(reinterpret_cast<const char*>(h) + NLMSG_ALIGN(hdr), h->nlmsg_len - hdr,
                    IFA_MAX);
    const rtattr* local = attrs.get(IFA_LOCAL) ? attrs.get(IFA_LOCAL) : attrs.get(IFA_ADDRESS);
    if (local == nullptr || RTA_PAYLOAD(local) != sizeof(uint32_t)) return;
    uint32_t be = 0;
    std::memcpy(&be, RTA_DATA(local), sizeof be);
    out.push_back({static_cast<int>(a->ifa_index), attrs.str(IFA_LABEL), ntohl(be),
                   a->ifa_prefixlen});
  }));
  return out;
}

}  // namespace prewarm::net::link
