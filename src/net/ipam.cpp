// Subnet parsing and file-per-address IPv4 allocation.
#include "net/ipam.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <charconv>

#include "base/fs.h"
#include "base/log.h"
#include "base/unique_fd.h"

namespace prewarm::net {
namespace {

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Status write_owner(int fd, std::string_view owner, const std::filesystem::path& path) {
  while (!owner.empty()) {
    ssize_t n = ::write(fd, owner.data(), owner.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", errno, path.string());
    }
    owner.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

}  // namespace

std::string Subnet::to_string() const {
  return format_ipv4(network) + "/" + std::to_string(prefix_len);
}

Result<uint32_t> parse_ipv4(std::string_view text) {
  std::string s(text);
  in_addr a{};
  if (::inet_pton(AF_INET, s.c_str(), &a) != 1)
    return Error("\"" + s + "\" is not an IPv4 address (expected a.b.c.d)", EINVAL);
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
         std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
}

Result<Subnet> parse_subnet(std::string_view cidr) {
  auto bad = [&](const std::string& why) {
    return Error("invalid subnet \"" + std::string(cidr) + "\": " + why +
                     " (expected IPv4 CIDR such as 10.89.0.0/16)",
                 EINVAL);
  };
  size_t slash = cidr.find('/');
  if (slash == std::string_view::npos) return bad("missing /prefix length");
  auto ip = parse_ipv4(cidr.substr(0, slash));
  if (!ip.ok()) return bad(ip.error().message());
  std::string_view len_text = cidr.substr(slash + 1);
  int len = -1;
  auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
  if (ec != std::errc() || end != len_text.data() + len_text.size() || len_text.empty())
    return bad("prefix length \"" + std::string(len_text) + "\" is not a number");
  if (len < 1 || len > 30)
    return bad("prefix length must be 1..30 to leave room for a gateway and an instance");
  Subnet s{*ip, len};
  if ((*ip & s.host_mask()) != 0)
    return bad("host bits are set; the network address is " + format_ipv4(*ip & ~s.host_mask()) +
               "/" + std::to_string(len));
  return s;
}

Result<uint32_t> Ipam::allocate(const Subnet& subnet, std::string_view owner) {
  uint32_t count = subnet.instance_count();
  uint32_t start = static_cast<uint32_t>(fnv1a(owner) % count);
  bool made_dir = false;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t ip = subnet.first_instance() + (start + i) % count;
    std::filesystem::path path = dir_ / format_ipv4(ip);
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid() && errno == ENOENT && !made_dir) {
      PW_TRY(fs::make_dirs(dir_, 0755));
      made_dir = true;
      fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    }
    if (!fd.valid()) {
      if (errno == EEXIST) continue;
      return Error::sys("claim address file", errno, path.string());
    }
    Status st = write_owner(fd.get(), owner, path);
    if (!st.ok()) {
      ::unlink(path.c_str());
      return std::move(st).error();
    }
    return ip;
  }
  return Error("no free address in subnet " + subnet.to_string() + ": all " +
                   std::to_string(count) + " instance addresses are allocated (files in " +
                   dir_.string() +
                   "); detach unused instances or set PREWARM_SUBNET to a larger subnet",
               EADDRNOTAVAIL);
}

Status Ipam::release(uint32_t ip, std::string_view owner) {
  std::filesystem::path path = dir_ / format_ipv4(ip);
  auto content = fs::read_file(path, 4096);
  if (!content.ok()) {
    if (content.error().errno_value() == ENOENT) return {};
    return std::move(content).error().with_context("release address " + format_ipv4(ip));
  }
  if (*content != owner) {
    log::debug("address " + format_ipv4(ip) + " now belongs to " + *content + ", not " +
               std::string(owner) + "; leaving it");
    return {};
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return Error::sys("release address: unlink", errno, path.string());
  return {};
}

std::optional<uint32_t> Ipam::find(const Subnet& subnet, std::string_view owner) const {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir_, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    auto ip = parse_ipv4(it->path().filename().string());
    if (!ip.ok() || !subnet.contains(*ip)) continue;
    auto content = fs::read_file(it->path(), 4096);
    if (content.ok() && *content == owner) return *ip;
  }
  return std::nullopt;
}

}  // namespace prewarm::net
