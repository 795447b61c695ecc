// The bake pipeline.
#include "bake/bake.h"

#include <sys/personality.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <sstream>
#include <thread>

#include "base/clock.h"
#include "base/fault.h"
#include "base/fs.h"
#include "base/log.h"
#include "criu/criu.h"
#include "engine/app_log.h"
#include "image/pagemap.h"
#include "images/images.h"
#include "lifecycle/instance.h"
#include "image/image.h"
#include "probe/probe.h"
#include "rootfs/rootfs.h"
#include "spec/app_spec.h"
#include "spec/names.h"

namespace prewarm::bake {

using engine::Context;
namespace {

namespace stdfs = std::filesystem;

// Moves a finished image into place; an existing image of that name is replaced.
Status install_image(const Context& ctx, const stdfs::path& staged, const std::string& name) {
  auto final_dir = ctx.image_dir(name);
  // Locked while it is moved aside and deleted, so gc leaves it to us.
  std::optional<fs::StagingDir> old;
  if (stdfs::exists(final_dir)) {
    PW_ASSIGN(fs::StagingDir aside,
              fs::StagingDir::move_aside(
                  final_dir, ctx.images_dir() / (".old-" + name + "-" + fs::random_hex(4))));
    old.emplace(std::move(aside));
  }
  if (::rename(staged.c_str(), final_dir.c_str()) != 0) {
    int err = errno;
    if (old) {
      (void)old->rename_to(final_dir);
      old->release();
    }
    return Error::sys("rename", err, staged.string());
  }
  return {};
}

// Address-space randomisation off for the processes this thread spawns while it lives (the
// personality is per thread and inherited through posix_spawn, runc and runc init). Two bakes
// of one app then lay out memory alike, so their checkpoints share most pages and the store
// keeps them once. It costs no isolation: every restored instance shares its checkpoint's layout
// anyway, and CRIU does not restore the personality, so programs an instance starts later are
// randomised as usual.
class NoAslrForChildren {
 public:
  NoAslrForChildren() : old_(::personality(0xffffffff)) {
    if (old_ != -1) ::personality(static_cast<unsigned long>(old_) | ADDR_NO_RANDOMIZE);
  }
  ~NoAslrForChildren() {
    if (old_ != -1) ::personality(static_cast<unsigned long>(old_));
  }
  NoAslrForChildren(const NoAslrForChildren&) = delete;
  NoAslrForChildren& operator=(const NoAslrForChildren&) = delete;

 private:
  int old_;
};

}  // namespace

Result<int> open_tcp_connections(pid_t pid) {
  int count = 0;
  for (const char* file : {"tcp", "tcp6"}) {
    auto path = "/proc/" + std::to_string(pid) + "/net/" + file;
    auto text = fs::read_file(path, 16 << 20);
    if (!text.ok()) {
      if (text.error().errno_value() == ENOENT) continue;
      return std::move(text).error();
    }
    std::istringstream in(*text);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, state;
      f >> sl >> local >> remote >> state;
      if (state != "0A" && state != "06") ++count;  // LISTEN, TIME_WAIT
    }
  }
  return count;
}

// The trial: a lazy restore of the staged image that copies nothing in the background, whose
// page faults, from resume through the readiness probe and the warm-up's requests, are the
// working set.
// Written to staged/working-set; a trial that cannot run leaves a note instead (lazy restores
// still work without a working set, only slower).
Status record_working_set(const Context& ctx, const spec::AppSpec& spec, const image::Manifest& m,
                          const stdfs::path& staged, BakeResult& res) {
  images::LoadedImage img;
  img.name = spec.name;
  img.dir = staged;
  img.manifest = m;
  img.spec = spec;
  lifecycle::Instances instances(ctx);
  lifecycle::StartOptions so;
  so.mode = lifecycle::StartMode::kRestore;
  so.id = spec.name + "-" + fs::random_hex(4);
  so.hostname = spec.name;
  // Inside the trial instance's directory, so that its removal (or recovery's, after a crash)
  // takes the record too.
  const stdfs::path faults = ctx.instance_dir(so.id) / "faults";
  so.record_faults = faults;
  auto started = instances.start(img, so);
  if (!started.ok()) {
    res.working_set_note = "trial restore failed: " + started.error().to_string();
    return {};
  }
  struct Remove {
    lifecycle::Instances& instances;
    std::string id;
    ~Remove() {
      if (Status s = instances.remove(id); !s.ok()) log::warn(s.error().to_string());
    }
  } remove{instances, started->record.id};
  if (started->record.started_by != "restore") {
    res.working_set_note = "trial restore failed: " + started->record.fallback_reason;
    return {};
  }
  // The requests of the warm-up, served again; not its exec steps, which set the app up (e.g.
  // load a dataset) rather than use it: run again they would touch what serving does not.
  std::vector<spec::WarmupStep> requests;
  for (const auto& w : spec.warmup)
    if (w.http_get) requests.push_back(w);
  if (!requests.empty()) {
    Status w = probe::run_warmup(requests, lifecycle::probe_target(ctx, started->record));
    if (!w.ok()) {
      res.working_set_note = "trial restore's warm-up failed: " + w.error().to_string();
      return {};
    }
  }
  PW_ASSIGN(std::string record, fs::read_file(faults, 256 << 20));
  PW_ASSIGN(image::WorkingSet ws, image::working_set_from_faults(record));
  res.working_set_pages = image::working_set_pages(ws);
  auto pages = image::checkpoint_pages(staged / image::kCheckpointDir);
  if (pages.ok()) res.lazy_pages = pages->second;
  return fs::write_file(staged / image::kWorkingSetFile, image::format_working_set(ws), 0600);
}

Result<BakeResult> bake(const Context& ctx, const stdfs::path& spec_file, const BakeOptions& opts) {
  Stopwatch total;
  BakeResult res;
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(spec_file));
  if (!opts.name.empty()) spec.name = opts.name;
  PW_TRY(spec::check_name(spec.name, "image name"));
  // What the app sees at bake is what the image carries: no host path is read again later.
  PW_TRY(rootfs::inline_sources(spec.files));
  res.name = spec.name;
  auto phase = [&](const std::string& name, Stopwatch& sw) {
    double s = sw.seconds();
    res.timings_s[name] = s;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f s", s);
    ctx.say("[bake " + spec.name + "] " + name + ": " + buf);
    sw.restart();
  };

  // Nothing is started unless it can also be checkpointed.
  auto criu_version = criu::version();
  if (!criu_version.ok())
    return Error(ErrorKind::kIncompatibleHost, "CRIU is not usable (" + criu::criu_binary() + "): " +
                 criu_version.error().message() +
                 "; run scripts/setup.sh, and `prewarm doctor` to check this host");

  Stopwatch sw;
  PW_ASSIGN(rootfs::Base base, rootfs::prepare_base(spec.rootfs, ctx.cache_dir / "rootfs",
                                                     [&](const std::string& m) { ctx.say(m); },
                                                     opts.registry ? *opts.registry
                                                                   : images::registry_options(ctx)));
  phase("rootfs", sw);

  // The checkpoint's hostname is the app's name; every restore gets its own afterwards.
  // An id of the one shape (name + "-" + 8 hex digits), so the longest name fits too.
  std::string id = spec.name + "-" + fs::random_hex(4);
  // Output through a pipe: CRIU checkpoints a pipe to the outside, not a host file.
  const auto inst_dir = ctx.instance_dir(id);
  lifecycle::Instances instances(ctx);
  std::optional<NoAslrForChildren> no_aslr(std::in_place);
  PW_ASSIGN(auto drain, engine::LogDrain::open(ctx.instances_dir() / (id + ".log")));
  auto started = instances.start_cold_from_spec(spec, base.dir, id, drain->write_end());
  drain->close_write_end();
  no_aslr.reset();
  if (!started.ok()) return std::move(started).error();
  lifecycle::Started inst = std::move(started).value();
  struct InstanceGuard {
    lifecycle::Instances& instances;
    std::string id;
    std::filesystem::path log;
    std::shared_ptr<lifecycle::InstanceLock> lock;  // held for the whole bake
    ~InstanceGuard() {
      lock.reset();  // remove() takes it again
      if (Status s = instances.remove(id); !s.ok()) log::warn(s.error().to_string());
      std::error_code ec;
      std::filesystem::remove(log, ec);
    }
  } inst_guard{instances, id, ctx.instances_dir() / (id + ".log"), std::move(inst.lock)};
  const lifecycle::StartTimings& st = inst.timings;
  res.timings_s["start"] = (st.total_ms - st.probe_ms) / 1000.0;
  res.timings_s["ready"] = st.probe_ms / 1000.0;
  ctx.say("[bake " + spec.name + "] started " + id + " at " + inst.record.ip + ", ready after " +
          std::to_string(st.total_ms / 1000.0).substr(0, 5) + " s");
  sw.restart();

  if (!spec.warmup.empty()) {
    Status w = probe::run_warmup(spec.warmup, lifecycle::probe_target(ctx, inst.record));
    if (!w.ok()) return std::move(w).error().with_context("warm-up of " + spec.name);
    phase("warmup", sw);
    fault_point("bake.after_warmup");
  }

  // Quiesce: connections from probes/warm-up must be gone, or CRIU needs --tcp-established.
  int open = 0;
  Clock::time_point deadline = Clock::now() + spec.quiesce_timeout;
  for (;;) {
    PW_ASSIGN(open, open_tcp_connections(inst.pid));
    if (open == 0 || Clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (open > 0) {
    res.tcp_established = true;
    ctx.say("[bake " + spec.name + "] " + std::to_string(open) +
            " TCP connection(s) still open; checkpointing them with --tcp-established");
  }
  phase("quiesce", sw);

  // Locked while this bake lives: gc removes it only once the bake is gone.
  PW_ASSIGN(fs::StagingDir staging,
            fs::StagingDir::create(ctx.images_dir(), ".bake-" + spec.name + "-"));
  const stdfs::path staged = staging.path();
  PW_TRY(fs::make_dirs(staged / image::kCheckpointDir, 0700));
  PW_TRY(fs::make_dirs(staged / image::kHostDir, 0700));
  PW_TRY(criu::cpuinfo_dump(staged / image::kHostDir));

  oci::CheckpointOptions co;
  co.image_dir = staged / image::kCheckpointDir;
  co.work_dir = inst_dir / "criu-dump";
  co.tcp_established = res.tcp_established;
  PW_TRY(fs::make_dirs(co.work_dir, 0700));
  ctx.say("[bake " + spec.name + "] checkpointing");
  PW_TRY(ctx.runtime->checkpoint(id, co));
  phase("checkpoint", sw);
  fault_point("bake.after_checkpoint");

  // The app's rootfs changes up to the checkpoint (the overlay's upper dir) travel with it.
  PW_TRY(rootfs::capture_diff(inst_dir / "upper", staged / image::kRootfsDiff));
  // /dev/shm was the instance's own directory: what the app left there goes with the image.
  if (std::error_code ec; !stdfs::is_empty(inst_dir / "shm", ec) && !ec)
    PW_TRY(rootfs::capture_diff(inst_dir / "shm", staged / image::kDevShm));
  image::Manifest m;
  m.name = spec.name;
  m.created = now_rfc3339();
  // The files beside the YAML: scanning their contents as YAML would slow every restore.
  spec::AppSpec without_files = spec;
  without_files.files.clear();
  m.spec_yaml = spec::to_yaml(without_files);
  m.spec_files = spec.files;
  m.rootfs_id = base.id;
  m.rootfs_dir = base.dir.string();
  if (base.image)
    m.rootfs_image = image::RootfsImage{base.image->reference, base.image->manifest_digest,
                                        base.image->config_digest};
  std::string criu_v = criu_version->text, runc_v;
  if (auto v = ctx.runtime_named("runc")->version(); v.ok()) runc_v = *v;
  m.host = image::current_host_facts(criu_v, runc_v);
  m.tcp_established = res.tcp_established;
  if (opts.working_set) {
    ctx.say("[bake " + spec.name + "] learning the working set (trial lazy restore)");
    PW_TRY(record_working_set(ctx, spec, m, staged, res));
    if (!res.working_set_note.empty())
      ctx.say("[bake " + spec.name + "] no working set recorded: " + res.working_set_note);
    phase("working-set", sw);
  }
  m.timings_s = res.timings_s;
  PW_TRY(image::seal(staged, m));
  // Baked here: this image may use the host directory its spec names as its base.
  PW_TRY(images::mark_made_here(ctx, staged));
  // Into the store first: if that fails, nothing of this bake is left.
  PW_ASSIGN(store::Store image_store, images::open_store(ctx));
  PW_ASSIGN(store::PutResult put, image_store.put(staged, spec.name));
  res.stored_bytes_new = put.new_compressed_bytes;
  res.stored_bytes_total = put.total_compressed_bytes;
  res.dedup_ratio = put.dedup_ratio();
  PW_TRY(images::record_store_digest(staged, put.manifest_digest));
  PW_TRY(install_image(ctx, staged, spec.name));
  staging.release();
  phase("seal", sw);
  res.dir = ctx.image_dir(spec.name);
  res.image_bytes = fs::tree_bytes(res.dir);
  res.timings_s["total"] = total.seconds();
  return res;
}

}  // namespace prewarm::bake
