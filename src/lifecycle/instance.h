// Instances: independent copies of an app, each started by restoring a checkpoint image (or by
// a cold start), with their own namespaces, root filesystem, IP and hostname. Every start,
// removal and recovery goes through Instances, one state machine (lifecycle/state.h) with one
// record and one lock per instance; the sandbox, rootfs, identity and runtime are seams
// (Seams) that pods, pools and tests replace.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"
#include "images/load.h"
#include "lifecycle/host_check.h"
#include "lifecycle/identity.h"
#include "lifecycle/lock.h"
#include "lifecycle/record.h"
#include "lifecycle/rootfs_provider.h"
#include "lifecycle/sandbox.h"
#include "oci/config.h"
#include "probe/probe.h"
#include "spec/app_spec.h"

namespace prewarm::lifecycle {

using engine::Context;
using images::LoadedImage;

enum class StartMode { kRestore, kCold };

// Where the time of one start went (milliseconds). The buckets add up to total_ms: what no
// step claims (thread start-up, the few microseconds between steps) is in other_ms.
struct StartTimings {
  double verify_ms = 0;    // image verification and host checks
  double record_ms = 0;    // directory, lock, record writes
  double network_ms = 0;   // sandbox: netns + veth + IP
  double prepare_ms = 0;   // rootfs, bundle, log file
  double runtime_ms = 0;   // the runtime's restore / run (CRIU inside), identity excluded
  double identity_ms = 0;  // hostname (inside the restore, before the app resumes, when the
                           // backend allows)
  double probe_ms = 0;     // until the readiness probe passed
  double other_ms = 0;
  double total_ms = 0;
  // The runtime's own split of runtime_ms, when it gives one (e.g. criu_ms).
  std::map<std::string, double> runtime_phases;
  std::map<std::string, double> as_map() const;
  // Sets total_ms, and other_ms to what no bucket claims.
  void close(double total) {
    total_ms = total;
    other_ms = total_ms - (verify_ms + record_ms + network_ms + prepare_ms + runtime_ms +
                           identity_ms + probe_ms);
  }
};

struct Started {
  InstanceRecord record;
  StartTimings timings;
  pid_t pid = 0;
  // A cold start because the host check said this host cannot restore the image (not because
  // a restore was tried and failed).
  bool host_cannot_restore = false;
  // The instance's lock, still held, when StartOptions::keep_lock asked for it (release it
  // before removing the instance from this process).
  std::shared_ptr<InstanceLock> lock;
};

// What the lifecycle is built from. Default: prewarm's own network sandbox, an overlay of the
// image's base and diff, the hostname identity, the context's runtime, CRIU's host checks.
struct Seams {
  std::shared_ptr<Sandbox> sandbox;
  std::function<std::unique_ptr<RootfsProvider>(const LoadedImage&)> rootfs;
  // Undoes any provider's work from the instance directory alone (removal, recovery).
  std::function<Status(const std::filesystem::path&)> release_rootfs;
  std::function<std::unique_ptr<Identity>(const InstanceRecord&)> identity;
  std::function<HostCheck(const LoadedImage&)> host_check;
  // Probes and warm-up reach the instance through this (default: its IP, `exec` in it).
  std::function<probe::Target(const InstanceRecord&)> probe_target;
};
Seams default_seams(const Context& ctx);

struct StartOptions {
  StartMode mode = StartMode::kRestore;
  std::string id;        // "" : IMAGE-<8 hex>
  std::string hostname;  // "" : the id
  // The app's stdout/stderr, restored or cold (e.g. a pipe a bake can checkpoint, or the
  // terminal of `prewarm run --foreground`); -1: INSTANCE_DIR/app.log.
  int stdio_fd = -1;
  // Hand the instance's lock to the caller (Started::lock) instead of releasing it: the
  // instance stays "in use" for recovery while the caller works on it (a bake's warm-up and
  // checkpoint).
  bool keep_lock = false;
  // How the restore gets the app's memory: "lazy", "eager" or "auto"; "" takes the image's
  // spec (restore.paging), then the context's default (engine::Config::paging).
  std::string paging;
  // The bake's trial restore: lazy, nothing copied in the background, and every page fault the
  // app takes recorded in this file (criu::LazyPagesOptions::record_faults).
  std::filesystem::path record_faults;
  // A pool's instance: restored and left frozen, network attached, not personalised (the
  // checkpoint's hostname) and not probed; the record says "restored". No cold fallback: a
  // restore that fails is an error. claim() makes it ready.
  bool park = false;
};

// Whether a restore of `img` is lazy, for the requested paging ("" as in StartOptions).
Result<bool> restore_is_lazy(const Context& ctx, const LoadedImage& img, const std::string& paging);

struct InstanceStatus {
  InstanceRecord record;
  std::string runtime_state;  // the runtime's: running, stopped, paused, or missing
  pid_t pid = 0;
};

struct RecoveryReport {
  std::vector<std::string> adopted;  // live and complete: left running
  std::vector<std::string> removed;  // half-made (or dead mid-start): undone
  std::vector<std::string> busy;     // another prewarm holds them: not touched
  std::vector<std::string> problems;
};

class Instances {
 public:
  explicit Instances(const Context& ctx) : Instances(ctx, default_seams(ctx)) {}
  Instances(const Context& ctx, Seams seams) : ctx_(ctx), seams_(std::move(seams)) {}

  // Starts one instance. kRestore falls back to a cold start (recorded in
  // record.fallback_reason with CRIU's own words) when the host can't restore it or the restore
  // fails. Returns once the readiness probe passes; on failure nothing is left behind.
  Result<Started> start(const LoadedImage& img, const StartOptions& opts = {});
  // Starts n at once; one result per instance, in the order they were started.
  std::vector<Result<Started>> start_many(const LoadedImage& img, int n,
                                          const StartOptions& opts = {});
  // A cold instance straight from a spec (bake): `id` given, hostname the spec's name, output
  // to stdio_fd (a pipe: CRIU checkpoints a pipe to the outside, not a host file); its lock is
  // kept (Started::lock) for the rest of the bake.
  Result<Started> start_cold_from_spec(const spec::AppSpec& spec,
                                       const std::filesystem::path& base, const std::string& id,
                                       int stdio_fd);

  // An instance of `img` parked by start(park) made ready: its hostname (opts.hostname, else its
  // id) applied, thawed, probed. Parked instances of another digest of the image are left
  // alone; one that fails to come up is removed and the next one tried. kNotFound when none is
  // parked (the caller restores one instead, or waits for a refill).
  Result<Started> claim(const LoadedImage& img, const StartOptions& opts = {});
  // The ids of the parked instances of `img` (its digest), oldest first.
  Result<std::vector<std::string>> parked(const LoadedImage& img);

  // Stops and removes an instance: container, rootfs, sandbox, record, directory. Takes the
  // instance's lock (waiting for a start in progress). Half-made instances, with or without a
  // record, are fine. kNotFound when there is no such instance.
  Status remove(const std::string& id);
  // Every instance with its record and what the runtime says of it.
  Result<std::vector<InstanceStatus>> list();
  // One instance, as list() shows it (kNotFound when there is none).
  Result<InstanceStatus> inspect(const std::string& id);
  // After a crash: instances whose lock nobody holds and whose state is not ready (or that have
  // no record), and bake instances (no image) whose bake died, are undone; live ready ones are
  // adopted as they are.
  Result<RecoveryReport> recover();

  const Seams& seams() const { return seams_; }

 private:
  Status undo(const std::string& id, const InstanceRecord* rec);
  // A lazy instance whose page serving failed says so in its status.
  void note_lazy_failure(InstanceStatus& s) const;

  const Context& ctx_;
  Seams seams_;
};

// Shorthands with the default seams.
Result<Started> start_instance(const Context& ctx, const LoadedImage& img, StartMode mode);
Status remove_instance(const Context& ctx, const std::string& id);
Result<std::vector<InstanceStatus>> list_instances(const Context& ctx);
// Manifest digests of the images instances were started from (kept by gc).
Result<std::set<std::string>> digests_in_use(const Context& ctx);

// Probes and warm-up reach an instance at its IP; exec probes run inside it through the runtime.
probe::Target probe_target(const Context& ctx, const InstanceRecord& rec);

// config.json for an instance of `spec` whose root is `root`.
oci::ContainerConfig container_config(const spec::AppSpec& spec, const std::filesystem::path& root,
                                      const std::string& id, const std::string& hostname,
                                      const SandboxInfo& sandbox);

// Writes DIR/config.json for an instance whose bundle is DIR (with DIR/empty, the empty
// directory that hides masked directories, and DIR/shm, its /dev/shm).
Status write_config(const std::filesystem::path& dir, oci::ContainerConfig c,
                    const std::filesystem::path& dev_dir = {});
// Puts what the app had in /dev/shm at the checkpoint into DIR/shm (nothing when it had none).
Status fill_dev_shm(const LoadedImage& img, const std::filesystem::path& dir);

}  // namespace prewarm::lifecycle
