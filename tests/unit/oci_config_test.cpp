// config.json generation: the mounts an instance gets beyond runc's defaults.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "oci/config.h"

namespace prewarm::oci {
namespace {

using nlohmann::json;

std::vector<std::string> destinations(const json& c) {
  std::vector<std::string> out;
  for (const auto& m : c["mounts"]) out.push_back(m["destination"]);
  return out;
}

TEST(OciConfig, ExtraMountsFollowTheDefaultsAndReplaceOneAtTheSameDestination) {
  ContainerConfig cfg;
  cfg.rootfs = "/i/rootfs";
  cfg.argv = {"/bin/counter"};
  json plain = json::parse(make_config_json(cfg));
  EXPECT_EQ(destinations(plain), (std::vector<std::string>{"/proc", "/dev", "/dev/pts", "/dev/shm",
                                                           "/dev/mqueue", "/sys"}));

  cfg.mounts = {{"/etc/hosts", "bind", "/i/mount-sources/0-hosts", {"bind", "rprivate"}},
                {"/dev/shm", "bind", "/i/mount-sources/1-shm", {"bind", "nosuid"}},
                {"/sys/fs/cgroup", "cgroup", "cgroup", {}}};
  json c = json::parse(make_config_json(cfg));
  EXPECT_EQ(destinations(c),
            (std::vector<std::string>{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys",
                                      "/etc/hosts", "/dev/shm", "/sys/fs/cgroup"}));
  const json& shm = c["mounts"][6];
  EXPECT_EQ(shm["type"], "bind");
  EXPECT_EQ(shm["source"], "/i/mount-sources/1-shm");
  EXPECT_EQ(shm["options"], json({"bind", "nosuid"}));
  EXPECT_FALSE(c["mounts"][7].contains("options"));
}

}  // namespace
}  // namespace prewarm::oci
