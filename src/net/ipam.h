// IPv4 subnets and the address allocator: one file per allocated address, created with O_EXCL
// and holding the owner's instance id, so allocation is atomic across processes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace prewarm::net {

// Addresses are in host byte order.
struct Subnet {
  uint32_t network = 0;
  int prefix_len = 0;

  uint32_t host_mask() const { return 0xffffffffu >> prefix_len; }
  uint32_t broadcast() const { return network | host_mask(); }
  // The bridge takes the first host address; instances get the rest.
  uint32_t gateway() const { return network + 1; }
  uint32_t first_instance() const { return network + 2; }
  uint32_t last_instance() const { return broadcast() - 1; }
  uint32_t instance_count() const { return last_instance() - first_instance() + 1; }
  bool contains(uint32_t ip) const { return (ip & ~host_mask()) == network; }
  // Whether some address is in both (one of two CIDR networks always contains the other when
  // they share an address).
  bool overlaps(const Subnet& other) const {
    return prefix_len <= other.prefix_len ? contains(other.network) : other.contains(network);
  }
  std::string to_string() const;
};

// "a.b.c.d/n" with no host bits set and room for a gateway and one instance (n <= 30).
Result<Subnet> parse_subnet(std::string_view cidr);
Result<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t ip);

// Allocations live in dir as files named by address.
class Ipam {
 public:
  explicit Ipam(std::filesystem::path dir) : dir_(std::move(dir)) {}

  // Claims a free instance address of subnet for owner. Probing starts at a position derived
  // from the owner, so concurrent allocators rarely contend for the same file.
  Result<uint32_t> allocate(const Subnet& subnet, std::string_view owner);
  // Frees ip if owner holds it; a missing file, or one that another owner has claimed since, is
  // left alone and is not an error (release is idempotent).
  Status release(uint32_t ip, std::string_view owner);
  // The address of subnet that owner holds, if any (scans every allocation: for recovery, not
  // the hot path).
  std::optional<uint32_t> find(const Subnet& subnet, std::string_view owner) const;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
};

}  // namespace prewarm::net
