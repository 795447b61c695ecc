// Starting instances: restore (with the cold fallback) or cold, one state machine.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <mutex>
#include <thread>

#include "base/clock.h"
#include "base/fault.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "criu/lazy_pages.h"
#include "engine/app_log.h"
#include "image/image.h"
#include "image/pagemap.h"
#include "images/images.h"
#include "rootfs/rootfs.h"
#include "lifecycle/instance.h"
#include "lifecycle/lock.h"
#include "spec/names.h"

namespace prewarm::lifecycle {
namespace {

namespace stdfs = std::filesystem;

std::string new_id(const std::string& name) { return name + "-" + fs::random_hex(4); }

Status check_id(const std::string& id) {
  // An id is a hostname: a DNS label (a name plus the suffix fits by construction).
  if (id.size() > spec::kMaxNameLength + spec::kInstanceSuffixLength)
    return Error(ErrorKind::kInvalidInput, "instance id '" + id + "' is longer than 63 characters");
  std::string_view base = id;
  return spec::check_name(base.substr(0, std::min(base.size(), spec::kMaxNameLength)),
                          "instance id");
}

// The app's stdout and stderr: the log file itself. The runtime hands it to the app in place
// of the pipe it had at checkpoint (CRIU's inherit_fd), so no process drains a pipe.
Result<UniqueFd> open_log(const stdfs::path& dir) {
  return engine::open_app_log_file(dir / "app.log");
}

// What a re-created file mount holds, as CRI-O writes it for a restored container: /etc/hosts
// names this instance, /etc/resolv.conf is the host's, the rest start empty.
std::string mount_file_content(image::ForeignMount::Content content, const std::string& hostname,
                               const std::string& ip) {
  using C = image::ForeignMount::Content;
  switch (content) {
    case C::kHosts:
      return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
             (ip.empty() ? std::string() : ip + "\t" + hostname + "\n");
    case C::kHostname: return hostname + "\n";
    case C::kResolvConf: {
      auto r = fs::read_file("/etc/resolv.conf", 64 << 10);
      return r.ok() ? *r : std::string();
    }
    default: return {};
  }
}

// Per-instance sources for a foreign image's bind mounts (never the archive's host paths).
// Made again for a cold start after a failed restore, whose IP may differ.
Result<std::vector<oci::Mount>> foreign_mounts(const LoadedImage& img, const stdfs::path& dir,
                                               const std::string& hostname,
                                               const std::string& ip) {
  using C = image::ForeignMount::Content;
  std::vector<oci::Mount> out;
  if (img.foreign_mounts.empty()) return out;
  const auto sources = dir / "mount-sources";
  PW_TRY(fs::remove_all(sources));
  PW_TRY(fs::make_dirs(sources, 0700));
  int n = 0;
  for (const auto& fm : img.foreign_mounts) {
    oci::Mount m{fm.destination, fm.type, fm.source, fm.options};
    if (fm.type == "bind") {
      auto src = sources / (std::to_string(n++) + "-" +
                            stdfs::path(fm.destination).filename().string());
      if (fm.content == C::kEmptyDir || fm.content == C::kNone) {
        PW_TRY(fs::make_dirs(src, 0755));
        // Like the tmpfs a runtime mounts there: every user may create shared memory.
        if (fm.destination == "/dev/shm" && ::chmod(src.c_str(), 01777) != 0)
          return Error::sys("chmod", errno, src.string());
      } else {
        PW_TRY(fs::write_file(src, mount_file_content(fm.content, hostname, ip), 0644));
      }
      m.source = src.string();
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Writes config.json for an instance of an image: the spec's container plus a foreign image's
// mounts.
Status write_instance_bundle(const LoadedImage& img, const stdfs::path& dir,
                             const stdfs::path& root, const RootfsProvider& rootfs,
                             const InstanceRecord& rec, const SandboxInfo& sb) {
  oci::ContainerConfig c = container_config(img.spec, root, rec.id, rec.hostname, sb);
  PW_ASSIGN(c.mounts, foreign_mounts(img, dir, rec.hostname, sb.ip));
  return write_config(dir, std::move(c), rootfs.dev_dir(root));
}

// Waits for readiness: the spec's probe, or just "the container is running" without one.
Status wait_ready(oci::Runtime& rt, const spec::AppSpec& spec, const InstanceRecord& rec,
                  const probe::Target& target) {
  if (spec.readiness_probe) {
    Status st = probe::wait_ready(*spec.readiness_probe, target);
    if (!st.ok())
      return std::move(st).error().with_context("instance " + rec.id + " never became ready");
    return {};
  }
  PW_ASSIGN(oci::ContainerState s, rt.state(rec.id));
  if (s.status != "running")
    return Error(ErrorKind::kRuntime, "instance " + rec.id + " is " + s.status + ", not running");
  return {};
}

// Accumulates wall time into the bucket of the step that just ended.
class Laps {
 public:
  void to(double& bucket) {
    bucket += sw_.millis();
    sw_.restart();
  }

 private:
  Stopwatch sw_;
};

void adopt(InstanceRecord& rec, const SandboxInfo& sb) {
  rec.ip = sb.ip;
  rec.netns = sb.netns;
  rec.host_veth = sb.host_veth;
}

// The instance's /dev as a directory of its own (bound in), where its root does not bring one
// (see rootfs::dev_layer). Not a tmpfs, because CRIU dumps a tmpfs as a tar archive and runs
// tar to restore it (~6 ms of CPU a restore). Needs a filesystem that allows device nodes;
// false where it does not.
Result<bool> make_dev_dir(const stdfs::path& dev) {
  struct statvfs vfs {};
  if (::statvfs(dev.parent_path().c_str(), &vfs) != 0)
    return Error::sys("statvfs", errno, dev.parent_path().string());
  if (vfs.f_flag & ST_NODEV) return false;
  if (::mkdir(dev.c_str(), 0755) != 0) {
    if (errno == EEXIST) return true;  // made for an earlier attempt of this instance
    return Error::sys("mkdir", errno, dev.string());
  }
  PW_TRY(rootfs::make_dev_tree(dev));
  return true;
}

}  // namespace

std::map<std::string, double> StartTimings::as_map() const {
  std::map<std::string, double> m = {
      {"verify_ms", verify_ms},     {"record_ms", record_ms},     {"network_ms", network_ms},
      {"prepare_ms", prepare_ms},   {"runtime_ms", runtime_ms},   {"identity_ms", identity_ms},
      {"probe_ms", probe_ms},       {"other_ms", other_ms},       {"total_ms", total_ms}};
  for (const auto& [k, v] : runtime_phases) m["runtime." + k] = v;
  return m;
}

probe::Target probe_target(const Context& ctx, const InstanceRecord& rec) {
  auto rt = ctx.runtime_named(rec.runtime);
  std::string id = rec.id;
  return {rec.ip, [rt, id](const std::vector<std::string>& cmd, spec::Millis timeout) {
            return rt->exec(id, cmd, timeout);
          }};
}

oci::ContainerConfig container_config(const spec::AppSpec& spec, const stdfs::path& root,
                                      const std::string& id, const std::string& hostname,
                                      const SandboxInfo& sandbox) {
  oci::ContainerConfig c;
  c.rootfs = root;
  c.argv = spec.argv();
  c.env = spec.env;
  c.cwd = spec.working_dir;
  c.hostname = hostname;
  c.netns_path = sandbox.netns_path;
  // Flat, so that the runtime's delete removes the whole cgroup.
  c.cgroups_path = sandbox.cgroup_parent.empty() ? "/prewarm-" + id
                                                 : sandbox.cgroup_parent + "/prewarm-" + id;
  return c;
}

Status write_config(const stdfs::path& dir, oci::ContainerConfig c, const stdfs::path& dev_dir) {
  // Hides masked directories without a tmpfs each (see oci::ContainerConfig::empty_dir).
  c.empty_dir = dir / "empty";
  PW_TRY(fs::make_dirs(c.empty_dir, 0555));
  // /dev/shm: the instance's own directory, not a tmpfs (CRIU dumps a tmpfs as a tar archive and
  // runs tar to restore it, ~6 ms of CPU a restore). What the app keeps there at the checkpoint
  // travels in the image (kDevShm). A foreign image brings its own /dev/shm mount.
  bool has_shm = std::any_of(c.mounts.begin(), c.mounts.end(),
                             [](const oci::Mount& m) { return m.destination == "/dev/shm"; });
  if (!has_shm) {
    auto shm = dir / "shm";
    PW_TRY(fs::make_dirs(shm, 01777));
    c.mounts.push_back({"/dev/shm", "bind", shm.string(), {"rbind", "nosuid", "nodev", "noexec"}});
  }
  bool has_dev = std::any_of(c.mounts.begin(), c.mounts.end(),
                             [](const oci::Mount& m) { return m.destination == "/dev"; });
  if (!has_dev) {
    stdfs::path source = dev_dir;
    if (source.empty()) {
      PW_ASSIGN(bool made, make_dev_dir(dir / "dev"));
      if (made) source = dir / "dev";
    }
    if (!source.empty()) c.mounts.push_back({"/dev", "bind", source.string(), {"bind", "nosuid"}});
  }
  return oci::write_bundle(dir, c);
}

Status fill_dev_shm(const LoadedImage& img, const stdfs::path& dir) {
  auto saved = img.dir / image::kDevShm;
  if (!stdfs::exists(saved)) return {};
  Status st = rootfs::extract_diff(saved, dir / "shm");
  if (!st.ok()) return std::move(st).error().with_context("restoring /dev/shm of " + img.name);
  return {};
}

Seams default_seams(const Context& ctx) {
  Seams s;
  s.sandbox = make_own_sandbox(ctx.net);
  s.rootfs = [&ctx](const LoadedImage& img) {
    OverlayRootfs o;
    o.base = img.manifest.rootfs_dir;
    o.diff_tar = img.dir / image::kRootfsDiff;
    for (const auto& f : img.manifest.files)
      if (f.path == image::kRootfsDiff) o.diff_sha256 = f.sha256;
    o.layers_dir = ctx.layers_dir();
    o.files = img.spec.files;
    return make_overlay_rootfs(std::move(o));
  };
  s.release_rootfs = release_overlay;
  s.identity = [](const InstanceRecord& rec) { return make_hostname_identity(rec.hostname); };
  s.host_check = [&ctx](const LoadedImage& img) { return check_host(ctx, img); };
  s.probe_target = [&ctx](const InstanceRecord& rec) { return probe_target(ctx, rec); };
  return s;
}

Result<bool> restore_is_lazy(const Context& ctx, const LoadedImage& img, const std::string& paging) {
  // A lazy copy has only the eager pages: it restores lazily or not at all.
  if (!img.pages_from_store.empty()) return true;
  return images::restore_is_lazy(ctx, img.manifest, img.spec, paging);
}

// A lazy restore's view of the checkpoint (the working set made eager) and its page server,
// started before the restore so that CRIU finds it listening.
Result<criu::LazyPages> prepare_lazy(const Context& ctx, const LoadedImage& img, const stdfs::path& dir,
                                     const stdfs::path& criu_work, const StartOptions& opts,
                                     oci::RestoreOptions& ro, StartTimings& t) {
  Stopwatch sw;
  image::WorkingSet ws;
  // The trial that records the working set starts from none; a missing or unreadable file
  // costs speed, never correctness.
  if (opts.record_faults.empty()) {
    auto text = fs::read_file(img.dir / image::kWorkingSetFile, 64 << 20);
    if (text.ok()) {
      auto parsed = image::parse_working_set(*text);
      if (parsed.ok()) ws = std::move(parsed).value();
      else log::warn("image " + img.name + ": " + parsed.error().message() + "; restoring without a working set");
    }
  }
  PW_ASSIGN(image::LazyView view, image::make_lazy_view(ro.image_dir, criu_work / "lazy-images", ws));
  if (view.working_set_stale)
    log::debug("image " + img.name + ": its working set names pages the checkpoint has not as lazy");
  t.runtime_phases["lazy_view_ms"] = sw.millis();
  ro.image_dir = view.dir;
  ro.lazy_pages = true;
  criu::LazyPagesOptions lo;
  lo.images_dir = view.dir;
  lo.work_dir = criu_work;
  if (opts.stdio_fd < 0) lo.app_log = dir / "app.log";
  lo.record_faults = opts.record_faults;
  if (!img.pages_from_store.empty()) {
    // The pages not in the lazy copy come straight from the store's chunks.
    if (ctx.config.prewarm_binary.empty())
      return Error(ErrorKind::kIncompatibleHost,
                   "lazy restore from the store: no prewarm executable to serve pages (set PREWARM_BINARY)");
    PW_ASSIGN(store::Store st, images::open_store(ctx));
    lo.page_server_argv = {ctx.config.prewarm_binary, "page-server", st.root().string(),
                           img.pages_from_store};
    if (!img.pull_lock.empty()) lo.page_server_argv.push_back(img.pull_lock.string());
  }
  Stopwatch sd;
  auto pager = criu::LazyPages::start(lo);
  t.runtime_phases["lazy_daemon_start_ms"] = sd.millis();
  t.runtime_phases["lazy_pages"] = static_cast<double>(view.lazy_pages - view.working_set);
  t.runtime_phases["working_set_pages"] = static_cast<double>(view.working_set);
  return pager;
}

Result<Started> Instances::start(const LoadedImage& img, const StartOptions& opts) {
  Stopwatch total;
  Laps lap;
  StartTimings t;
  const std::string id = opts.id.empty() ? new_id(img.name) : opts.id;
  PW_TRY(check_id(id));
  if (opts.park && opts.mode != StartMode::kRestore)
    return Error(ErrorKind::kInvalidInput, "only a restore can be parked (a pool's instances are "
                                           "restored, never cold-started)");
  const auto dir = ctx_.instance_dir(id);
  oci::Runtime& rt = *ctx_.runtime;

  PW_ASSIGN(InstanceLock lock, InstanceLock::create(dir));
  fault_point("run.after_lock");
  InstanceRecord rec;
  rec.id = id;
  rec.image = img.name;
  rec.image_digest = img.store_digest;
  rec.hostname = opts.hostname.empty() ? id : opts.hostname;
  rec.runtime = rt.name();
  rec.sandbox = seams_.sandbox->kind();
  rec.created = now_rfc3339();
  // From here on a failure undoes everything, the directory included, under the lock.
  bool done = false;
  struct Undo {
    Instances& self;
    const std::string& id;
    InstanceRecord& rec;
    bool& done;
    ~Undo() {
      if (done) return;
      rec.state = InstanceState::kFailed;
      (void)save_record(self.ctx_.instance_dir(id), rec);
      if (Status st = self.undo(id, &rec); !st.ok())
        log::warn("cleanup of " + id + ": " + st.error().to_string());
    }
  } undo_guard{*this, id, rec, done};
  // The first record is written once the sandbox exists: before that, the directory alone is
  // enough for recovery (everything is named after the id).
  lap.to(t.record_ms);

  // Can this host restore it at all? (cheap checks first; CPU features via CRIU)
  std::string fallback;
  if (opts.mode == StartMode::kRestore) {
    HostCheck hc = seams_.host_check(img);
    fallback = std::move(hc.blocker);
    rec.restore_note = std::move(hc.unchecked);
  }
  const bool host_cannot_restore = !fallback.empty();
  if (opts.park && !fallback.empty())
    return Error(ErrorKind::kIncompatibleHost, "cannot park an instance of " + img.name +
                                                   ": this host cannot restore it: " + fallback);
  lap.to(t.verify_ms);

  PW_ASSIGN(SandboxInfo sb, seams_.sandbox->create(id));
  fault_point("run.after_sandbox");
  adopt(rec, sb);
  lap.to(t.network_ms);
  // What undo needs is in the record before anything else is made.
  PW_TRY(save_record(dir, rec));
  fault_point("run.after_record");
  lap.to(t.record_ms);

  auto rootfs = seams_.rootfs(img);
  auto identity = seams_.identity(rec);
  pid_t pid = 0;
  bool restored = false;
  std::optional<criu::LazyPages> pager;
  if (opts.mode == StartMode::kRestore && fallback.empty()) {
    // The files the app maps are checked by ELF build-id (CRIU reads each one's notes) on the
    // first restore of this image over this build of its root; once one passed, by size.
    std::filesystem::path files_checked;
    if (const std::string files = rootfs->files_identity(); !files.empty())
      files_checked = ctx_.stamps_dir() /
                      ("files-ok-" + sha256_hex(images::identity(img) + "|" + files));
    const bool files_by_size =
        !files_checked.empty() && ::access(files_checked.c_str(), F_OK) == 0;
    auto restore = [&]() -> Result<oci::Restored> {
      PW_ASSIGN(stdfs::path root, rootfs->prepare(dir, RootfsPurpose::kRestore));
      PW_TRY(write_instance_bundle(img, dir, root, *rootfs, rec, sb));
      PW_TRY(fill_dev_shm(img, dir));
      auto criu_work = dir / "criu";
      PW_TRY(fs::make_dirs(criu_work, 0700));
      UniqueFd log;
      if (opts.stdio_fd < 0) {
        PW_ASSIGN(log, open_log(dir));
      }
      fault_point("run.after_rootfs");
      lap.to(t.prepare_ms);
      rec.state = InstanceState::kRestoring;
      PW_TRY(save_record(dir, rec));
      lap.to(t.record_ms);
      oci::RestoreOptions ro;
      ro.image_dir = img.dir / image::kCheckpointDir;
      ro.work_dir = criu_work;
      ro.tcp_established = img.manifest.tcp_established;
      engine::apply_restore_config(ctx_.config, ro);
      ro.validate_files_by_size = files_by_size;
      ro.stdio_fd = opts.stdio_fd >= 0 ? opts.stdio_fd : log.get();
      ro.leave_frozen = opts.park;
      PW_ASSIGN(bool lazy, restore_is_lazy(ctx_, img, opts.record_faults.empty() ? opts.paging : "lazy"));
      if (lazy) {
        PW_ASSIGN(criu::LazyPages lp, prepare_lazy(ctx_, img, dir, criu_work, opts, ro, t));
        pager.emplace(std::move(lp));
        lap.to(t.prepare_ms);
      }
      rec.paging = lazy ? "lazy" : "eager";
      // The restored tasks are stopped here (direct CRIU): the app never sees the baked name.
      ro.before_resume = [&](pid_t p) -> Status {
        fault_point("run.before_resume");
        // The supervisor holds the page server's userfaultfds from here on: if the server
        // dies, the app waits instead of faulting in zeros, and is stopped.
        if (pager) {
          Stopwatch sa;
          PW_TRY(pager->arm(p));
          t.runtime_phases["lazy_arm_ms"] = sa.millis();
        }
        if (opts.park) return Status();  // the claim personalises it
        Stopwatch sw;
        Status st = identity->apply(p);
        t.identity_ms += sw.millis();
        return st;
      };
      auto r = rt.restore(id, dir, ro);
      lap.to(t.runtime_ms);
      t.runtime_ms -= t.identity_ms;
      return r;
    };
    auto r = restore();
    if (r.ok()) {
      if (!files_checked.empty() && !files_by_size)
        (void)fs::write_file_atomic(files_checked, "", 0600);
      // The instance owns its page server now; removal stops it.
      if (pager) pager->detach();
      pager.reset();
      fault_point("run.after_restore");
      pid = r->pid;
      restored = true;
      for (const auto& [k, v] : r->phases) t.runtime_phases[k] = v;
    } else if (opts.park) {
      return std::move(r).error().with_context("parking an instance of " + img.name);
    } else {
      fallback = std::move(r).error().to_string();
      log::warn("restore of " + id + " failed, cold-starting instead: " + fallback);
      pager.reset();
      rec.paging.clear();
      // Back to "directory and record only": the runtime, the rootfs and a fresh sandbox (a
      // failed CRIU restore can leave its network lock, firewall rules dropping all traffic).
      PW_TRY(rt.remove(id));
      PW_TRY(rootfs->release(dir));
      PW_ASSIGN(sb, seams_.sandbox->renew(id));
      adopt(rec, sb);
      t.identity_ms = 0;
      lap.to(t.network_ms);
    }
  }
  if (restored && opts.park) {
    // Frozen, attached, not personalised: claim() takes it from here.
    rec.started_by = "restore";
    rec.state = InstanceState::kRestored;
    PW_TRY(save_record(dir, rec));
    done = true;
    lap.to(t.record_ms);
    t.close(total.millis());
    return Started{rec, t, pid};
  }
  if (restored) {
    // Identity is applied; the probe follows at once. A crash now finds "restoring" on disk,
    // which recovery undoes just the same, so this state is not written (one write less).
    rec.started_by = "restore";
    rec.state = InstanceState::kPersonalising;
  } else {
    rec.started_by = "cold";
    rec.fallback_reason = fallback;
    rec.state = InstanceState::kStarting;
    PW_TRY(save_record(dir, rec));
  }
  lap.to(t.record_ms);
  // Cold starts go through the same backend (the direct-CRIU one hands them to runc).
  if (!restored) {
    PW_ASSIGN(stdfs::path root, rootfs->prepare(dir, RootfsPurpose::kCold));
    PW_TRY(write_instance_bundle(img, dir, root, *rootfs, rec, sb));
    UniqueFd log;
    if (opts.stdio_fd < 0) {
      PW_ASSIGN(log, open_log(dir));
    }
    lap.to(t.prepare_ms);
    PW_TRY(rt.run(id, dir, opts.stdio_fd >= 0 ? opts.stdio_fd : log.get()));
    fault_point("run.after_cold_start");
    PW_ASSIGN(oci::ContainerState s, rt.state(id));
    pid = s.pid;
    lap.to(t.runtime_ms);
  }

  PW_TRY(wait_ready(rt, img.spec, rec, seams_.probe_target(rec)));
  lap.to(t.probe_ms);
  rec.state = InstanceState::kReady;
  t.total_ms = total.millis();
  rec.ready_s = t.total_ms / 1000.0;
  PW_TRY(save_record(dir, rec));
  done = true;
  lap.to(t.record_ms);
  t.close(total.millis());
  Started out{rec, t, pid, host_cannot_restore, nullptr};
  if (opts.keep_lock) out.lock = std::make_shared<InstanceLock>(std::move(lock));
  return out;
}

std::vector<Result<Started>> Instances::start_many(const LoadedImage& img, int n,
                                                   const StartOptions& opts) {
  std::vector<Result<Started>> out;
  if (n <= 1) {
    out.push_back(start(img, opts));
    return out;
  }
  StartOptions each = opts;
  each.id.clear();  // one id cannot name n instances
  std::vector<std::future<Result<Started>>> futs;
  for (int i = 0; i < n; ++i)
    futs.push_back(std::async(std::launch::async, [this, &img, each] { return start(img, each); }));
  for (auto& f : futs) out.push_back(f.get());
  return out;
}

Result<std::vector<std::string>> Instances::parked(const LoadedImage& img) {
  std::vector<std::pair<std::string, std::string>> found;  // created, id
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir(), ec)) {
    const std::string id = e.path().filename().string();
    if (id.empty() || id[0] == '.' || !e.is_directory(ec)) continue;
    auto rec = load_record(e.path());
    if (!rec.ok() || rec->state != InstanceState::kRestored || rec->image != img.name) continue;
    // Parked from another build of the image (re-baked or pulled again since): not this one.
    if (!img.store_digest.empty() && rec->image_digest != img.store_digest) continue;
    found.emplace_back(rec->created, id);
  }
  if (ec) return Error::sys("read", ec.value(), ctx_.instances_dir().string());
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [created, id] : found) out.push_back(std::move(id));
  return out;
}

Result<Started> Instances::claim(const LoadedImage& img, const StartOptions& opts) {
  PW_ASSIGN(std::vector<std::string> ids, parked(img));
  for (const auto& id : ids) {
    Stopwatch total;
    Laps lap;
    StartTimings t;
    const auto dir = ctx_.instance_dir(id);
    // Another claim (or a removal) has it: the next one.
    auto locked = InstanceLock::try_acquire(dir);
    if (!locked.ok() || !locked->has_value()) continue;
    InstanceLock lock = std::move(**locked);
    auto loaded = load_record(dir);
    if (!loaded.ok() || loaded->state != InstanceState::kRestored) continue;
    InstanceRecord rec = std::move(loaded).value();
    lap.to(t.record_ms);
    auto attempt = [&]() -> Result<Started> {
      oci::Runtime& rt = *ctx_.runtime_named(rec.runtime);
      PW_ASSIGN(oci::ContainerState cs, rt.state(id));
      lap.to(t.runtime_ms);
      rec.hostname = opts.hostname.empty() ? id : opts.hostname;
      // From here a crash leaves a transitional state, which recovery undoes.
      rec.state = InstanceState::kPersonalising;
      PW_TRY(save_record(dir, rec));
      lap.to(t.record_ms);
      PW_TRY(seams_.identity(rec)->apply(cs.pid));
      lap.to(t.identity_ms);
      PW_TRY(rt.resume(id));
      lap.to(t.runtime_ms);
      PW_TRY(wait_ready(rt, img.spec, rec, seams_.probe_target(rec)));
      lap.to(t.probe_ms);
      rec.state = InstanceState::kReady;
      rec.ready_s = total.millis() / 1000.0;
      PW_TRY(save_record(dir, rec));
      lap.to(t.record_ms);
      t.close(total.millis());
      return Started{rec, t, cs.pid};
    };
    auto claimed = attempt();
    if (claimed.ok()) {
      if (opts.keep_lock) claimed->lock = std::make_shared<InstanceLock>(std::move(lock));
      return claimed;
    }
    log::warn("claim of parked instance " + id + " failed; removing it: " +
              claimed.error().to_string());
    rec.state = InstanceState::kFailed;
    (void)save_record(dir, rec);
    if (Status st = undo(id, &rec); !st.ok())
      log::warn("cleanup of " + id + ": " + st.error().to_string());
  }
  return Error(ErrorKind::kNotFound, "no parked instance of image " + img.name +
                                         " to claim (`prewarm pool " + img.name + " --size N`)");
}

Result<Started> Instances::start_cold_from_spec(const spec::AppSpec& spec,
                                                const stdfs::path& base, const std::string& id,
                                                int stdio_fd) {
  LoadedImage img;
  img.name = "";
  img.spec = spec;
  img.manifest.rootfs_dir = base.string();
  // The rootfs seam makes a cold root from img.manifest.rootfs_dir and the spec's files.
  StartOptions so;
  so.mode = StartMode::kCold;
  so.id = id;
  // The checkpoint's hostname is the app's name; every restore gets its own afterwards.
  so.hostname = spec.name;
  so.stdio_fd = stdio_fd;
  so.keep_lock = true;
  return start(img, so);
}

Result<Started> start_instance(const Context& ctx, const LoadedImage& img, StartMode mode) {
  StartOptions o;
  o.mode = mode;
  return Instances(ctx).start(img, o);
}

}  // namespace prewarm::lifecycle
