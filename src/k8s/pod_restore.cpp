// Restoring a pod's container: the pod's spec (from containerd or CRI-O) read for what it
// decides (namespaces, cgroup, rootfs, hostname, resources), prewarm's restore config built
// around it, and `runc restore` run under the shim's runc root, so that every later runc call
// of the shim finds the container as if runc had created it.
#include "k8s/pod_restore.h"

#include <algorithm>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <future>
#include <optional>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fault.h"
#include "base/fs.h"
#include "base/subprocess.h"
#include "cri/client.h"
#include "criu/criu.h"
#include "engine/context.h"
#include "image/image.h"
#include "images/images.h"
#include "images/load.h"
#include "k8s/pod_mounts.h"
#include "lifecycle/host_check.h"
#include "lifecycle/identity.h"
#include "lifecycle/instance.h"
#include "registry/registry.h"
#include "oci/cgroup.h"
#include "oci/criu_direct.h"
#include "oci/runtime.h"
#include "rootfs/rootfs.h"
#include "spec/image_ref.h"
#include "spec/names.h"

namespace prewarm::k8s {
namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kContainerType = "io.kubernetes.cri.container-type";
constexpr const char* kImageName = "io.kubernetes.cri.image-name";
constexpr auto kRestoreTimeout = std::chrono::minutes(2);

stdfs::path pod_dir(const std::string& id) { return stdfs::path(kPodStateDir) / id; }
stdfs::path outcome_file(const std::string& id) {
  return stdfs::path(kPodStateDir) / (id + ".json");
}

// What a pod container's OCI spec decides about it.
struct PodSpec {
  std::string checkpoint;
  stdfs::path root;    // the container image's rootfs the runtime prepared (absolute)
  stdfs::path netns;   // the pod's network namespace
  std::string cgroups_path;
  std::string hostname;
  std::string image;   // the container image as the CRI named it ("" : not given)
  bool terminal = false;
  json resources;      // linux.resources, applied to the restored container's cgroup
  json annotations;
  // The pod's bind mounts (volumes, tokens, /etc/hosts, /etc/resolv.conf, /etc/hostname, the
  // termination log), added to the restored container before it resumes.
  std::vector<PodMount> mounts;
};

std::string string_at(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<json> read_config(const stdfs::path& bundle) {
  PW_ASSIGN(std::string text, fs::read_file(bundle / "config.json", 16 << 20));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(ErrorKind::kInvalidInput, (bundle / "config.json").string() + " is not JSON");
  return j;
}

Result<PodSpec> read_pod_spec(const RuncCall& c, const json& cfg) {
  PodSpec p;
  const json empty = json::object();
  const json& ann = cfg.contains("annotations") && cfg["annotations"].is_object()
                        ? cfg["annotations"] : empty;
  p.annotations = ann;
  p.checkpoint = string_at(ann, std::string(kCheckpointAnnotation).c_str());
  p.image = string_at(ann, kImageName);
  const json& root = cfg.contains("root") && cfg["root"].is_object() ? cfg["root"] : empty;
  std::string root_path = string_at(root, "path");
  if (root_path.empty()) return Error(ErrorKind::kInvalidInput, "the spec names no root");
  p.root = stdfs::path(root_path).is_absolute() ? stdfs::path(root_path)
                                                : stdfs::absolute(c.bundle) / root_path;
  const json& process = cfg.contains("process") && cfg["process"].is_object() ? cfg["process"]
                                                                              : empty;
  p.terminal = process.value("terminal", false);
  p.hostname = string_at(cfg, "hostname");
  if (p.hostname.empty() && process.contains("env") && process["env"].is_array())
    for (const auto& e : process["env"])
      if (e.is_string() && e.get<std::string>().rfind("HOSTNAME=", 0) == 0)
        p.hostname = e.get<std::string>().substr(9);
  const json& linux = cfg.contains("linux") && cfg["linux"].is_object() ? cfg["linux"] : empty;
  p.cgroups_path = string_at(linux, "cgroupsPath");
  if (cfg.contains("mounts") && cfg["mounts"].is_array())
    for (const auto& m : cfg["mounts"]) {
      if (!m.is_object()) continue;
      std::vector<std::string> opts;
      if (m.contains("options") && m["options"].is_array())
        for (const auto& o : m["options"])
          if (o.is_string()) opts.push_back(o.get<std::string>());
      auto has = [&](const char* o) { return std::find(opts.begin(), opts.end(), o) != opts.end(); };
      const std::string type = string_at(m, "type"), dest = string_at(m, "destination"),
                        src = string_at(m, "source");
      if (!(type == "bind" || has("bind") || has("rbind"))) continue;
      if (src.empty() || src[0] != '/' || dest.empty() || dest[0] != '/') continue;
      // /dev/shm keeps what the app had there at the checkpoint (it travels in the image).
      if (dest == "/dev/shm") continue;
      p.mounts.push_back({src, dest, has("ro"), has("rbind")});
    }
  if (linux.contains("resources")) p.resources = linux["resources"];
  if (linux.contains("namespaces") && linux["namespaces"].is_array())
    for (const auto& ns : linux["namespaces"])
      if (ns.is_object() && string_at(ns, "type") == "network") p.netns = string_at(ns, "path");
  if (p.netns.empty())
    return Error(ErrorKind::kInvalidInput,
                 "the pod has no network namespace of its own (hostNetwork); a restored app "
                 "would listen on the node's addresses");
  return p;
}

// The local image for the annotation: a name in the node's store, or a registry reference
// pulled into it now (the time it took goes to the outcome).
Result<std::string> ensure_image(const engine::Context& ctx, const std::string& checkpoint,
                                 PodOutcome& out) {
  if (spec::check_name(checkpoint, "checkpoint").ok()) return checkpoint;
  auto ref = registry::parse_reference(checkpoint);
  if (!ref.ok())
    return Error(ErrorKind::kInvalidInput,
                 "annotation " + std::string(kCheckpointAnnotation) + "=\"" + checkpoint +
                     "\" is neither an image name nor a registry reference: " +
                     ref.error().message());
  // Pulled images are named after the repository's last part, as `prewarm pull` names them.
  std::string repo = ref->repository;
  std::string name = repo.substr(repo.rfind('/') + 1);
  // A tag already on this node is used as it is (the node's DaemonSet keeps tags fresh); a
  // digest is always resolved, which costs no download when the store has its blobs.
  if (ref->digest.empty() && stdfs::exists(ctx.image_dir(name) / "manifest.json")) return name;
  Stopwatch sw;
  PW_ASSIGN(std::string pulled,
            images::pull_image(ctx, checkpoint, name, images::registry_options(ctx), {}));
  out.pull_ms = sw.millis();
  return pulled;
}

// The containerd socket of the shim that called this runtime (its -address), or "".
std::string containerd_address() {
  auto cmdline = fs::read_file("/proc/" + std::to_string(::getppid()) + "/cmdline", 1 << 16);
  if (!cmdline.ok()) return {};
  std::vector<std::string> args;
  for (size_t at = 0; at < cmdline->size();) {
    size_t end = cmdline->find('\0', at);
    if (end == std::string::npos) end = cmdline->size();
    args.push_back(cmdline->substr(at, end - at));
    at = end + 1;
  }
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "-address" || args[i] == "--address") return args[i + 1];
  return {};
}

// The id (config digest) of the image `name` as the shim's containerd has it, from its CRI
// ImageStatus; an error when there is no containerd to ask (CRI-O, a runtime run by hand).
Result<std::string> containerd_image_id(const std::string& name) {
  const std::string address = containerd_address();
  if (address.empty()) return Error(ErrorKind::kNotFound, "no containerd address");
  cri::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(500);
  co.call_timeout = std::chrono::milliseconds(2000);
  PW_ASSIGN(cri::Client client, cri::Client::connect(address, co));
  PW_ASSIGN(auto image, client.image_status(name));
  if (!image) return Error(ErrorKind::kNotFound, "containerd has no image " + name);
  return image->id();
}

// The checkpoint was baked on a container image; the pod must run that same image. The CRI
// names the pod's image (io.kubernetes.cri.image-name): containerd gives its name, which the
// shim's containerd resolves to an image id here and compares with the config digest the bake
// recorded (a moved tag is caught); an image id or REPO@sha256:<manifest digest> is compared
// directly; without a containerd to ask (CRI-O), a name must be the reference baked from.
// containerd_id: what the shim's containerd said the pod's image is (by name), when it was
// asked; an error there (no containerd to ask) falls back to comparing the name.
Status check_pod_image(const images::LoadedImage& img, const PodSpec& pod,
                       const Result<std::string>* containerd_id) {
  const auto& baked = img.manifest.rootfs_image;
  if (!baked)
    return Error(ErrorKind::kIncompatibleHost,
                 "checkpoint " + img.name + " was baked on rootfs " + img.manifest.rootfs_id +
                     ", not on a container image; bake it with `rootfs: {image: REF}` from the "
                     "pod's image to restore it into pods");
  const std::string& p = pod.image;
  auto mismatch = [&](const std::string& what) {
    return Error(ErrorKind::kIncompatibleHost,
                 "the pod runs image " + p + ", but checkpoint " + img.name + " was baked on " +
                     baked->reference + " (" + what + ")");
  };
  if (p.empty()) return {};  // a runtime that does not say: the rootfs is taken on trust
  // A name: containerd (the shim's -address) says which image it is, by id.
  if (containerd_id && containerd_id->ok())
    return **containerd_id == baked->config_digest
               ? Status{}
               : mismatch("image id " + baked->config_digest + "; the pod's is " +
                          **containerd_id);
  if (p.rfind("sha256:", 0) == 0)
    return p == baked->config_digest ? Status{} : mismatch("image id " + baked->config_digest);
  if (auto at = p.find("@sha256:"); at != std::string::npos)
    return p.substr(at + 1) == baked->manifest_digest
               ? Status{}
               : mismatch("manifest " + baked->manifest_digest);
  auto ref = spec::parse_image_ref(baked->reference, "/");
  if (ref.ok() && ref->transport != spec::ImageTransport::kRegistry) {
    // A layout has no registry name; its tag (ref.name) is what the runtime imported it as.
    if (ref->tag.empty()) return mismatch("a layout without a tag: name the pod's image by id");
    return p == ref->tag ? Status{} : mismatch("tag " + ref->tag);
  }
  return p == baked->reference ? Status{} : mismatch("reference " + baked->reference);
}

// runc with the shim's global options, our own log file, and prewarm's CRIU.
std::vector<std::string> runc_argv(const RuncCall& c, const stdfs::path& log) {
  std::vector<std::string> argv = {runc_binary()};
  for (size_t i = 0; i < c.globals.size(); ++i) {
    const std::string& g = c.globals[i];
    if (g == "--log" || g == "--log-format" || g == "--criu") {
      ++i;
      continue;
    }
    if (g.rfind("--log=", 0) == 0 || g.rfind("--log-format=", 0) == 0 ||
        g.rfind("--criu=", 0) == 0)
      continue;
    argv.push_back(g);
  }
  argv.insert(argv.end(), {"--log", log.string(), "--log-format", "json"});
  if (std::string criu = criu::criu_binary(); !criu.empty())
    argv.insert(argv.end(), {"--criu", criu});
  return argv;
}

Status run_and_wait(const std::vector<std::string>& argv, const std::string& what) {
  SpawnOptions o;
  o.argv = argv;
  o.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  // The shim's pipes: the restored app's stdout and stderr (runc hands them to CRIU for the
  // pipes the app had at the checkpoint).
  o.stdin_fd = STDIN_FILENO;
  o.stdout_fd = STDOUT_FILENO;
  o.stderr_fd = STDERR_FILENO;
  PW_ASSIGN(Child child, spawn(o));
  auto status = child.wait(kRestoreTimeout);
  if (!status.ok()) {
    child.kill(SIGKILL);
    (void)child.wait();
    return Error(ErrorKind::kUnavailable, what + " did not finish in 2 minutes");
  }
  if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) return {};
  RunResult r{*status, {}, {}};
  return Error(ErrorKind::kRuntime, what + " failed: " + r.describe());
}

// The restore config: prewarm's own layout for the checkpoint (the mounts it was baked with),
// in the pod's network namespace and cgroup, with the pod's resources and annotations.
Status write_restore_bundle(const images::LoadedImage& img, const PodSpec& pod,
                            const std::string& id, const stdfs::path& dir,
                            const stdfs::path& root) {
  lifecycle::SandboxInfo sb;
  sb.netns_path = pod.netns;
  oci::ContainerConfig cc = lifecycle::container_config(img.spec, root, id,
                                                        pod.hostname.empty() ? id : pod.hostname,
                                                        sb);
  if (!pod.cgroups_path.empty()) cc.cgroups_path = pod.cgroups_path;
  PW_TRY(lifecycle::write_config(dir, std::move(cc)));
  PW_TRY(lifecycle::fill_dev_shm(img, dir));
  PW_ASSIGN(json cfg, read_config(dir));
  if (!pod.resources.is_null()) cfg["linux"]["resources"] = pod.resources;
  cfg["annotations"] = pod.annotations;
  return fs::write_file_atomic(dir / "config.json", cfg.dump(), 0600);
}

Result<pid_t> restore(const RuncCall& c, const json& cfg, PodOutcome& out) {
  PW_ASSIGN(PodSpec pod, read_pod_spec(c, cfg));
  // A pod image named by name is resolved to its id by the shim's containerd, a gRPC client's
  // start-up (~20 ms) that runs alongside the restore; the answer is awaited while the
  // restored tasks are still stopped (or before runc restores), so a wrong image never runs.
  std::future<Result<std::string>> image_id;
  const bool by_name = !pod.image.empty() && pod.image.rfind("sha256:", 0) != 0 &&
                       pod.image.find("@sha256:") == std::string::npos;
  if (by_name) image_id = std::async(std::launch::async, containerd_image_id, pod.image);
  std::optional<Result<std::string>> resolved;
  auto check_image_id = [&](const images::LoadedImage& img) -> Status {
    if (!image_id.valid() && !resolved) return {};
    if (!resolved) resolved.emplace(image_id.get());
    // No containerd to ask (CRI-O, a runtime run by hand): the name must be the one baked from.
    return check_pod_image(img, pod, resolved->ok() ? &*resolved : nullptr);
  };
  if (pod.terminal || !c.console_socket.empty())
    return Error(ErrorKind::kInvalidInput,
                 "the container asks for a terminal (tty: true); a restored app keeps the pipes "
                 "it had at the checkpoint");
  PW_ASSIGN(engine::Context ctx, engine::make_context());
  PW_ASSIGN(out.image, ensure_image(ctx, pod.checkpoint, out));
  images::LoadOptions lo;
  lo.need_base = false;  // the pod's runtime prepared the root from the container image
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, out.image, lo));
  if (!img.foreign_mounts.empty())
    return Error(ErrorKind::kInvalidInput,
                 "checkpoint " + img.name + " was imported from another runtime's archive; "
                 "only checkpoints prewarm baked can be restored into pods");
  // An id or digest is compared now; a name once containerd answered (check_image_id).
  if (!by_name || !img.manifest.rootfs_image) PW_TRY(check_pod_image(img, pod, nullptr));
  if (auto hc = lifecycle::check_host(ctx, img); !hc.blocker.empty())
    return Error(ErrorKind::kIncompatibleHost, hc.blocker);

  const stdfs::path dir = pod_dir(c.id);
  release_pod_container(c.id);  // what an earlier attempt for this id may have left
  PW_TRY(fs::make_dirs(dir, 0700));
  // Recorded before anything is made in it: a runtime killed mid-restore leaves no outcome,
  // and the shim's delete that follows finds what to undo from this directory alone
  // (release_pod_container).
  if (!pod.cgroups_path.empty())
    PW_TRY(fs::write_file_atomic(dir / "cgroup", pod.cgroups_path, 0600));
  bool runc_started = false;
  auto attempt = [&]() -> Result<pid_t> {
    std::vector<stdfs::path> lowers;
    const stdfs::path diff = img.dir / image::kRootfsDiff;
    if (stdfs::exists(diff)) {
      std::string sha;
      for (const auto& f : img.manifest.files)
        if (f.path == image::kRootfsDiff) sha = f.sha256;
      PW_ASSIGN(stdfs::path layer, rootfs::diff_layer(diff, ctx.layers_dir(), sha));
      lowers.push_back(layer);
    }
    lowers.push_back(pod.root);
    PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(lowers, dir));
    PW_TRY(write_restore_bundle(img, pod, c.id, dir, ov.merged));
    const stdfs::path work = dir / "work";
    PW_TRY(fs::make_dirs(work, 0700));
    const stdfs::path pid_file = c.pid_file.empty() ? dir / "init.pid" : stdfs::path(c.pid_file);
    out.cgroup = pod.cgroups_path;
    out.bundle = dir.string();
    if (ctx.config.runtime != "runc") {
      // Direct CRIU: no runc around it, and the hostname is set while the tasks are stopped.
      // Later runc calls of the shim for this container are answered here (direct_calls.cpp).
      out.runtime = "criu";
      auto rt = ctx.runtime_named("criu");
      oci::RestoreOptions ro;
      ro.image_dir = img.dir / image::kCheckpointDir;
      ro.work_dir = work;
      ro.tcp_established = img.manifest.tcp_established;
      engine::apply_restore_config(ctx.config, ro);
      ro.stdio_fd = STDOUT_FILENO;  // the shim's pipe: the container log
      ro.before_resume = [&](pid_t pid) -> Status {
        PW_TRY(check_image_id(img));
        if (!pod.hostname.empty()) PW_TRY(lifecycle::set_hostname(pid, pod.hostname));
        PW_TRY(attach_mounts(pid, pod.mounts));
        fault_point("pod.before_resume");  // the fault suite: the runtime dies mid-restore
        return Status{};
      };
      runc_started = true;
      PW_ASSIGN(oci::Restored restored, rt->restore(c.id, dir, ro));
      out.pid = std::to_string(restored.pid);
      PW_TRY(fs::write_file_atomic(pid_file, out.pid, 0644));
      return restored.pid;
    }
    out.runtime = "runc";
    PW_TRY(check_image_id(img));
    std::vector<std::string> argv = runc_argv(c, dir / "runc.log");
    argv.insert(argv.end(), {"restore", "--detach", "--bundle", dir.string(), "--image-path",
                             (img.dir / image::kCheckpointDir).string(), "--work-path",
                             work.string(), "--pid-file", pid_file.string()});
    if (img.manifest.tcp_established) argv.push_back("--tcp-established");
    argv.push_back(c.id);
    runc_started = true;
    Status st = run_and_wait(argv, "runc restore");
    if (!st.ok()) {
      Error e = std::move(st).error();
      if (std::string why = oci::runc_log_errors(dir / "runc.log"); !why.empty())
        e = Error(e.kind(), e.message() + ": " + why);
      if (std::string tail = criu::relevant_log_tail(work / "restore.log"); !tail.empty())
        return std::move(e).with_detail(criu::criu_log_heading(work / "restore.log") + tail);
      return e;
    }
    PW_ASSIGN(std::string pid_text, fs::read_file(pid_file, 64));
    pid_t pid = static_cast<pid_t>(std::atoi(pid_text.c_str()));
    if (pid <= 0) return Error(ErrorKind::kRuntime, "runc restore wrote no pid to " + pid_file.string());
    out.pid = std::to_string(pid);
    // runc resumes the tasks itself, so the pod's hostname can only be set now.
    if (!pod.hostname.empty()) PW_TRY(lifecycle::set_hostname(pid, pod.hostname));
    PW_TRY(attach_mounts(pid, pod.mounts));
    return pid;
  };
  auto r = attempt();
  if (!r.ok()) {
    if (runc_started && out.runtime == "criu") {
      (void)ctx.runtime_named("criu")->remove(c.id);
    } else if (runc_started) {
      std::vector<std::string> del = runc_argv(c, dir / "runc-delete.log");
      del.insert(del.end(), {"delete", "--force", c.id});
      (void)run_and_wait(del, "runc delete");
    }
    release_pod_container(c.id);
  }
  return r;
}

void say(const std::string& line) {
  // The shim's stderr pipe: the line lands in the container's log (kubectl logs).
  std::fprintf(stderr, "prewarm: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace

std::string runc_binary() {
  if (const char* e = std::getenv("PREWARM_RUNC"); e && *e) return e;
  std::string r = find_executable("runc");
  return r.empty() ? "/usr/sbin/runc" : r;
}

bool restore_if_asked(const RuncCall& c) {
  auto cfg = read_config(c.bundle);
  if (!cfg.ok()) return false;  // runc's create says what is wrong with it
  const json& ann = cfg->contains("annotations") && (*cfg)["annotations"].is_object()
                        ? (*cfg)["annotations"] : json::object();
  const std::string checkpoint = string_at(ann, std::string(kCheckpointAnnotation).c_str());
  // The sandbox (pause) container, and containers that did not ask, are runc's.
  if (checkpoint.empty() || string_at(ann, kContainerType) == "sandbox") return false;

  Stopwatch sw;
  PodOutcome out;
  out.container_id = c.id;
  out.created = now_rfc3339();
  out.checkpoint = checkpoint;
  auto r = restore(c, *cfg, out);
  out.restore_ms = sw.millis();
  out.restored = r.ok();
  if (!r.ok()) {
    out.reason = r.error().message();
    if (!r.error().detail().empty()) out.reason += "\n" + r.error().detail();
  }
  (void)fs::make_dirs(kPodStateDir, 0755);
  (void)fs::write_file_atomic(outcome_file(c.id), outcome_json(out), 0644);
  if (out.restored) {
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.1f", out.restore_ms);
    say("restored from checkpoint " + out.image + " in " + ms + " ms" +
        (out.pull_ms > 0 ? " (pulled first: " + std::to_string(static_cast<int>(out.pull_ms)) +
                               " ms)"
                         : ""));
  } else {
    say("cold start (checkpoint " + checkpoint + " not restored): " + out.reason);
  }
  return out.restored;
}

bool was_restored(const std::string& id) {
  auto text = fs::read_file(outcome_file(id), 1 << 20);
  if (!text.ok()) return false;
  json j = json::parse(*text, nullptr, false);
  return !j.is_discarded() && j.is_object() && j.value("restored", false);
}

void release_pod_container(const std::string& id) {
  if (id.empty() || id.find('/') != std::string::npos || id == "." || id == "..") return;
  const stdfs::path dir = pod_dir(id);
  std::error_code ec;
  if (stdfs::exists(dir, ec)) {
    // A restore that died half-way (the runtime killed): the direct backend's state and the
    // container's cgroup, with whatever CRIU had restored into it.
    if (stdfs::exists(stdfs::path(oci::kCriuDirectStateRoot) / id, ec))
      if (auto ctx = engine::make_context(); ctx.ok()) (void)ctx->runtime_named("criu")->remove(id);
    if (auto cg = fs::read_file(dir / "cgroup", 4096); cg.ok() && !cg->empty())
      (void)oci::CgroupSet(*cg).destroy();
    (void)rootfs::unmount(dir / "rootfs");
    (void)fs::unmount_under(dir);
    (void)fs::remove_all(dir);
  }
  ::unlink(outcome_file(id).c_str());
}

}  // namespace prewarm::k8s
