// Per-instance networking: address, netns, veth into the bridge, and the inside configuration,
// all over netlink in-process (no `ip` processes on the restore path); and its undoing.
#include <fcntl.h>
#include <linux/if.h>

#include <functional>
#include <vector>

#include "base/log.h"
#include "net/bridge.h"
#include "net/ipam.h"
#include "net/link.h"
#include "net/net.h"
#include "net/netns.h"

namespace prewarm::net {
namespace {

constexpr const char* kInsideName = "eth0";
constexpr int kLoopbackIndex = 1;  // the kernel registers lo first in every netns

// Undo steps, run newest first unless the whole operation succeeded.
class Rollback {
 public:
  ~Rollback() {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)();
  }
  void add(std::function<void()> step) { steps_.push_back(std::move(step)); }
  void dismiss() { steps_.clear(); }

 private:
  std::vector<std::function<void()>> steps_;
};

// The MAC follows the address (as Docker does), so an address reused by a new instance keeps
// the host's neighbour entry valid instead of black-holing traffic until it expires.
link::Mac mac_for(uint32_t ip) {
  return {0x0a,
          0x58,
          static_cast<uint8_t>(ip >> 24),
          static_cast<uint8_t>(ip >> 16),
          static_cast<uint8_t>(ip >> 8),
          static_cast<uint8_t>(ip)};
}

std::filesystem::path ips_dir(const Config& cfg) { return cfg.state_dir / "ips"; }

// The host end must leave the bridge at once (its forwarding entries would misdirect traffic
// for a reused address), but deleting a veth makes the kernel wait for an RCU barrier (~40 ms
// here), and so does moving it to another netns. Taking it out of the bridge and down is quick;
// the pair is then deleted by the kernel's asynchronous teardown of the instance's netns, once
// nothing holds that any more. Without a netns file to rely on, it is deleted here (slow path).
Status remove_host_veth(const Attachment& att, const std::string& for_instance) {
  auto host = nl::Socket::open();
  if (!host.ok())
    return std::move(host).error().with_context("remove veth " + att.host_veth + for_instance);
  bool have_netns = false;
  if (!att.netns_name.empty()) {
    std::filesystem::path ns_path = std::filesystem::path(kNetnsRunDir) / att.netns_name;
    have_netns = ::access(ns_path.c_str(), F_OK) == 0;
  }
  if (have_netns) {
    Status st = link::release_port(*host, att.host_veth);
    if (st.ok() || st.error().errno_value() == ENODEV) return {};
    log::debug("take veth " + att.host_veth + " out of its bridge: " + st.error().message() +
               "; deleting it instead");
  }
  Status st = link::remove(*host, att.host_veth);
  if (!st.ok() && st.error().errno_value() != ENODEV)
    return std::move(st).error().with_context("delete veth " + att.host_veth + for_instance);
  return {};
}

// A veth by our name that is in no bridge is what detach leaves for the kernel to delete with
// the old netns (pending, or stuck because something still holds that netns). Deletes it so a
// re-attach of the same id can proceed; true if it did.
bool remove_stale_veth(nl::Socket& host, const std::string& name) {
  auto existing = link::get(host, name);
  if (!existing.ok() || !*existing) return false;
  if (existing->value().kind != "veth" || existing->value().master != 0) return false;
  log::debug("deleting veth " + name + " left over from an earlier detach");
  Status st = link::remove(host, name);
  return st.ok() || st.error().errno_value() == ENODEV;
}

void warn_if_failed(const Status& st) {
  if (!st.ok()) log::warn("cleanup after failed attach: " + st.error().message());
}

}  // namespace

Result<Attachment> attach(const Config& cfg, const std::string& id) {
  PW_TRY(validate_instance_id(id));
  PW_TRY(validate_ifname(cfg.bridge, "bridge"));
  PW_ASSIGN(Subnet subnet, parse_subnet(cfg.subnet));
  const std::string for_instance = " for instance " + id;

  Attachment att;
  att.netns_name = netns_name(id);
  att.netns_path = std::filesystem::path(kNetnsRunDir) / att.netns_name;
  att.host_veth = host_veth_name(id);
  att.gateway = format_ipv4(subnet.gateway());
  att.prefix_len = subnet.prefix_len;
  Ipam ipam(ips_dir(cfg));
  // Declared after what its steps refer to by reference, so it runs before they are destroyed.
  Rollback rollback;

  auto ip = ipam.allocate(subnet, id);
  if (!ip.ok()) return std::move(ip).error().with_context("allocate address" + for_instance);
  att.ip = format_ipv4(*ip);
  rollback.add([&ipam, &id, addr = *ip] { warn_if_failed(ipam.release(addr, id)); });

  PW_ASSIGN(UniqueFd bridge_lock, lock_bridge(cfg, false));
  auto host = nl::Socket::open();
  if (!host.ok()) return std::move(host).error().with_context("attach instance " + id);
  // Made or repaired (address, up) here, as ensure_bridge does: one lock and one socket.
  auto bridge = bridge_index(*host, cfg, subnet, true);
  if (!bridge.ok()) return std::move(bridge).error().with_context("attach instance " + id);

  auto ns = create_named_netns(att.netns_name);
  if (!ns.ok()) {
    Error e = std::move(ns).error().with_context("create netns " + att.netns_name + for_instance);
    if (e.errno_value() != EEXIST) return e;
    return std::move(e).with_detail(
        "a previous instance with this id was not detached; remove "
        "it first (prewarm rm, or `ip netns del " +
        att.netns_name + "`)");
  }
  rollback.add([&att] { warn_if_failed(remove_named_netns(att.netns_name)); });

  link::VethSpec veth{att.host_veth, *bridge, kInsideName, ns->ns_fd.get(), mac_for(*ip)};
  Status st = link::create_veth(*host, veth);
  if (!st.ok() && st.error().errno_value() == EEXIST && remove_stale_veth(*host, att.host_veth))
    st = link::create_veth(*host, veth);
  if (!st.ok())
    return std::move(st).error().with_context("create veth " + att.host_veth + for_instance);
  rollback.add([&att] {
    // A fresh socket: the one above is gone by the time the rollback runs.
    auto sock = nl::Socket::open();
    Status del = sock.ok() ? link::remove(*sock, att.host_veth) : Status(sock.error());
    if (!del.ok() && del.error().errno_value() != ENODEV) warn_if_failed(del);
  });
  bridge_lock.reset();  // the veth is a port now: the bridge stays

  nl::Socket& inside = ns->rtnl;
  const std::string in_ns = " in netns " + att.netns_name;
  st = link::set_up(inside, kLoopbackIndex);
  if (!st.ok()) return std::move(st).error().with_context("set lo up" + in_ns + for_instance);
  auto eth0 = link::get(inside, kInsideName);
  if (!eth0.ok() || !*eth0)
    return (eth0.ok() ? Error("not found", ENODEV) : std::move(eth0).error())
        .with_context(std::string("look up ") + kInsideName + in_ns + for_instance);
  int eth0_index = eth0->value().index;
  st = link::set_up(inside, eth0_index);
  if (!st.ok())
    return std::move(st).error().with_context(std::string("set ") + kInsideName + " up" + in_ns +
                                              for_instance);
  st = link::add_ipv4(inside, eth0_index, *ip, subnet.prefix_len);
  if (!st.ok())
    return std::move(st).error().with_context("add address " + att.ip + "/" +
                                              std::to_string(subnet.prefix_len) + " to " +
                                              kInsideName + in_ns + for_instance);
  st = link::add_default_route(inside, eth0_index, subnet.gateway());
  if (!st.ok())
    return std::move(st).error().with_context("add default route via " + att.gateway + in_ns +
                                              for_instance);
  rollback.dismiss();
  return att;
}

Status detach(const Config& cfg, const Attachment& att) {
  std::optional<Error> first;
  auto note = [&](Status st) {
    if (st.ok()) return;
    if (!first) {
      first = std::move(st).error();
    } else {
      std::move(*first).with_detail(st.error().message());
    }
  };
  std::string id = att.netns_name.starts_with("pw-") ? att.netns_name.substr(3) : att.netns_name;
  const std::string for_instance = " for instance " + id;

  bool veth_gone = true;
  if (!att.host_veth.empty()) {
    Status st = remove_host_veth(att, for_instance);
    if (!st.ok()) {
      veth_gone = false;
      note(std::move(st));
    }
  }
  if (!att.netns_name.empty()) {
    Status st = remove_named_netns(att.netns_name);
    if (!st.ok())
      note(std::move(st).error().with_context("remove netns " + att.netns_name + for_instance));
  }
  if (!att.ip.empty() && !veth_gone) {
    // Still on the bridge with that address: handing it out again would duplicate it.
    note(Error("keeping address " + att.ip + " allocated until veth " + att.host_veth +
               " is off the bridge; retry the removal"));
  } else if (!att.ip.empty()) {
    auto ip = parse_ipv4(att.ip);
    if (!ip.ok()) {
      note(std::move(ip).error().with_context("release address" + for_instance));
    } else {
      Status st = Ipam(ips_dir(cfg)).release(*ip, id);
      if (!st.ok()) note(std::move(st).error().with_context("detach" + for_instance));
    }
  }
  if (first) return std::move(*first);
  return {};
}

Attachment recover_attachment(const Config& cfg, const std::string& id) {
  Attachment att;
  att.netns_name = netns_name(id);
  att.netns_path = std::filesystem::path(kNetnsRunDir) / att.netns_name;
  att.host_veth = host_veth_name(id);
  if (auto subnet = parse_subnet(cfg.subnet); subnet.ok()) {
    att.gateway = format_ipv4(subnet->gateway());
    att.prefix_len = subnet->prefix_len;
    if (auto ip = Ipam(ips_dir(cfg)).find(*subnet, id)) att.ip = format_ipv4(*ip);
  }
  return att;
}

}  // namespace prewarm::net
