// What every engine operation works with: where state lives, the network config, the runtime.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "net/net.h"
#include "oci/runtime.h"

namespace prewarm::engine {

struct Context {
  std::filesystem::path state_dir;  // images/, instances/, stamps/
  std::filesystem::path cache_dir;  // rootfs builds, reused across state dirs
  net::Config net;
  std::shared_ptr<oci::Runtime> runtime;
  // Progress lines for long operations (bake phases, rootfs builds); may be empty.
  std::function<void(const std::string&)> progress;

  std::filesystem::path images_dir() const { return state_dir / "images"; }
  std::filesystem::path image_dir(const std::string& name) const { return images_dir() / name; }
  std::filesystem::path instances_dir() const { return state_dir / "instances"; }
  std::filesystem::path instance_dir(const std::string& id) const { return instances_dir() / id; }
  std::filesystem::path stamps_dir() const { return state_dir / "stamps"; }
  void say(const std::string& line) const {
    if (progress) progress(line);
  }
};

// Defaults: state /var/lib/prewarm (PREWARM_STATE_DIR), cache /var/cache/prewarm
// (PREWARM_CACHE_DIR), runc, bridge prewarm0 on 10.89.0.0/16 (PREWARM_BRIDGE, PREWARM_SUBNET).
Result<Context> make_context(const std::filesystem::path& state_dir_override = {});

}  // namespace prewarm::engine
