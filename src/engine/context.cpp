// Context construction from defaults and environment overrides.
#include "engine/context.h"

#include <cstdlib>

#include "base/fs.h"

namespace prewarm::engine {

Result<Context> make_context(const std::filesystem::path& state_dir_override) {
  Context ctx;
  const char* env_state = std::getenv("PREWARM_STATE_DIR");
  const char* env_cache = std::getenv("PREWARM_CACHE_DIR");
  ctx.state_dir = !state_dir_override.empty() ? state_dir_override
                  : (env_state && *env_state) ? std::filesystem::path(env_state)
                                              : std::filesystem::path("/var/lib/prewarm");
  ctx.cache_dir = (env_cache && *env_cache) ? std::filesystem::path(env_cache)
                                            : std::filesystem::path("/var/cache/prewarm");
  ctx.state_dir = std::filesystem::absolute(ctx.state_dir);
  // Checkpoints hold application memory (secrets): the state dir is root-only.
  for (const auto& d : {ctx.state_dir, ctx.images_dir(), ctx.instances_dir(), ctx.stamps_dir()})
    PW_TRY(fs::make_dirs(d, 0700));
  ctx.net = net::config_from_env(ctx.state_dir / "net");
  ctx.runtime = oci::make_runc();
  return ctx;
}

}  // namespace prewarm::engine
