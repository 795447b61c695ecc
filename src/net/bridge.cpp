// The host bridge that instance veths attach to: created on demand with the subnet's first
// address, removed when no port is left.
#include "net/bridge.h"

#include <fcntl.h>
#include <linux/if.h>
#include <sys/file.h>
#include <sys/random.h>

#include "base/fs.h"
#include "base/log.h"
#include "net/link.h"

namespace prewarm::net {
namespace {

link::Mac random_local_mac() {
  link::Mac mac{};
  size_t got = 0;
  while (got < mac.size()) {
    ssize_t n = ::getrandom(mac.data() + got, mac.size() - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  mac[0] = static_cast<uint8_t>((mac[0] & 0xfe) | 0x02);  // unicast, locally administered
  return mac;
}

bool is_exists(const Status& st) { return !st.ok() && st.error().errno_value() == EEXIST; }

}  // namespace

Status validate_ifname(const std::string& name, const char* what) {
  bool ok = !name.empty() && name.size() < IFNAMSIZ && name != "." && name != "..";
  for (char c : name) ok = ok && c > ' ' && c != '/' && c != ':' && c < 127;
  if (!ok)
    return Error(std::string("invalid ") + what + " name \"" + name + "\": use 1-" +
                     std::to_string(IFNAMSIZ - 1) + " characters without '/', ':' or spaces",
                 EINVAL);
  return {};
}

std::string subnet_conflict(const Subnet& subnet, const std::string& bridge,
                            const std::vector<link::Ipv4Address>& addresses) {
  for (const auto& a : addresses) {
    if (a.label == bridge || a.prefix_len < 0 || a.prefix_len > 32) continue;
    // A /32 (or /31) is one address (two) of routing: the check is whether ours holds it.
    bool overlap = subnet.contains(a.addr);
    if (!overlap && a.prefix_len < 31) {
      Subnet theirs;
      theirs.prefix_len = a.prefix_len;
      theirs.network = a.prefix_len == 0 ? 0 : a.addr & ~(0xffffffffu >> a.prefix_len);
      overlap = subnet.overlaps(theirs);
    }
    if (!overlap) continue;
    std::string name = a.label.empty() ? "interface #" + std::to_string(a.index) : a.label;
    return "subnet " + subnet.to_string() + " overlaps " + format_ipv4(a.addr) + "/" +
           std::to_string(a.prefix_len) + " on " + name +
           ", so the host would send some of their traffic to the wrong link; set "
           "PREWARM_SUBNET to a range that no interface's network overlaps (`ip -4 addr` "
           "lists them)";
  }
  return {};
}

Result<UniqueFd> lock_bridge(const Config& cfg, bool exclusive) {
  std::filesystem::path path = cfg.state_dir / ("bridge-" + cfg.bridge + ".lock");
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid() && errno == ENOENT) {
    PW_TRY(fs::make_dirs(cfg.state_dir, 0755));
    fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  }
  if (!fd.valid()) return Error::sys("open lock file", errno, path.string());
  while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) != 0) {
    if (errno != EINTR) return Error::sys("lock", errno, path.string());
  }
  return fd;
}

Result<int> bridge_index(nl::Socket& sock, const Config& cfg, const Subnet& subnet, bool full) {
  const std::string& name = cfg.bridge;
  auto fail = [&](const std::string& what) { return "bridge " + name + ": " + what; };
  auto found = link::get(sock, name);
  if (!found.ok()) return std::move(found).error().with_context(fail("look up"));
  if (*found && found->value().kind != "bridge")
    return Error(fail("a " + (found->value().kind.empty() ? "non-virtual" : found->value().kind) +
                      " device with this name exists; set PREWARM_BRIDGE to another name"),
                 EEXIST);
  if (*found && !full && (found->value().flags & IFF_UP)) return found->value().index;

  if (!*found) {
    // Checked only when the bridge is made: from then on its address holds the range, and a
    // later overlapping network is that one's creator's to refuse.
    auto addresses = link::ipv4_addresses(sock);
    if (!addresses.ok()) return std::move(addresses).error().with_context(fail("list addresses"));
    if (auto why = subnet_conflict(subnet, name, *addresses); !why.empty())
      return Error(fail(why), EADDRINUSE);
    Status st = link::create_bridge(sock, name, random_local_mac());
    if (!st.ok() && !is_exists(st)) return std::move(st).error().with_context(fail("create"));
    auto again = link::get(sock, name);
    if (!again.ok()) return std::move(again).error().with_context(fail("look up"));
    if (!*again) return Error(fail("vanished right after it was created"), ENODEV);
    found = std::move(again);
    log::debug("created bridge " + name);
  }
  int index = found->value().index;
  Status st = link::add_ipv4(sock, index, subnet.gateway(), subnet.prefix_len);
  if (!st.ok() && !is_exists(st))
    return std::move(st).error().with_context(fail("add address " + format_ipv4(subnet.gateway()) +
                                                   "/" + std::to_string(subnet.prefix_len)));
  st = link::set_up(sock, index);
  if (!st.ok()) return std::move(st).error().with_context(fail("set up"));
  return index;
}

Status ensure_bridge(const Config& cfg) {
  PW_TRY(validate_ifname(cfg.bridge, "bridge"));
  PW_ASSIGN(Subnet subnet, parse_subnet(cfg.subnet));
  PW_ASSIGN(UniqueFd lock, lock_bridge(cfg, false));
  PW_ASSIGN(nl::Socket sock, nl::Socket::open());
  PW_ASSIGN(int index, bridge_index(sock, cfg, subnet, true));
  (void)index;
  return {};
}

Status remove_bridge_if_unused(const Config& cfg) {
  PW_TRY(validate_ifname(cfg.bridge, "bridge"));
  PW_ASSIGN(UniqueFd lock, lock_bridge(cfg, true));
  PW_ASSIGN(nl::Socket sock, nl::Socket::open());
  auto fail = [&](const std::string& what) { return "remove bridge " + cfg.bridge + ": " + what; };
  // The bridge's allocation directory goes with it when no lease is left (removing a
  // non-empty directory fails, which is the check).
  auto forget_leases = [&] {
    std::error_code ec;
    std::filesystem::remove(cfg.state_dir / "ips", ec);
    if (std::filesystem::exists(cfg.state_dir / "ips", ec)) return;
    std::filesystem::remove(cfg.state_dir / ("bridge-" + cfg.bridge + ".lock"), ec);
    std::filesystem::remove(cfg.state_dir, ec);
  };
  auto found = link::get(sock, cfg.bridge);
  if (!found.ok()) return std::move(found).error().with_context(fail("look up"));
  if (!*found) {
    forget_leases();
    return {};
  }
  if (found->value().kind != "bridge")
    return Error(fail("it is not a bridge; leaving it alone"), EINVAL);
  auto ports = link::ports_of(sock, found->value().index);
  if (!ports.ok()) return std::move(ports).error().with_context(fail("list ports"));
  if (!ports->empty()) {
    log::debug("bridge " + cfg.bridge + " still has " + std::to_string(ports->size()) +
               " ports (e.g. " + ports->front().name + "); keeping it");
    return {};
  }
  Status st = link::remove(sock, cfg.bridge);
  if (!st.ok() && st.error().errno_value() != ENODEV)
    return std::move(st).error().with_context(fail("delete"));
  forget_leases();
  return {};
}

}  // namespace prewarm::net
