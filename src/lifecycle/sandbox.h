// Where an instance's container lives: its network namespace (and, for a pod, the cgroup
// parent). Either prewarm's own (a netns + veth on prewarm's bridge, with an IP of its own) or
// namespaces a pod sandbox already made, given by path.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "base/result.h"
#include "net/net.h"

namespace prewarm::lifecycle {

struct SandboxInfo {
  std::filesystem::path netns_path;  // joined by the container
  std::string netns;                 // what the record keeps (a name, or the path)
  std::string ip;                    // where probes reach the instance ("" : unknown)
  std::string host_veth;
  std::string cgroup_parent;         // "" : the runtime's default ("/prewarm-<id>")
};

class Sandbox {
 public:
  virtual ~Sandbox() = default;
  // "own" or "given": recorded, so that removal undoes the right thing.
  virtual std::string kind() const = 0;
  // Makes (or joins) the sandbox for an instance. On failure nothing is left behind.
  virtual Result<SandboxInfo> create(const std::string& id) = 0;
  // Undoes create; parts already gone are fine. Works from the id alone, so it can clean up
  // after a crash that left no record.
  virtual Status destroy(const std::string& id) = 0;
  // A fresh sandbox for a cold start after a failed restore (which may have left firewall
  // rules or addresses in the old namespace).
  virtual Result<SandboxInfo> renew(const std::string& id) = 0;
};

// prewarm's own: net::attach / net::detach on the context's bridge.
std::unique_ptr<Sandbox> make_own_sandbox(const net::Config& cfg);

// A pod's: namespaces and cgroup parent made by someone else, never created or removed here.
struct GivenSandbox {
  std::filesystem::path netns_path;
  std::string ip;
  std::string cgroup_parent;
};
std::unique_ptr<Sandbox> make_given_sandbox(GivenSandbox given);

}  // namespace prewarm::lifecycle
