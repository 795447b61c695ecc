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

// How restores fill memory: populate on unless "0"; CRIU's log level 0-4, anything else keeps
// the default.
TEST(ConfigTest, RestoreFillAndCriuLogLevel) {
  ::unsetenv("PREWARM_FILL_POPULATE");
  ::unsetenv("PREWARM_CRIU_LOG_LEVEL");
  const Config defaults = config_from_env();
  EXPECT_TRUE(defaults.fill_populate);
  const int default_level = defaults.criu_log_level;
  EXPECT_GE(default_level, 0);
  EXPECT_LE(default_level, 4);

  ::setenv("PREWARM_FILL_POPULATE", "0", 1);
  ::setenv("PREWARM_CRIU_LOG_LEVEL", default_level == 4 ? "2" : "4", 1);
  Config cfg = config_from_env();
  EXPECT_FALSE(cfg.fill_populate);
  EXPECT_EQ(cfg.criu_log_level, default_level == 4 ? 2 : 4);

  for (const char* bad : {"5", "-1", "42", "debug", ""}) {
    ::setenv("PREWARM_CRIU_LOG_LEVEL", bad, 1);
    EXPECT_EQ(config_from_env().criu_log_level, default_level) << "'" << bad << "'";
  }
  ::setenv("PREWARM_FILL_POPULATE", "1", 1);
  EXPECT_TRUE(config_from_env().fill_populate);
  ::unsetenv("PREWARM_FILL_POPULATE");
  ::unsetenv("PREWARM_CRIU_LOG_LEVEL");
}

}  // namespace
}  // namespace prewarm::engine
