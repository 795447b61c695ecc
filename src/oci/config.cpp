// config.json generation, following the defaults of `runc spec`.
#include "oci/config.h"

#include <sys/resource.h>

#include <algorithm>
#include <set>
#include <nlohmann/json.hpp>

#include "base/fs.h"

namespace prewarm::oci {
namespace {

using nlohmann::json;

// runc fails with "error setting rlimit ... operation not permitted" when asked for more than
// the caller's hard limit (no CAP_SYS_RESOURCE here), so clamp to it.
json capped_rlimit(const char* type, int resource, rlim_t wanted) {
  struct rlimit cur{};
  ::getrlimit(resource, &cur);
  rlim_t hard = std::min(wanted, cur.rlim_max);
  return {{"type", type}, {"hard", hard}, {"soft", hard}};
}

const std::vector<std::string> kCapabilities = {
    "CAP_CHOWN",       "CAP_DAC_OVERRIDE",     "CAP_FSETID", "CAP_FOWNER",
    "CAP_MKNOD",       "CAP_NET_RAW",          "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP",     "CAP_SETPCAP",          "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",  "CAP_KILL",             "CAP_AUDIT_WRITE"};

json mounts(const std::vector<Mount>& extra) {
  json defaults = json::array({
      {{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
      {{"destination", "/dev"}, {"type", "tmpfs"}, {"source", "tmpfs"},
       {"options", {"nosuid", "strictatime", "mode=755", "size=65536k"}}},
      {{"destination", "/dev/pts"}, {"type", "devpts"}, {"source", "devpts"},
       {"options", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}}},
      {{"destination", "/dev/shm"}, {"type", "tmpfs"}, {"source", "shm"},
       {"options", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}},
      {{"destination", "/dev/mqueue"}, {"type", "mqueue"}, {"source", "mqueue"},
       {"options", {"nosuid", "noexec", "nodev"}}},
      {{"destination", "/sys"}, {"type", "sysfs"}, {"source", "sysfs"},
       {"options", {"nosuid", "noexec", "nodev", "ro"}}},
  });
  auto to_json = [](const Mount& m) {
    json j = {{"destination", m.destination}, {"type", m.type}, {"source", m.source}};
    if (!m.options.empty()) j["options"] = m.options;
    return j;
  };
  // A mount at a default's destination takes its place (a /dev replacement must come before
  // /dev/pts); the others follow the defaults in their order.
  json out = json::array();
  std::vector<bool> used(extra.size(), false);
  for (auto& d : defaults) {
    auto it = std::find_if(extra.begin(), extra.end(), [&](const Mount& m) {
      return m.destination == d["destination"].get<std::string>();
    });
    if (it == extra.end()) {
      out.push_back(std::move(d));
    } else {
      out.push_back(to_json(*it));
      used[static_cast<size_t>(it - extra.begin())] = true;
    }
  }
  for (size_t i = 0; i < extra.size(); ++i)
    if (!used[i]) out.push_back(to_json(extra[i]));
  return out;
}

}  // namespace

std::string make_config_json(const ContainerConfig& cfg) {
  json env = json::array();
  bool has_path = false;
  for (const auto& [k, v] : cfg.env) {
    if (k == "PATH") has_path = true;
    env.push_back(k + "=" + v);
  }
  if (!has_path) env.insert(env.begin(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");

  json namespaces = json::array({
      {{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}},
      {{"type", "network"}, {"path", cfg.netns_path.string()}},
  });

  // runc masks directories with a tmpfs each and files with /dev/null.
  std::vector<std::string> masked = {"/proc/acpi",          "/proc/asound",     "/proc/kcore",
                                     "/proc/keys",          "/proc/latency_stats",
                                     "/proc/timer_list",    "/proc/timer_stats",
                                     "/proc/sched_debug",   "/sys/firmware",    "/proc/scsi"};
  std::vector<std::string> readonly = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                       "/proc/sysrq-trigger"};
  std::vector<Mount> extra = cfg.mounts;
  if (!cfg.empty_dir.empty()) {
    const std::set<std::string> dirs = {"/proc/acpi", "/proc/asound", "/proc/scsi"};
    std::erase_if(masked, [&](const std::string& p) {
      if (p == "/sys/firmware") {
        extra.push_back({p, "bind", cfg.empty_dir.string(),
                         {"rbind", "ro", "nosuid", "nodev", "noexec"}});
        return true;
      }
      if (dirs.count(p)) {
        readonly.push_back(p);
        return true;
      }
      return false;
    });
  }

  json c = {
      {"ociVersion", "1.0.2-dev"},
      {"process",
       {{"terminal", false},
        {"user", {{"uid", 0}, {"gid", 0}}},
        {"args", cfg.argv},
        {"env", env},
        {"cwd", cfg.cwd.empty() ? "/" : cfg.cwd},
        {"capabilities",
         {{"bounding", kCapabilities},
          {"effective", kCapabilities},
          {"permitted", kCapabilities}}},
        {"rlimits", json::array({capped_rlimit("RLIMIT_NOFILE", RLIMIT_NOFILE, 1048576)})},
        {"noNewPrivileges", true}}},
      {"root", {{"path", cfg.rootfs.string()}, {"readonly", false}}},
      {"hostname", cfg.hostname},
      {"mounts", mounts(extra)},
      {"linux",
       {{"cgroupsPath", cfg.cgroups_path},
        {"namespaces", namespaces},
        {"maskedPaths", masked},
        {"readonlyPaths", readonly}}},
  };
  return c.dump(2);
}

Status write_bundle(const std::filesystem::path& bundle_dir, const ContainerConfig& cfg) {
  return fs::write_file(bundle_dir / "config.json", make_config_json(cfg), 0600);
}

}  // namespace prewarm::oci
