// The configuration prewarm takes from its environment, read once into the context.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/context.h"

namespace prewarm::engine {
namespace {

TEST(ConfigTest, EnvironmentOverrides) {
  ::setenv("PREWARM_BRIDGE", "pwtestbr", 1);
  ::setenv("PREWARM_SUBNET", "10.89.100.0/24", 1);
  ::setenv("PREWARM_STATE_DIR", "/tmp/somewhere", 1);
  ::setenv("PREWARM_RUNTIME", "runc", 1);
  Config cfg = config_from_env();
  EXPECT_EQ(cfg.bridge, "pwtestbr");
  EXPECT_EQ(cfg.subnet, "10.89.100.0/24");
  EXPECT_EQ(cfg.state_dir, "/tmp/somewhere");
  EXPECT_EQ(cfg.runtime, "runc");
  for (const char* v : {"PREWARM_BRIDGE", "PREWARM_SUBNET", "PREWARM_STATE_DIR", "PREWARM_RUNTIME"})
    ::unsetenv(v);
  Config defaults = config_from_env();
  EXPECT_EQ(defaults.bridge, net::Config{}.bridge);
  EXPECT_EQ(defaults.subnet, net::Config{}.subnet);
  EXPECT_EQ(defaults.state_dir, "/var/lib/prewarm");
  EXPECT_EQ(defaults.runtime, "");
}

}  // namespace
}  // namespace prewarm::engine
