// Instances: independent copies of an app, each started by restoring a checkpoint image (or by
// a cold start), with its own namespaces, overlay rootfs, IP and hostname.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "image/k8s_archive.h"
#include "image/manifest.h"
#include "oci/config.h"
#include "probe/probe.h"
#include "spec/app_spec.h"

namespace prewarm::engine {

enum class StartMode { kRestore, kCold };

struct InstanceRecord {
  std::string id;
  std::string image;     // image name ("" for a bake instance)
  std::string image_digest;  // the image's manifest digest in the store (kept from gc)
  std::string hostname;
  std::string ip;
  std::string netns;
  std::string host_veth;
  std::string started_by;  // "restore" or "cold"
  std::string fallback_reason;  // why a requested restore became a cold start
  std::string restore_note;     // what could not be checked before the restore was attempted
  std::string created;
  double ready_s = 0;
};

// Where the time of one start went (milliseconds).
struct StartTimings {
  double verify_ms = 0;    // image verification and host checks
  double prepare_ms = 0;   // dirs, rootfs diff, overlay, bundle
  double network_ms = 0;   // netns + veth + IP
  double runtime_ms = 0;   // runc restore / runc run (CRIU inside)
  double identity_ms = 0;  // hostname injection
  double probe_ms = 0;     // until the readiness probe passed
  double total_ms = 0;
  std::map<std::string, double> as_map() const;
};

struct Started {
  InstanceRecord record;
  StartTimings timings;
};

// A loaded, verified image with its spec.
struct LoadedImage {
  std::string name;
  std::filesystem::path dir;
  std::string store_digest;  // manifest digest in the store
  image::Manifest manifest;
  spec::AppSpec spec;
  // For an image imported from a foreign archive: the bind mounts (and others) its container
  // had, re-created per instance.
  std::vector<image::ForeignMount> foreign_mounts;
};

// Image names are [a-z0-9._-] (they become directory names and instance id prefixes).
Status check_image_name(const std::string& name);

// Opens and verifies images/NAME, and makes sure the rootfs it needs is on this host.
Result<LoadedImage> load_image(const Context& ctx, const std::string& name);

// Starts one instance of an image. kRestore falls back to a cold start (recorded in
// record.fallback_reason with CRIU's own words) when the host can't restore it or the restore
// fails. Returns once the readiness probe passes; on failure nothing is left behind.
Result<Started> start_instance(const Context& ctx, const LoadedImage& img, StartMode mode);

// Starts a cold instance straight from a spec (used by bake); `id` and hostname given.
struct ColdInstance {
  InstanceRecord record;
  std::filesystem::path dir;
  pid_t pid = 0;
};
Result<ColdInstance> start_cold_from_spec(const Context& ctx, const spec::AppSpec& spec,
                                          const std::filesystem::path& lower,
                                          const std::string& id, const std::string& hostname,
                                          StartTimings* timings);

// Stops and removes an instance: container, overlay mount, netns, veth, IP, state dir.
// Tolerates half-made instances (used for cleanup after failures and crashes).
Status remove_instance(const Context& ctx, const std::string& id);

struct InstanceStatus {
  InstanceRecord record;
  std::string state;  // runc's status, or "missing"
  pid_t pid = 0;
};
Result<std::vector<InstanceStatus>> list_instances(const Context& ctx);


std::string now_rfc3339();

// Probes and warm-up reach an instance at its IP; exec probes run inside it with `runc exec`.
probe::Target probe_target(const Context& ctx, const std::string& id, const std::string& ip);

// config.json for an instance of `spec` whose bundle (and overlay at DIR/rootfs) is `dir`.
oci::ContainerConfig container_config(const spec::AppSpec& spec, const std::filesystem::path& dir,
                                      const std::string& id, const std::string& hostname,
                                      const std::filesystem::path& netns);

}  // namespace prewarm::engine
