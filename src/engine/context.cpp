// Context construction: the environment is read here, once.
#include "engine/context.h"

#include <unistd.h>

#include <cstdlib>

#include "base/fs.h"
#include "base/ksm.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/thp.h"
#include "oci/criu_direct.h"

namespace prewarm::engine {
namespace {

std::string env_or(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::string(v) : std::move(fallback);
}

// Checkpoints hold application memory (secrets), so the state dir is root-only: a user who
// cannot enter it is told that, not "mkdir …: Permission denied".
Status check_state_dir_access(const std::filesystem::path& dir) {
  std::error_code ec;
  if (::geteuid() == 0 || !std::filesystem::exists(dir, ec)) return {};
  if (::access(dir.c_str(), R_OK | W_OK | X_OK) == 0) return {};
  return Error(ErrorKind::kPermissionDenied,
               "state dir " + dir.string() + " is not accessible to uid " +
                   std::to_string(::geteuid()) +
                   " (it is root-only: checkpoints hold application memory); run prewarm as "
                   "root, or give it a state dir of your own with --state-dir or "
                   "PREWARM_STATE_DIR",
               errno);
}

}  // namespace

Config config_from_env() {
  Config c;
  c.state_dir = env_or("PREWARM_STATE_DIR", c.state_dir.string());
  c.cache_dir = env_or("PREWARM_CACHE_DIR", c.cache_dir.string());
  c.bridge = env_or("PREWARM_BRIDGE", c.bridge);
  c.subnet = env_or("PREWARM_SUBNET", c.subnet);
  c.runc_binary = env_or("PREWARM_RUNC", "");
  c.runtime = env_or("PREWARM_RUNTIME", "");
  c.registry_user = env_or("PREWARM_REGISTRY_USER", "");
  c.registry_password = env_or("PREWARM_REGISTRY_PASSWORD", "");
  if (const std::string hp = env_or("PREWARM_HUGE_PAGES", "auto"); hp == "1" || hp == "0")
    c.huge_pages = hp == "1";
  else
    c.huge_pages = thp::small_folios_only(thp::advised_sizes());
  c.fill_populate = env_or("PREWARM_FILL_POPULATE", "1") != "0";
  if (const std::string level = env_or("PREWARM_CRIU_LOG_LEVEL", "");
      level.size() == 1 && level[0] >= '0' && level[0] <= '4')
    c.criu_log_level = level[0] - '0';
  c.paging = env_or("PREWARM_PAGING", c.paging);
  c.prewarm_binary = env_or("PREWARM_BINARY", "");
  c.memory_merge = env_or("PREWARM_MEMORY_MERGE", "0") == "1";
  if (c.prewarm_binary.empty()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    c.prewarm_binary = !ec && self.filename() == "prewarm" ? self.string() : find_executable("prewarm");
  }
  const std::string lazy_min = env_or("PREWARM_LAZY_MIN_MB", "");
  if (!lazy_min.empty() && lazy_min.find_first_not_of("0123456789") == std::string::npos &&
      lazy_min.size() < 9)
    c.lazy_min_bytes = std::strtoull(lazy_min.c_str(), nullptr, 10) << 20;
  // Whole seconds, at least 1; anything else keeps the default.
  const std::string timeout = env_or("PREWARM_REGISTRY_TIMEOUT", "");
  if (unsigned long s = std::strtoul(timeout.c_str(), nullptr, 10);
      s > 0 && s <= 86400 && timeout.find_first_not_of("0123456789") == std::string::npos)
    c.registry_timeout = std::chrono::seconds(s);
  return c;
}

void apply_restore_config(const Config& config, oci::RestoreOptions& ro) {
  ro.huge_pages = config.huge_pages;
  ro.populate = config.fill_populate;
  ro.criu_log_level = config.criu_log_level;
}

std::shared_ptr<oci::Runtime> Context::runtime_named(const std::string& name) const {
  auto it = runtimes.find(name);
  return it == runtimes.end() ? runtime : it->second;
}

Status Context::use_runtime(const std::string& name) {
  auto it = runtimes.find(name);
  if (it == runtimes.end()) {
    std::string known;
    for (const auto& [n, rt] : runtimes) known += (known.empty() ? "" : ", ") + n;
    return Error(ErrorKind::kInvalidInput,
                 "unknown runtime '" + name + "' (this build has: " + known + ")");
  }
  runtime = it->second;
  config.runtime = name;
  return {};
}

Status enable_memory_merge() {
  PW_TRY(ksm::set_process_mergeable(true));
  auto settings = ksm::read_settings();
  if (!settings.ok()) return std::move(settings).error().with_context("PREWARM_MEMORY_MERGE=1");
  if (settings->run != 1) {
    settings->run = 1;
    PW_TRY(ksm::write_settings(*settings));
    log::info("PREWARM_MEMORY_MERGE=1: started ksmd (/sys/kernel/mm/ksm/run was off); it "
              "scans " + std::to_string(settings->pages_to_scan) + " pages every " +
              std::to_string(settings->sleep_millisecs) + " ms");
  }
  return {};
}

Result<Context> make_context(Config config, const std::filesystem::path& state_dir_override) {
  Context ctx;
  if (!state_dir_override.empty()) config.state_dir = state_dir_override;
  if (config.paging != "auto" && config.paging != "lazy" && config.paging != "eager")
    return Error(ErrorKind::kInvalidInput,
                 "PREWARM_PAGING='" + config.paging + "': expected auto, lazy or eager");
  ctx.state_dir = std::filesystem::absolute(config.state_dir);
  ctx.cache_dir = config.cache_dir;
  PW_TRY(check_state_dir_access(ctx.state_dir));
  for (const auto& d : {ctx.state_dir, ctx.images_dir(), ctx.instances_dir(), ctx.stamps_dir(),
                        ctx.layers_dir()})
    PW_TRY(fs::make_dirs(d, 0700));
  ctx.net.bridge = config.bridge;
  ctx.net.subnet = config.subnet;
  ctx.net.state_dir = net::net_state_dir(config.bridge);
  std::shared_ptr<oci::Runtime> runc = oci::make_runc(config.runc_binary);
  ctx.runtimes["runc"] = runc;
  ctx.runtimes["criu"] = oci::make_criu_direct(runc);
  if (config.memory_merge) PW_TRY(enable_memory_merge());
  std::string chosen = config.runtime.empty() ? std::string(kDefaultRuntime) : config.runtime;
  ctx.config = std::move(config);
  PW_TRY(ctx.use_runtime(chosen));
  return ctx;
}

Result<Context> make_context(const std::filesystem::path& state_dir_override) {
  return make_context(config_from_env(), state_dir_override);
}

}  // namespace prewarm::engine
