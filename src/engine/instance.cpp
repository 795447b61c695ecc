// Starting (restore or cold), listing and removing instances.
#include "engine/instance.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "criu/criu.h"
#include "engine/app_log.h"
#include "engine/host_check.h"
#include "engine/identity.h"
#include "engine/images.h"
#include "image/image.h"
#include "oci/config.h"
#include "probe/probe.h"
#include "rootfs/rootfs.h"

namespace prewarm::engine {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr const char* kRecordFile = "instance.json";

json record_json(const InstanceRecord& r) {
  return {{"id", r.id},           {"image", r.image},   {"imageDigest", r.image_digest},
          {"hostname", r.hostname},
          {"ip", r.ip},           {"netns", r.netns},   {"hostVeth", r.host_veth},
          {"startedBy", r.started_by},
          {"fallbackReason", r.fallback_reason},        {"restoreNote", r.restore_note},
          {"created", r.created},
          {"readySeconds", r.ready_s}};
}

Status save_record(const stdfs::path& dir, const InstanceRecord& r) {
  return fs::write_file_atomic(dir / kRecordFile, record_json(r).dump(2), 0600);
}

Result<InstanceRecord> load_record(const stdfs::path& dir) {
  PW_ASSIGN(std::string text, fs::read_file(dir / kRecordFile, 1 << 20));
  json j = json::parse(text, nullptr, false);
  if (!j.is_object()) return Error((dir / kRecordFile).string() + ": not valid JSON");
  InstanceRecord r;
  r.id = j.value("id", "");
  r.image = j.value("image", "");
  r.image_digest = j.value("imageDigest", "");
  r.hostname = j.value("hostname", "");
  r.ip = j.value("ip", "");
  r.netns = j.value("netns", "");
  r.host_veth = j.value("hostVeth", "");
  r.started_by = j.value("startedBy", "");
  r.fallback_reason = j.value("fallbackReason", "");
  r.restore_note = j.value("restoreNote", "");
  r.created = j.value("created", "");
  r.ready_s = j.value("readySeconds", 0.0);
  return r;
}


// Waits for readiness: the spec's probe, or just "the container is running" without one.
Status wait_ready(const Context& ctx, const spec::AppSpec& spec, const std::string& id,
                  const std::string& ip) {
  if (spec.readiness_probe) {
    Status st = probe::wait_ready(*spec.readiness_probe, probe_target(ctx, id, ip));
    if (!st.ok()) return std::move(st).error().with_context("instance " + id + " never became ready");
    return {};
  }
  PW_ASSIGN(oci::ContainerState s, ctx.runtime->state(id));
  if (s.status != "running") return Error("instance " + id + " is " + s.status + ", not running");
  return {};
}

std::string new_id(const std::string& name) { return name + "-" + fs::random_hex(4); }


// Everything a start has made so far; undone unless released.
class StartGuard {
 public:
  StartGuard(const Context& ctx, std::string id) : ctx_(ctx), id_(std::move(id)) {}
  ~StartGuard() {
    if (!id_.empty()) {
      Status st = remove_instance(ctx_, id_);
      if (!st.ok()) log::warn("cleanup of " + id_ + ": " + st.error().to_string());
    }
  }
  void release() { id_.clear(); }

 private:
  const Context& ctx_;
  std::string id_;
};

void adopt_network(InstanceRecord& rec, const net::Attachment& att) {
  rec.ip = att.ip;
  rec.netns = att.netns_name;
  rec.host_veth = att.host_veth;
}

// Saves what detach() needs as soon as the network exists, so a crash can be cleaned up.
Status save_partial(const stdfs::path& dir, InstanceRecord& rec, const net::Attachment& att) {
  adopt_network(rec, att);
  return save_record(dir, rec);
}

struct Restored {
  pid_t pid = 0;
};

Result<Restored> try_restore(const Context& ctx, const LoadedImage& img, const std::string& id,
                             const stdfs::path& dir, StartTimings& t) {
  Stopwatch sw;
  auto criu_work = dir / "criu";
  PW_TRY(fs::make_dirs(criu_work, 0700));
  PW_ASSIGN(UniqueFd log_w, open_app_log(dir / "app.log"));
  t.prepare_ms += sw.millis();
  sw.restart();
  oci::RestoreOptions ro;
  ro.image_dir = img.dir / image::kCheckpointDir;
  ro.work_dir = criu_work;
  ro.tcp_established = img.manifest.tcp_established;
  Status st = ctx.runtime->restore(id, dir, ro, log_w.get());
  log_w.reset();
  t.runtime_ms = sw.millis();
  if (!st.ok()) return std::move(st).error();
  PW_ASSIGN(oci::ContainerState s, ctx.runtime->state(id));
  return Restored{s.pid};
}

// Puts the instance back to "fresh network and directory only" after a failed restore. The
// network namespace is made anew: a failed CRIU restore can leave its network lock (iptables
// rules dropping all traffic) in it.
Status reset_for_cold(const Context& ctx, const std::string& id, const stdfs::path& dir,
                      InstanceRecord& rec, net::Attachment& att) {
  PW_TRY(ctx.runtime->remove(id));
  PW_TRY(rootfs::unmount(dir / "rootfs"));
  for (const char* sub : {"upper", "work", "rootfs"}) PW_TRY(fs::remove_all(dir / sub));
  PW_TRY(net::detach(ctx.net, att));
  rec.netns.clear();
  PW_TRY(save_record(dir, rec));
  PW_ASSIGN(att, net::attach(ctx.net, id));
  return save_partial(dir, rec, att);
}

Result<pid_t> run_cold(const Context& ctx, const spec::AppSpec& spec, const stdfs::path& lower,
                       const std::string& id, const stdfs::path& dir,
                       const oci::ContainerConfig& cfg, StartTimings& t) {
  Stopwatch sw;
  PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(lower, dir));
  // Through the merged view, so new parent directories don't mask the base's modes.
  PW_TRY(rootfs::place_files(spec.files, ov.merged));
  PW_TRY(oci::write_bundle(dir, cfg));
  PW_ASSIGN(UniqueFd log_w, open_app_log(dir / "app.log"));
  t.prepare_ms += sw.millis();
  sw.restart();
  Status st = ctx.runtime->run(id, dir, log_w.get());
  log_w.reset();
  t.runtime_ms += sw.millis();
  if (!st.ok()) return std::move(st).error();
  PW_ASSIGN(oci::ContainerState s, ctx.runtime->state(id));
  return s.pid;
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

// config.json for an instance of an image: the spec's container plus a foreign image's mounts.
Result<oci::ContainerConfig> instance_config(const LoadedImage& img, const stdfs::path& dir,
                                             const std::string& id, const net::Attachment& att) {
  oci::ContainerConfig c = container_config(img.spec, dir, id, id, att.netns_path);
  PW_ASSIGN(c.mounts, foreign_mounts(img, dir, id, att.ip));
  return c;
}

// The checkpoint expects the base rootfs it was baked on. On another node (a pulled image), a
// tarball or debootstrap base is rebuilt from the spec's recipe; it must come out the same.
Status ensure_rootfs(const Context& ctx, LoadedImage& img) {
  if (stdfs::exists(img.manifest.rootfs_dir)) return {};
  std::string what = "image " + img.name + ": its rootfs " + img.manifest.rootfs_dir;
  if (img.spec.rootfs.kind == spec::RootfsKind::kDirectory)
    return Error(what + " does not exist on this host; provide that directory (the image "
                        "was baked from it)");
  ctx.say(what + " is not on this host; preparing it from the spec");
  auto base = rootfs::prepare_base(img.spec.rootfs, ctx.cache_dir / "rootfs",
                                   [&](const std::string& m) { ctx.say(m); });
  if (!base.ok()) return std::move(base).error().with_context(what + " is missing");
  if (base->id != img.manifest.rootfs_id)
    return Error(what + " is missing, and rebuilding it gave " + base->id + " instead of " +
                 img.manifest.rootfs_id);
  img.manifest.rootfs_dir = base->dir.string();
  return {};
}

}  // namespace

std::map<std::string, double> StartTimings::as_map() const {
  return {{"verify_ms", verify_ms},     {"prepare_ms", prepare_ms}, {"network_ms", network_ms},
          {"runtime_ms", runtime_ms},   {"identity_ms", identity_ms}, {"probe_ms", probe_ms},
          {"total_ms", total_ms}};
}

probe::Target probe_target(const Context& ctx, const std::string& id, const std::string& ip) {
  auto rt = ctx.runtime;
  return {ip, [rt, id](const std::vector<std::string>& cmd, spec::Millis timeout) {
            return rt->exec(id, cmd, timeout);
          }};
}

oci::ContainerConfig container_config(const spec::AppSpec& spec, const std::filesystem::path& dir,
                                      const std::string& id, const std::string& hostname,
                                      const std::filesystem::path& netns) {
  oci::ContainerConfig c;
  c.rootfs = dir / "rootfs";
  c.argv = spec.argv();
  c.env = spec.env;
  c.cwd = spec.working_dir;
  c.hostname = hostname;
  c.netns_path = netns;
  // Flat, so that runc's delete removes the whole cgroup.
  c.cgroups_path = "/prewarm-" + id;
  return c;
}

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  char buf[40];
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

Status check_image_name(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name.front() != '.' && name.front() != '-';
  for (char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_');
  if (!ok)
    return Error("invalid image name '" + name + "': use lowercase letters, digits, '-', '.', '_'");
  return {};
}

Result<LoadedImage> load_image(const Context& ctx, const std::string& name) {
  PW_TRY(check_image_name(name));
  LoadedImage img;
  img.name = name;
  img.dir = ctx.image_dir(name);
  PW_TRY(ensure_unpacked(ctx, name));
  PW_ASSIGN(store::Store st, open_store(ctx));
  if (auto m = st.read_manifest(name); m.ok()) img.store_digest = m->second;
  image::VerifyOptions vo;
  vo.stamp_dir = ctx.stamps_dir();
  PW_ASSIGN(img.manifest, image::open_verified(img.dir, vo));
  auto parsed = spec::parse_spec(img.manifest.spec_yaml, "/");
  if (!parsed.ok())
    return std::move(parsed).error().with_context("image " + name + ": stored spec is invalid");
  img.spec = std::move(parsed).value();
  auto mounts = image::foreign_mounts(img.dir);
  if (!mounts.ok()) return std::move(mounts).error().with_context("image " + name);
  img.foreign_mounts = std::move(mounts).value();
  PW_TRY(ensure_rootfs(ctx, img));
  return img;
}

Result<ColdInstance> start_cold_from_spec(const Context& ctx, const spec::AppSpec& spec,
                                          const stdfs::path& lower, const std::string& id,
                                          const std::string& hostname, StartTimings* timings) {
  StartTimings local;
  StartTimings& t = timings ? *timings : local;
  Stopwatch total;
  auto dir = ctx.instance_dir(id);
  if (::mkdir(dir.c_str(), 0700) != 0) return Error::sys("mkdir", errno, dir.string());
  StartGuard guard(ctx, id);
  InstanceRecord rec;
  rec.id = id;
  rec.hostname = hostname;
  rec.started_by = "cold";
  rec.created = now_rfc3339();
  Stopwatch sw;
  PW_TRY(net::ensure_bridge(ctx.net));
  PW_ASSIGN(net::Attachment att, net::attach(ctx.net, id));
  PW_TRY(save_partial(dir, rec, att));
  t.network_ms = sw.millis();
  PW_ASSIGN(pid_t pid, run_cold(ctx, spec, lower, id, dir,
                                container_config(spec, dir, id, hostname, att.netns_path), t));
  PW_TRY(save_record(dir, rec));
  sw.restart();
  PW_TRY(wait_ready(ctx, spec, id, rec.ip));
  t.probe_ms = sw.millis();
  t.total_ms = total.millis();
  rec.ready_s = t.total_ms / 1000.0;
  PW_TRY(save_record(dir, rec));
  guard.release();
  return ColdInstance{rec, dir, pid};
}

Result<Started> start_instance(const Context& ctx, const LoadedImage& img, StartMode mode) {
  Stopwatch total;
  StartTimings t;
  std::string id = new_id(img.name);
  auto dir = ctx.instance_dir(id);

  // Can this host restore it at all? (cheap checks first; CPU features via CRIU)
  std::string fallback, unchecked;
  if (mode == StartMode::kRestore) {
    Stopwatch sw;
    HostCheck hc = check_host(ctx, img);
    fallback = std::move(hc.blocker);
    unchecked = std::move(hc.unchecked);
    t.verify_ms = sw.millis();
  }

  if (::mkdir(dir.c_str(), 0700) != 0) return Error::sys("mkdir", errno, dir.string());
  StartGuard guard(ctx, id);
  InstanceRecord rec;
  rec.id = id;
  rec.image = img.name;
  rec.image_digest = img.store_digest;
  rec.hostname = id;
  rec.created = now_rfc3339();

  Stopwatch sw;
  PW_TRY(net::ensure_bridge(ctx.net));
  PW_ASSIGN(net::Attachment att, net::attach(ctx.net, id));
  t.network_ms = sw.millis();
  PW_TRY(save_partial(dir, rec, att));

  pid_t pid = 0;
  bool restored = false;
  if (mode == StartMode::kRestore && fallback.empty()) {
    rec.restore_note = unchecked;
    sw.restart();
    // The app's changes to its rootfs up to the checkpoint, then the same overlay as at bake.
    auto upper = dir / "upper";
    PW_TRY(rootfs::apply_diff(img.dir / image::kRootfsDiff, upper));
    PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(img.manifest.rootfs_dir, dir));
    (void)ov;
    PW_ASSIGN(oci::ContainerConfig cfg, instance_config(img, dir, id, att));
    PW_TRY(oci::write_bundle(dir, cfg));
    t.prepare_ms = sw.millis();
    auto r = try_restore(ctx, img, id, dir, t);
    if (r.ok()) {
      pid = r->pid;
      restored = true;
    } else {
      fallback = std::move(r).error().to_string();
      log::warn("restore of " + id + " failed, cold-starting instead: " + fallback);
      PW_TRY(reset_for_cold(ctx, id, dir, rec, att));
    }
  }
  if (restored) {
    sw.restart();
    PW_TRY(set_hostname(pid, id));
    t.identity_ms = sw.millis();
    rec.started_by = "restore";
  } else {
    rec.started_by = "cold";
    rec.fallback_reason = fallback;
    PW_ASSIGN(oci::ContainerConfig cfg, instance_config(img, dir, id, att));
    PW_ASSIGN(pid, run_cold(ctx, img.spec, img.manifest.rootfs_dir, id, dir, cfg, t));
  }
  PW_TRY(save_record(dir, rec));
  sw.restart();
  PW_TRY(wait_ready(ctx, img.spec, id, rec.ip));
  t.probe_ms = sw.millis();
  t.total_ms = total.millis();
  rec.ready_s = t.total_ms / 1000.0;
  PW_TRY(save_record(dir, rec));
  guard.release();
  return Started{rec, t};
}

Status remove_instance(const Context& ctx, const std::string& id) {
  auto dir = ctx.instance_dir(id);
  std::string problems;
  auto note = [&](Status st) {
    if (!st.ok()) problems += (problems.empty() ? "" : "; ") + st.error().message();
  };
  note(ctx.runtime->remove(id));
  note(rootfs::unmount(dir / "rootfs"));
  if (auto rec = load_record(dir); rec.ok() && !rec->netns.empty()) {
    net::Attachment att;
    att.netns_name = rec->netns;
    att.netns_path = "/run/netns/" + rec->netns;
    att.ip = rec->ip;
    att.host_veth = rec->host_veth;
    note(net::detach(ctx.net, att));
  }
  if (problems.empty()) note(fs::remove_all(dir));
  if (!problems.empty()) return Error("removing instance " + id + ": " + problems);
  return {};
}

Result<std::vector<InstanceStatus>> list_instances(const Context& ctx) {
  std::vector<InstanceStatus> out;
  std::map<std::string, oci::ContainerState> states;
  if (auto l = ctx.runtime->list(); l.ok())
    for (auto& s : *l) states[s.id] = s;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx.instances_dir(), ec)) {
    InstanceStatus s;
    auto rec = load_record(e.path());
    if (rec.ok()) {
      s.record = *rec;
    } else {
      s.record.id = e.path().filename().string();
    }
    auto it = states.find(s.record.id);
    s.state = it == states.end() ? "missing" : it->second.status;
    s.pid = it == states.end() ? 0 : it->second.pid;
    out.push_back(std::move(s));
  }
  if (ec) return Error::sys("read", ec.value(), ctx.instances_dir().string());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.record.created < b.record.created; });
  return out;
}

}  // namespace prewarm::engine
