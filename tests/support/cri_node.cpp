// CriNode: containerd's config, start, image imports, and the teardown that leaves nothing.
#include "support/cri_node.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kCniBinDir = "/usr/lib/cni";
constexpr const char* kCgroupFs = "/sys/fs/cgroup";

std::string read_text(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The NUL-separated command line of a process ("" if it is gone).
std::string cmdline_of(pid_t pid) {
  std::string s = read_text("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator("/proc", ec)) {
    const std::string n = e.path().filename().string();
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos)
      out.push_back(static_cast<pid_t>(std::stol(n)));
  }
  return out;
}

}  // namespace

bool process_running(pid_t pid) {
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(") ");
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  char state = stat[paren + 2];
  return state != 'Z' && state != 'X' && state != 'x';
}

namespace {

void append(std::string& errors, const std::string& line) {
  if (!errors.empty()) errors += "\n";
  errors += line;
}

// Mount points at or below dir (from /proc/self/mountinfo).
std::vector<std::string> mounts_under(const stdfs::path& dir) {
  std::vector<std::string> out;
  const std::string d = dir.string();
  for (const auto& m : fs::mount_points())
    if (m == d || m.rfind(d + "/", 0) == 0) out.push_back(m);
  return out;
}

}  // namespace

std::string cri_skip_reason() {
  if (::geteuid() != 0) return "needs root (containerd, runc, CNI, mounts, namespaces)";
  for (const char* tool : {"containerd", "ctr", "runc"})
    if (find_executable(tool).empty())
      return std::string(tool) + " not installed (scripts/setup.sh installs containerd and runc)";
  for (const char* plugin : {"bridge", "host-local", "loopback"})
    if (::access((std::string(kCniBinDir) + "/" + plugin).c_str(), X_OK) != 0)
      return std::string("CNI plugin ") + kCniBinDir + "/" + plugin +
             " missing (Debian: containernetworking-plugins)";
  return {};
}

Result<std::unique_ptr<CriNode>> CriNode::start(CriNodeOptions options) {
  if (auto why = cri_skip_reason(); !why.empty())
    return Error(ErrorKind::kIncompatibleHost, "cannot run a CRI node: " + why);
  std::unique_ptr<CriNode> node(new CriNode());
  node->runc_ = find_executable("runc");
  node->tag_ = fs::random_hex(3);
  std::string tmpl = (options.parent_dir / ("prewarm-cri-" + node->tag_ + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::sys("mkdtemp", errno, tmpl);
  node->dir_ = tmpl;
  node->stopped_ = false;  // from here on, stop() has something to clean
  node->cgroup_root_ = "prewarm-cri-" + node->tag_;
  node->bridge_ = "pwcri" + node->tag_;
  node->network_ = "prewarm-cri-" + node->tag_;
  // 10.77.0.0/16 is prewarm's test range for CRI nodes (prewarm's default is 10.89.0.0/16, its
  // test bridges use 10.90.0.0/16, Podman's default 10.88.0.0/16); one /24 per node that no
  // interface overlaps, looked for from one its tag picks.
  int octet = 0;
  try {
    octet = free_test_octet(std::stoul(node->tag_, nullptr, 16), 1, "10.77");
  } catch (const std::exception& e) {
    return Error(std::string("the node's pod network: ") + e.what());
  }
  node->subnet_ = "10.77." + std::to_string(octet) + ".0/24";

  PW_TRY(node->write_config(options));
  PW_TRY(node->build_pause_image(options.pause_binary));

  UniqueFd log(::open(node->log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log.valid()) return Error::sys("open", errno, node->log_path().string());
  SpawnOptions so;
  so.argv = {find_executable("containerd"), "--config", (node->dir_ / "config.toml").string()};
  so.stdout_fd = log.get();
  so.stderr_fd = log.get();
  PW_ASSIGN(node->containerd_, spawn(so));

  // The socket appears once containerd has loaded its plugins.
  auto deadline = std::chrono::steady_clock::now() + options.ready_timeout;
  while (::access(node->socket().c_str(), F_OK) != 0) {
    if (std::chrono::steady_clock::now() > deadline || ::kill(node->containerd_.pid(), 0) != 0)
      return Error(ErrorKind::kUnavailable,
                   "containerd did not create its socket " + node->socket() + "; its log:\n" +
                       node->log_tail(4096));
    std::this_thread::sleep_for(20ms);
  }
  auto client = cri::Client::connect(node->socket());
  if (!client.ok())
    return std::move(client).error().with_detail(node->log_tail(4096));
  node->client_ = std::make_unique<cri::Client>(std::move(client).value());
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (Status st = node->client_->wait_ready(std::max(left, std::chrono::milliseconds(1000)));
      !st.ok())
    return std::move(st).error().with_detail(node->log_tail(4096));
  PW_TRY(node->import_archive(node->dir_ / "pause.tar", kPauseImage));
  return node;
}

Status CriNode::write_config(const CriNodeOptions& options) {
  PW_TRY(fs::make_dirs(dir_ / "cni", 0755));
  PW_TRY(fs::make_dirs(dir_ / "pods", 0755));
  nlohmann::json conflist = {
      {"cniVersion", "0.4.0"},
      {"name", network_},
      {"plugins",
       nlohmann::json::array(
           {{{"type", "bridge"},
             {"bridge", bridge_},
             {"isGateway", true},
             {"ipMasq", false},
             {"hairpinMode", true},
             {"ipam",
              {{"type", "host-local"},
               // The lease files live in the node's dir, not /var/lib/cni.
               {"dataDir", (dir_ / "cni-ipam").string()},
               {"ranges", nlohmann::json::array({nlohmann::json::array({{{"subnet", subnet_}}})})},
               {"routes", nlohmann::json::array({{{"dst", "0.0.0.0/0"}}})}}}},
            {{"type", "loopback"}}})},
  };
  PW_TRY(fs::write_file(dir_ / "cni" / "10-prewarm-cri.conflist", conflist.dump(2), 0644));

  const std::string d = dir_.string();
  const std::string binary = options.prewarm_binary.empty() ? runc_ : options.prewarm_binary;
  std::string toml =
      "version = 2\n"
      "root = \"" + d + "/root\"\n"
      "state = \"" + d + "/state\"\n"
      // Snapshotters and plugins this node does not use (and /opt/containerd it need not make).
      "disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\", "
      "\"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", "
      "\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.internal.v1.opt\", "
      "\"io.containerd.tracing.processor.v1.otlp\"]\n"
      "[grpc]\n"
      "  address = \"" + d + "/containerd.sock\"\n"
      "[ttrpc]\n"
      "  address = \"" + d + "/containerd.sock.ttrpc\"\n"
      "[debug]\n"
      "  level = \"info\"\n"
      "[plugins.\"io.containerd.grpc.v1.cri\"]\n"
      "  sandbox_image = \"" + std::string(kPauseImage) + "\"\n"
      // Without CAP_SYS_RESOURCE every sandbox fails otherwise (see KUBERNETES.md).
      "  restrict_oom_score_adj = true\n"
      "  stream_server_address = \"127.0.0.1\"\n"
      "  stream_server_port = \"0\"\n"
      "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
      "    bin_dir = \"" + kCniBinDir + "\"\n"
      "    conf_dir = \"" + d + "/cni\"\n"
      "    max_conf_num = 1\n"
      "  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
      "    snapshotter = \"overlayfs\"\n"
      "    default_runtime_name = \"runc\"\n"
      "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
      "      runtime_type = \"io.containerd.runc.v2\"\n"
      "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
      "        BinaryName = \"" + runc_ + "\"\n"
      // runc's state (its --root) in the node's dir, not /run/containerd/runc.
      "        Root = \"" + d + "/runc\"\n"
      "    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes." + kPrewarmHandler + "]\n"
      "      runtime_type = \"io.containerd.runc.v2\"\n"
      "      pod_annotations = [\"prewarm.dev/*\"]\n"
      "      container_annotations = [\"prewarm.dev/*\"]\n"
      "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes." + kPrewarmHandler +
      ".options]\n"
      "        BinaryName = \"" + binary + "\"\n"
      "        Root = \"" + d + "/runc\"\n" +
      options.extra_config;
  return fs::write_file(dir_ / "config.toml", toml, 0644);
}

Status CriNode::build_pause_image(const stdfs::path& pause_binary) {
  if (pause_binary.empty() || ::access(pause_binary.c_str(), X_OK) != 0)
    return Error(ErrorKind::kInvalidInput,
                 "pause binary '" + pause_binary.string() +
                     "' is not an executable file (CriNodeOptions::pause_binary: the static "
                     "program built from tests/cri/pause.c)");
  stdfs::path rootfs = dir_ / "pause-rootfs";
  for (const char* sub : {"dev", "proc", "sys", "etc"})
    PW_TRY(fs::make_dirs(rootfs / sub, 0755));
  std::error_code ec;
  stdfs::copy_file(pause_binary, rootfs / "pause", ec);
  if (ec) return Error::sys("copy", ec.value(), pause_binary.string());
  if (::chmod((rootfs / "pause").c_str(), 0755) != 0)
    return Error::sys("chmod", errno, (rootfs / "pause").string());
  ociimage::ImageConfig config;
  config.entrypoint = {"/pause"};
  PW_TRY(ociimage::write_archive(rootfs, config, {.name = kPauseImage}, dir_ / "pause.tar"));
  (void)fs::remove_all(rootfs);
  return ok_status();
}

std::string CriNode::log_tail(size_t max_bytes) const {
  std::string log = read_text(log_path());
  if (log.size() > max_bytes) log = "...\n" + log.substr(log.size() - max_bytes);
  return log;
}

Status CriNode::import_archive(const stdfs::path& archive, const std::string& name) {
  auto out = run_checked({find_executable("ctr"), "-a", socket(), "-n", "k8s.io", "images",
                          "import", archive.string()},
                         std::chrono::minutes(5));
  if (!out.ok()) return std::move(out).error().with_context("import " + archive.string());
  // The CRI learns of the image from containerd's events: wait until it lists it.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    PW_ASSIGN(auto image, client_->image_status(name));
    if (image.has_value()) return ok_status();
    if (std::chrono::steady_clock::now() > deadline)
      return Error(ErrorKind::kUnavailable,
                   "imported " + archive.string() + " but the CRI does not list " + name +
                       " after 30 s; ctr said: " + *out);
    std::this_thread::sleep_for(20ms);
  }
}

Result<ociimage::WrittenImage> CriNode::import_rootfs(const stdfs::path& rootfs,
                                                      const ociimage::ImageConfig& config,
                                                      const std::string& name) {
  stdfs::path archive = dir_ / ("image-" + fs::random_hex(4) + ".tar");
  PW_ASSIGN(auto written, ociimage::write_archive(rootfs, config, {.name = name}, archive));
  Status st = import_archive(archive, name);
  (void)fs::remove_all(archive);
  PW_TRY(std::move(st));
  return written;
}

cri::PodOptions CriNode::pod_options(const std::string& name) {
  cri::PodOptions pod;
  pod.name = name;
  std::string h = fs::random_hex(16);
  pod.uid = h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" +
            h.substr(16, 4) + "-" + h.substr(20, 12);
  pod.log_directory = (dir_ / "pods" / (pod.k8s_namespace + "_" + name + "_" + pod.uid)).string();
  (void)fs::make_dirs(pod.log_directory, 0755);
  pod.cgroup_parent = "/" + cgroup_root_ + "/pod" + pod.uid;
  return pod;
}

Result<std::string> CriNode::run_pod(const runtime::v1::PodSandboxConfig& config,
                                     const std::string& runtime_handler) {
  PW_ASSIGN(std::string id, client_->run_pod_sandbox(config, runtime_handler));
  // containerd's verbose info holds the sandbox's OCI spec, which names the netns it made.
  auto st = client_->pod_sandbox_status_verbose(id);
  if (st.ok()) {
    auto it = st->info().find("info");
    if (it != st->info().end()) {
      auto info = nlohmann::json::parse(it->second, nullptr, false);
      if (!info.is_discarded() && info.contains("runtimeSpec")) {
        for (const auto& ns : info["runtimeSpec"]["linux"]["namespaces"])
          if (ns.value("type", "") == "network" && !ns.value("path", "").empty())
            netns_paths_.push_back(ns.value("path", ""));
      }
    }
  }
  return id;
}

std::vector<pid_t> CriNode::shim_pids() const {
  // The shim is started as `containerd-shim-runc-v2 -namespace N -id ID -address <our socket>`.
  std::vector<pid_t> out;
  const std::string needle = "-address " + socket() + " ";
  for (pid_t pid : all_pids()) {
    std::string cmd = cmdline_of(pid) + " ";
    if (cmd.find("containerd-shim") != std::string::npos && cmd.find(needle) != std::string::npos)
      out.push_back(pid);
  }
  return out;
}

// This node's cgroup directories under every hierarchy, deepest first.
std::vector<stdfs::path> CriNode::cgroup_dirs() const {
  std::vector<stdfs::path> out;
  std::error_code ec;
  for (const auto& h : stdfs::directory_iterator(kCgroupFs, ec)) {
    stdfs::path top = h.path() / cgroup_root_;
    std::error_code ec2;
    if (!stdfs::is_directory(top, ec2)) continue;
    for (auto it = stdfs::recursive_directory_iterator(top, ec2);
         !ec2 && it != stdfs::recursive_directory_iterator(); it.increment(ec2))
      if (it->is_directory(ec2)) out.push_back(it->path());
    out.push_back(top);
  }
  std::sort(out.begin(), out.end(), [](const stdfs::path& a, const stdfs::path& b) {
    return a.string().size() > b.string().size();
  });
  return out;
}

std::vector<pid_t> CriNode::cgroup_pids() const {
  std::vector<pid_t> out;
  for (const auto& d : cgroup_dirs()) {
    std::istringstream in(read_text(d / "cgroup.procs"));
    for (pid_t p; in >> p;)
      if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  return out;
}

std::string CriNode::leftovers(std::chrono::milliseconds shim_grace) {
  std::string found;
  if (client_ && containerd_.pid() > 0) {
    if (auto pods = client_->list_pod_sandboxes(); pods.ok()) {
      for (const auto& p : *pods) append(found, "CRI pod " + p.id() + " (" + p.metadata().name() + ")");
    } else {
      append(found, "cannot list pods: " + pods.error().message());
    }
    if (auto cs = client_->list_containers(); cs.ok()) {
      for (const auto& c : *cs)
        append(found, "CRI container " + c.id() + " (" + c.metadata().name() + ")");
    } else {
      append(found, "cannot list containers: " + cs.error().message());
    }
  }
  // A shim exits a moment after its last task is deleted: only one that stays is left over.
  auto shims = shim_pids();
  for (auto deadline = std::chrono::steady_clock::now() + shim_grace;
       !shims.empty() && std::chrono::steady_clock::now() < deadline; shims = shim_pids())
    std::this_thread::sleep_for(20ms);
  for (pid_t p : shims) append(found, "shim " + std::to_string(p) + ": " + cmdline_of(p));
  for (pid_t p : cgroup_pids())
    append(found, "process " + std::to_string(p) + " in the node's cgroups: " + cmdline_of(p));
  for (const auto& m : mounts_under(dir_)) append(found, "mount " + m);
  for (const auto& n : netns_paths_) {
    struct stat st {};
    if (::lstat(n.c_str(), &st) == 0) append(found, "netns " + n);
  }
  // Container cgroups: anything below a pod's cgroup (root/pod<uid>/<container id>).
  for (const auto& d : cgroup_dirs()) {
    auto rel = d.lexically_relative(kCgroupFs);
    if (std::distance(rel.begin(), rel.end()) >= 4) append(found, "cgroup " + d.string());
  }
  return found;
}

Status CriNode::stop() {
  if (stopped_) return ok_status();
  stopped_ = true;
  std::string errors;

  // 1. Every pod and container, as the kubelet would remove them.
  const std::vector<pid_t> shims = shim_pids();
  if (client_ && containerd_.pid() > 0) {
    if (auto pods = client_->list_pod_sandboxes(); pods.ok()) {
      for (const auto& p : *pods) {
        if (Status s = client_->stop_pod_sandbox(p.id()); !s.ok()) append(errors, s.error().message());
        if (Status s = client_->remove_pod_sandbox(p.id()); !s.ok())
          append(errors, s.error().message());
      }
    } else {
      append(errors, pods.error().message());
    }
    if (auto cs = client_->list_containers(); cs.ok()) {
      for (const auto& c : *cs)
        if (Status s = client_->remove_container(c.id()); !s.ok()) append(errors, s.error().message());
    }
  }
  client_.reset();

  // 2. containerd, by the PID it was started with.
  if (containerd_.pid() > 0) {
    containerd_.kill(SIGTERM);
    if (auto w = containerd_.wait(10s); !w.ok()) {
      append(errors, "containerd (pid " + std::to_string(containerd_.pid()) +
                         ") ignored SIGTERM for 10 s; killed");
      containerd_.kill(SIGKILL);
      (void)containerd_.wait(10s);
    }
  }

  // A shim exits shortly after its last task is deleted; give them that moment.
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < deadline &&
       std::any_of(shims.begin(), shims.end(), process_running);)
    std::this_thread::sleep_for(20ms);

  // 3. Shims of this containerd and processes in this node's cgroups: left only if step 1
  //    failed. Killed by PID, each one found by its cmdline or cgroup.
  for (int round = 0; round < 50; ++round) {
    auto pids = shim_pids();
    auto in_cgroups = cgroup_pids();
    pids.insert(pids.end(), in_cgroups.begin(), in_cgroups.end());
    if (pids.empty()) break;
    for (pid_t p : pids) {
      if (round == 0) append(errors, "killing leftover process " + std::to_string(p) + ": " + cmdline_of(p));
      ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(100ms);
  }

  // 4. Mounts under the node's dir (rootfs overlays, sandbox /dev/shm), and netns it made.
  if (!mounts_under(dir_).empty()) append(errors, "mounts left under " + dir_.string());
  if (Status s = fs::unmount_under(dir_); !s.ok()) append(errors, s.error().message());
  for (const auto& n : netns_paths_) {
    struct stat st {};
    if (::lstat(n.c_str(), &st) != 0) continue;
    append(errors, "netns left: " + n);
    ::umount2(n.c_str(), MNT_DETACH);
    ::unlink(n.c_str());
  }

  // 5. The bridge and CNI's state for this network.
  if (::access(("/sys/class/net/" + bridge_).c_str(), F_OK) == 0)
    if (auto r = run_checked({"ip", "link", "del", bridge_}); !r.ok())
      append(errors, r.error().message());
  (void)fs::remove_all(stdfs::path("/var/lib/cni/networks") / network_);
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator("/var/lib/cni/results", ec))
    if (e.path().filename().string().rfind(network_ + "-", 0) == 0)
      (void)fs::remove_all(e.path());

  // 6. Cgroups: pod cgroups are the kubelet's to remove; container cgroups should be gone.
  for (const auto& d : cgroup_dirs())
    if (::rmdir(d.c_str()) != 0 && errno != ENOENT)
      append(errors, "cannot remove cgroup " + d.string() + ": " + std::strerror(errno));

  // 7. The node's dir, with containerd's root, state and log.
  if (Status s = fs::remove_all(dir_); !s.ok()) append(errors, s.error().message());
  if (!errors.empty()) return Error("CRI node " + dir_.string() + " teardown:\n" + errors);
  return ok_status();
}

CriNode::~CriNode() {
  if (Status s = stop(); !s.ok()) fprintf(stderr, "%s\n", s.error().message().c_str());
}

}  // namespace prewarm::testing
