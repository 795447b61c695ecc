// config.json generation: the mounts an instance gets beyond runc's defaults.
#include <gtest/gtest.h>

#include <algorithm>

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

TEST(OciConfig, ExtraMountsFollowTheDefaultsAndReplaceOneInItsPlace) {
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
            (std::vector<std::string>{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                                      "/sys", "/etc/hosts", "/sys/fs/cgroup"}));
  const json& shm = c["mounts"][3];
  EXPECT_EQ(shm["type"], "bind");
  EXPECT_EQ(shm["source"], "/i/mount-sources/1-shm");
  EXPECT_EQ(shm["options"], json({"bind", "nosuid"}));
  EXPECT_FALSE(c["mounts"][7].contains("options"));
}

TEST(OciConfig, AnEmptyDirHidesMaskedDirectoriesWithoutATmpfsEach) {
  ContainerConfig cfg;
  cfg.rootfs = "/r";
  cfg.argv = {"/app"};
  json plain = json::parse(make_config_json(cfg));
  auto has = [](const json& arr, const std::string& v) {
    return std::find(arr.begin(), arr.end(), v) != arr.end();
  };
  EXPECT_TRUE(has(plain["linux"]["maskedPaths"], "/sys/firmware"));
  EXPECT_TRUE(has(plain["linux"]["maskedPaths"], "/proc/acpi"));

  cfg.empty_dir = "/i/empty";
  json c = json::parse(make_config_json(cfg));
  const json& masked = c["linux"]["maskedPaths"];
  EXPECT_FALSE(has(masked, "/sys/firmware"));
  EXPECT_FALSE(has(masked, "/proc/acpi"));
  // Files stay masked with /dev/null; /proc directories become read-only.
  EXPECT_TRUE(has(masked, "/proc/kcore"));
  EXPECT_TRUE(has(masked, "/proc/keys"));
  EXPECT_TRUE(has(c["linux"]["readonlyPaths"], "/proc/acpi"));
  bool firmware = false;
  for (const auto& m : c["mounts"])
    if (m["destination"] == "/sys/firmware") {
      firmware = true;
      EXPECT_EQ(m["source"], "/i/empty");
      EXPECT_EQ(m["type"], "bind");
      EXPECT_TRUE(has(m["options"], "ro"));
    }
  EXPECT_TRUE(firmware);
}

}  // namespace
}  // namespace prewarm::oci
