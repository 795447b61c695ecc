// The names of an instance's network pieces.
#include "base/sha256.h"
#include "net/net.h"

namespace prewarm::net {

Status validate_instance_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 128;
  for (char c : id)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '.' || c == '-');
  if (!ok)
    return Error("invalid instance id \"" + id + "\": use 1-128 letters, digits, '_', '.' or '-'",
                 EINVAL);
  return {};
}

std::string netns_name(const std::string& instance_id) { return "pw-" + instance_id; }

std::string host_veth_name(const std::string& instance_id) {
  return "pwv" + sha256_hex(instance_id).substr(0, 12);
}

}  // namespace prewarm::net
