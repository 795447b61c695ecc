// The two sandboxes: prewarm's own network, and a pod's namespaces given by path.
#include "lifecycle/sandbox.h"

namespace prewarm::lifecycle {
namespace {

SandboxInfo from_attachment(const net::Attachment& att) {
  SandboxInfo s;
  s.netns_path = att.netns_path;
  s.netns = att.netns_name;
  s.ip = att.ip;
  s.host_veth = att.host_veth;
  return s;
}

class OwnSandbox final : public Sandbox {
 public:
  explicit OwnSandbox(net::Config cfg) : cfg_(std::move(cfg)) {}
  std::string kind() const override { return "own"; }

  Result<SandboxInfo> create(const std::string& id) override {
    PW_ASSIGN(net::Attachment att, net::attach(cfg_, id));
    return from_attachment(att);
  }

  Status destroy(const std::string& id) override {
    // Names come from the id and the address from the IP allocation files: nothing depends on
    // a record having been written.
    return net::detach(cfg_, net::recover_attachment(cfg_, id));
  }

  Result<SandboxInfo> renew(const std::string& id) override {
    PW_TRY(destroy(id));
    return create(id);
  }

 private:
  net::Config cfg_;
};

class PodSandbox final : public Sandbox {
 public:
  explicit PodSandbox(GivenSandbox g) : given_(std::move(g)) {}
  std::string kind() const override { return "given"; }

  Result<SandboxInfo> create(const std::string&) override {
    SandboxInfo s;
    s.netns_path = given_.netns_path;
    s.netns = given_.netns_path.string();
    s.ip = given_.ip;
    s.cgroup_parent = given_.cgroup_parent;
    return s;
  }
  Status destroy(const std::string&) override { return {}; }
  Result<SandboxInfo> renew(const std::string& id) override { return create(id); }

 private:
  GivenSandbox given_;
};

}  // namespace

std::unique_ptr<Sandbox> make_own_sandbox(const net::Config& cfg) {
  return std::make_unique<OwnSandbox>(cfg);
}

std::unique_ptr<Sandbox> make_given_sandbox(GivenSandbox given) {
  return std::make_unique<PodSandbox>(std::move(given));
}

}  // namespace prewarm::lifecycle
