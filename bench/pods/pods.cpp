// bench pods: pod start → ready through the CRI, the way the kubelet drives a node, on the
// Python example: a cold pod, RuntimeClass `prewarm` (the pod's container restored by
// prewarm-runtime), and runtime in runtime (a privileged container of the prewarm image restoring
// the app inside itself); one pod at a time and K at once; compared in the same run with
// `prewarm run` of the same checkpoint. A real containerd with CNI (tests/support/cri_node.h).
// JSON on stdout, progress on stderr.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/subprocess.h"
#include "cri/client.h"
#include "cri/configs.h"
#include "ociimage/layout.h"
#include "probe/probe.h"
#include "rootfs/rootfs.h"
#include "spec/app_spec.h"
#include "support/cri_node.h"

namespace {

using namespace prewarm;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;
namespace v1 = ::runtime::v1;

constexpr const char* kAppImage = "prewarm.bench/pyservice:1";
constexpr const char* kPrewarmImage = "prewarm.bench/prewarm:1";
constexpr const char* kCheckpoint = "pyservice-pods";
constexpr const char* kTinyImage = "prewarm.bench/tiny:1";

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

void say(const std::string& s) { std::fprintf(stderr, "[bench pods] %s\n", s.c_str()); }

[[noreturn]] void die(const std::string& what, const Error& e) {
  std::fprintf(stderr, "bench pods: %s: %s\n", what.c_str(), e.to_string().c_str());
  std::exit(1);
}
template <class T>
T must(Result<T> r, const std::string& what) {
  if (!r.ok()) die(what, r.error());
  return std::move(r).value();
}
void must(Status s, const std::string& what) {
  if (!s.ok()) die(what, s.error());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Env {
  stdfs::path work;
  std::vector<std::string> vars;  // PREWARM_* for the CLI and the runtime
};

RunResult run_cli(const Env& env, std::vector<std::string> args) {
  SpawnOptions o;
  o.argv = {PREWARM_BINARY};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = env.vars;
  return must(run_capture(o, std::chrono::minutes(10)), "prewarm " + args[0]);
}

// The app answers at ip:8080/healthz (polled every 5 ms, as a fast readiness probe would).
bool wait_healthy(const std::string& ip, std::chrono::seconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    auto r = probe::http_get(ip, 8080, "/healthz", {}, spec::Millis(500));
    if (r.ok() && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// kMachinery: the tiny counter (ready in a millisecond) started cold, for what the pod
// machinery itself costs (containerd's CreateContainer and StartContainer, the shim, runc).
enum class Kind { kCold, kNative, kRuntimeInRuntime, kMachinery };
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kMachinery: return "machinery_tiny_cold";
    case Kind::kCold: return "cold";
    case Kind::kNative: return "native_restore";
    case Kind::kRuntimeInRuntime: return "runtime_in_runtime";
  }
  return "?";
}

struct PodTimes {
  double sandbox_ms = 0;    // RunPodSandbox
  double container_ms = 0;  // CreateContainer → the app answers at the pod IP
  double total_ms = 0;      // RunPodSandbox → the app answers
  double restore_ms = 0;    // inside the container's create: prewarm-runtime's own restore
  bool restored = false;
};

class Bench {
 public:
  Bench(testing::CriNode& node, Env env, std::string app_image_id)
      : node_(node), env_(std::move(env)), app_image_id_(std::move(app_image_id)) {}

  // Starts one pod of `kind` and waits until the app answers at its pod IP; the pod is removed
  // afterwards (not timed). `name` must be unique among live pods.
  Result<PodTimes> start(Kind kind, const std::string& name) {
    auto& cri = node_.cri();
    cri::PodOptions po = node_.pod_options(name);
    if (kind == Kind::kNative) po.annotations["prewarm.dev/checkpoint"] = kCheckpoint;
    v1::PodSandboxConfig pc = cri::kubelet_pod_config(po);
    const bool privileged = kind == Kind::kRuntimeInRuntime;
    if (privileged) pc.mutable_linux()->mutable_security_context()->set_privileged(true);
    cri::ContainerOptions co;
    co.name = "app";
    if (privileged) {
      co.image = kPrewarmImage;
      co.args = {"run", kCheckpoint, "--foreground"};
    } else if (kind == Kind::kMachinery) {
      co.image = kTinyImage;
    } else {
      co.image = app_image_id_;
    }
    v1::ContainerConfig cc = cri::kubelet_container_config(po, co);
    if (privileged) {
      cc.mutable_linux()->mutable_security_context()->set_privileged(true);
      for (const auto& [host, inside] :
           {std::pair{env_.work / "state", "/var/lib/prewarm"}, {env_.work / "cache", "/var/cache/prewarm"}}) {
        auto* m = cc.add_mounts();
        m->set_host_path(host.string());
        m->set_container_path(inside);
      }
    }
    PodTimes t;
    auto t0 = Clock::now();
    const std::string handler = kind == Kind::kRuntimeInRuntime ? "" : "prewarm";
    PW_ASSIGN(std::string pod, node_.run_pod(pc, handler));
    struct Remove {
      cri::Client& cri;
      std::string pod;
      ~Remove() {
        (void)cri.stop_pod_sandbox(pod);
        (void)cri.remove_pod_sandbox(pod);
      }
    } remove{cri, pod};
    t.sandbox_ms = ms_since(t0);
    PW_ASSIGN(v1::PodSandboxStatus st, cri.pod_sandbox_status(pod));
    const std::string ip = st.network().ip();
    auto t1 = Clock::now();
    PW_ASSIGN(std::string cid, cri.create_container(pod, cc, pc));
    PW_TRY(cri.start_container(cid));
    if (!wait_healthy(ip, std::chrono::seconds(120)))
      return Error(ErrorKind::kUnavailable, std::string(kind_name(kind)) + " pod " + name +
                                                " never answered at " + ip);
    t.container_ms = ms_since(t1);
    t.total_ms = ms_since(t0);
    // Whether it was restored (or fell back to a cold start). prewarm writes the in-pod
    // outcome once its own probe passed, a moment after the app first answers.
    for (auto deadline = Clock::now() + std::chrono::seconds(5); Clock::now() < deadline;
         std::this_thread::sleep_for(std::chrono::milliseconds(20))) {
      json o;
      if (kind == Kind::kNative) {
        auto text = fs::read_file("/run/prewarm/pods/" + cid + ".json", 1 << 20);
        if (text.ok()) o = json::parse(*text, nullptr, false);
      } else if (kind == Kind::kRuntimeInRuntime) {
        auto ex = cri.exec_sync(cid, {"/bin/cat", "/run/prewarm/outcome.json"});
        if (ex.ok()) o = json::parse(ex->stdout_data, nullptr, false);
      }
      if (o.is_object()) {
        t.restored = o.value("restored", false);
        t.restore_ms = o.value("restoreMs", 0.0);
        break;
      }
      if (kind == Kind::kCold || kind == Kind::kMachinery) break;
    }
    return t;
  }

 private:
  testing::CriNode& node_;
  Env env_;
  std::string app_image_id_;
};

json summary(const std::vector<PodTimes>& v) {
  std::vector<double> s, c, t, r;
  int restored = 0;
  for (const auto& p : v) {
    s.push_back(p.sandbox_ms);
    c.push_back(p.container_ms);
    t.push_back(p.total_ms);
    if (p.restore_ms > 0) r.push_back(p.restore_ms);
    restored += p.restored;
  }
  json out = {{"sandbox_median_ms", median(s)}, {"container_median_ms", median(c)},
              {"total_median_ms", median(t)},  {"total_samples_ms", t},
              {"container_samples_ms", c},     {"restored", restored}};
  if (!r.empty()) out["runtime_restore_median_ms"] = median(r);
  return out;
}

}  // namespace

int bench_main(int argc, char** argv);

int main(int argc, char** argv) {
  // Exceptions end the run through the destructors (the node's stop() removes its pods).
  try {
    return bench_main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench pods: %s\n", e.what());
    return 1;
  }
}

int bench_main(int argc, char** argv) {
  int runs = 5, concurrency = 5;
  stdfs::path spec_file = PREWARM_SOURCE_DIR "/examples/python/spec.yaml";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runs") runs = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--concurrency") concurrency = std::max(1, std::atoi(argv[i + 1]));
    else if (a == "--spec") spec_file = argv[i + 1];
  }
  if (auto why = testing::cri_skip_reason(); !why.empty()) {
    std::fprintf(stderr, "bench pods: cannot run here: %s\n", why.c_str());
    return 1;
  }
  Env env;
  env.work = "/var/tmp/prewarm-bench-pods";
  (void)fs::remove_all(env.work);
  must(fs::make_dirs(env.work, 0700), "work dir");
  env.vars = {"PREWARM_STATE_DIR=" + (env.work / "state").string(),
              "PREWARM_CACHE_DIR=" + (env.work / "cache").string(), "PREWARM_BRIDGE=pwbrpods",
              // Outside prewarm's default 10.89.0.0/16, whose instances the host would route
              // to this bridge otherwise.
              "PREWARM_SUBNET=10.91.251.0/24"};

  // The app's container image: the example's base rootfs plus its files, as an OCI archive.
  spec::AppSpec app = must(spec::load_spec(spec_file), "spec");
  say("preparing the base rootfs of " + app.name);
  rootfs::Base base = must(rootfs::prepare_base(app.rootfs, "/var/cache/prewarm/rootfs",
                                                [](const std::string& m) { say(m); }),
                           "base rootfs");
  const stdfs::path layer = env.work / "app-files";
  must(fs::make_dirs(layer, 0755), "app files");
  must(rootfs::inline_sources(app.files), "app files");
  must(rootfs::place_files(app.files, layer), "app files");
  rootfs::Overlay ov = must(rootfs::mount_overlay({layer, base.dir}, env.work / "app-image"),
                            "app image rootfs");
  ociimage::ImageConfig ic;
  ic.entrypoint = app.argv();
  for (const auto& [k, v] : app.env) ic.env.push_back(k + "=" + v);
  ic.env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  ic.working_dir = app.working_dir;
  ic.exposed_ports = {"8080/tcp"};
  ociimage::WriteOptions wo;
  wo.name = kAppImage;
  wo.gzip_level = 1;
  wo.skip_special_files = true;
  const stdfs::path archive = env.work / "pyservice.tar";
  say("writing the app's image " + std::string(kAppImage));
  auto t_img = Clock::now();
  auto written_r = ociimage::write_archive(ov.merged, ic, wo, archive);
  (void)rootfs::unmount(ov.merged);
  ociimage::WrittenImage written = must(std::move(written_r), "app image");
  say("  " + std::to_string(written.layer_size / 1000000) + " MB in " +
      std::to_string(static_cast<int>(ms_since(t_img))) + " ms");

  // The checkpoint, baked from that same image.
  spec::AppSpec bake = app;
  bake.name = kCheckpoint;
  bake.rootfs = {};
  bake.rootfs.kind = spec::RootfsKind::kImage;
  bake.rootfs.image = "oci-archive:" + archive.string() + ":" + kAppImage;
  bake.files.clear();
  must(fs::write_file(env.work / "spec.yaml", spec::to_yaml(bake), 0644), "bake spec");
  say("baking " + std::string(kCheckpoint) + " from the image");
  auto baked = run_cli(env, {"bake", (env.work / "spec.yaml").string()});
  if (baked.status != 0) die("bake", Error(baked.err));
  auto self = run_cli(env, {"self-image", (env.work / "prewarm.tar").string(), "--name", kPrewarmImage});
  if (self.status != 0) die("self-image", Error(self.err));

  // The node: containerd whose "prewarm" handler is prewarm-runtime with this state dir.
  std::string script = "#!/bin/sh\n";
  for (const auto& e : env.vars) script += "export " + e + "\n";
  script += std::string("exec ") + PREWARM_BINARY + "-runtime \"$@\"\n";
  must(fs::write_file(env.work / "prewarm-runtime", script, 0755), "runtime script");
  testing::CriNodeOptions no;
  no.pause_binary = PREWARM_CRI_PAUSE_BINARY;
  no.prewarm_binary = (env.work / "prewarm-runtime").string();
  auto node = must(testing::CriNode::start(no), "containerd node");
  say("importing the images into containerd");
  must(node->import_archive(archive, kAppImage), "import app image");
  must(node->import_archive(env.work / "prewarm.tar", kPrewarmImage), "import prewarm image");
  ociimage::ImageConfig tiny;
  tiny.entrypoint = {"/bin/counter"};
  (void)must(node->import_rootfs(PREWARM_EXAMPLE_TINY_ROOTFS, tiny, kTinyImage), "tiny image");

  Bench bench(*node, env, written.config_digest);
  json out = {{"benchmark", "pods"},
              {"example", app.name},
              {"runs", runs},
              {"concurrency", concurrency},
              {"machine", "see README: name the machine the numbers came from"}};
  std::map<std::string, std::vector<PodTimes>> single;
  std::vector<double> run_direct, run_runc;
  int n = 0;
  // Rotating order, so that drift hits every kind alike.
  for (int r = 0; r < runs; ++r) {
    for (Kind k : {Kind::kNative, Kind::kRuntimeInRuntime, Kind::kCold, Kind::kMachinery}) {
      std::string name = std::string("p") + std::to_string(n++);
      say(std::string(kind_name(k)) + " pod, run " + std::to_string(r + 1));
      single[kind_name(k)].push_back(must(bench.start(k, name), kind_name(k)));
    }
    for (const char* rt : {"criu", "runc"}) {
      auto run = run_cli(env, {"--runtime", rt, "run", kCheckpoint, "--json"});
      if (run.status != 0) die("prewarm run", Error(run.err));
      auto j = json::parse(run.out, nullptr, false);
      double ms = j.is_array() && !j.empty() ? j[0].value("readyMilliseconds", 0.0) : 0.0;
      (rt == std::string("criu") ? run_direct : run_runc).push_back(ms);
      (void)run_cli(env, {"rm", "--all"});
    }
  }
  json single_json;
  for (const auto& [k, v] : single) single_json[k] = summary(v);
  out["one_pod"] = single_json;
  out["prewarm_run_ready_median_ms"] = {{"criu", median(run_direct)}, {"runc", median(run_runc)}};

  // K pods at once: wall time until all answer.
  json many;
  for (Kind k : {Kind::kNative, Kind::kRuntimeInRuntime, Kind::kCold}) {
    say(std::to_string(concurrency) + " " + kind_name(k) + " pods at once");
    auto t0 = Clock::now();
    std::vector<std::future<Result<PodTimes>>> futs;
    for (int i = 0; i < concurrency; ++i)
      futs.push_back(std::async(std::launch::async, [&, i] {
        return bench.start(k, std::string("c") + std::to_string(n + i));
      }));
    n += concurrency;
    std::vector<PodTimes> each;
    for (auto& f : futs) each.push_back(must(f.get(), kind_name(k)));
    json s = summary(each);
    s["all_ready_ms"] = ms_since(t0);
    many[kind_name(k)] = s;
  }
  out["pods_at_once"] = many;

  const double cold = single_json["cold"]["total_median_ms"];
  const double native = single_json["native_restore"]["total_median_ms"];
  const double rinr = single_json["runtime_in_runtime"]["total_median_ms"];
  const double native_c = single_json["native_restore"]["container_median_ms"];
  const double machinery = single_json["machinery_tiny_cold"]["container_median_ms"];
  out["ratios"] = {
      {"cold_over_native_total", native > 0 ? cold / native : 0},
      {"cold_over_runtime_in_runtime_total", rinr > 0 ? cold / rinr : 0},
      {"native_container_over_prewarm_run_criu", median(run_direct) > 0 ? native_c / median(run_direct) : 0},
      {"native_container_over_prewarm_run_runc", median(run_runc) > 0 ? native_c / median(run_runc) : 0},
      {"native_container_less_machinery_over_prewarm_run_criu",
       median(run_direct) > 0 ? (native_c - machinery) / median(run_direct) : 0}};
  std::printf("%s\n", out.dump(2).c_str());
  Status st = node->stop();
  if (!st.ok()) say("node cleanup: " + st.error().to_string());
  (void)run_cli(env, {"rm", "--all"});
  // The bridge `prewarm run` made for the comparison, and its address leases.
  SpawnOptions del;
  del.argv = {"ip", "link", "del", "pwbrpods"};
  (void)run_capture(del, std::chrono::seconds(10));
  (void)fs::remove_all("/run/prewarm/net/pwbrpods");
  (void)fs::remove_all(env.work);
  return 0;
}
