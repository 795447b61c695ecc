// Pods through a real containerd's CRI, the way the kubelet runs them: the tiny example's
// counter as an OCI image, run by the default runc handler and by the "prewarm" handler (here
// pointed at plain runc), checked from the outside (HTTP at the pod IP, exec, logs, exit codes)
// and checked to leave nothing behind. Prints the sandbox and container start times.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "cri/client.h"
#include "cri/configs.h"
#include "oci/criu_direct.h"
#include "support/cli.h"
#include "support/cri_node.h"
#include "support/engine_fixture.h"
#include "support/registry_server.h"
#include "support/files.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace v1 = ::runtime::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kTinyImage = "prewarm.test/tiny:1";

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// One HTTP/1.0 GET; the body, or "" if anything failed (the caller retries or compares).
std::string http_get(const std::string& ip, int port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) return "";
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 &&
      errno != EINPROGRESS)
    return "";
  pollfd p{fd.get(), POLLOUT, 0};
  if (::poll(&p, 1, 500) != 1) return "";
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + ip + "\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
    return "";
  std::string resp;
  char buf[4096];
  for (;;) {
    pollfd r{fd.get(), POLLIN, 0};
    if (::poll(&r, 1, 2000) != 1) return "";
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return "";
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  if (resp.rfind("HTTP/1.", 0) != 0 || resp.find(" 200 ") == std::string::npos) return "";
  size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// Polls /healthz until the counter answers "ok"; false after `timeout`.
bool wait_http(const std::string& ip, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (http_get(ip, 8080, "/healthz") == "ok\n") return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// The "info" JSON of a verbose status (containerd's), or null.
template <class Resp>
nlohmann::json info_of(const Resp& resp) {
  auto it = resp.info().find("info");
  if (it == resp.info().end()) return nullptr;
  auto j = nlohmann::json::parse(it->second, nullptr, false);
  return j.is_discarded() ? nlohmann::json(nullptr) : j;
}

class CriTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cri_skip_reason(); !why.empty()) GTEST_SKIP() << why;
    CriNodeOptions options;
    options.pause_binary = PREWARM_CRI_PAUSE_BINARY;
    options.prewarm_binary = prewarm_binary_;
    auto t0 = Clock::now();
    auto node = CriNode::start(options);
    ASSERT_TRUE(node.ok()) << node.error().to_string();
    node_ = std::move(node).value();
    std::printf("[cri] node %s: containerd pid %d, bridge %s, subnet %s, ready in %.0f ms\n",
                node_->dir().c_str(), node_->containerd_pid(), node_->bridge().c_str(),
                node_->subnet().c_str(), ms_since(t0));
    ociimage::ImageConfig tiny;
    tiny.entrypoint = {"/bin/counter"};
    tiny.exposed_ports = {"8080/tcp"};
    auto img = node_->import_rootfs(PREWARM_EXAMPLE_TINY_ROOTFS, tiny, kTinyImage);
    ASSERT_TRUE(img.ok()) << img.error().to_string();
    tiny_ = *img;
  }

  void TearDown() override {
    if (!node_) return;
    if (HasFailure()) std::fprintf(stderr, "containerd log (tail):\n%s\n", node_->log_tail().c_str());
    Status st = node_->stop();
    EXPECT_TRUE(st.ok()) << st.error().to_string();
  }

  // The pod IP, checked to be in the node's subnet.
  std::string pod_ip(const std::string& pod_id) {
    auto st = node_->cri().pod_sandbox_status(pod_id);
    EXPECT_TRUE(st.ok()) << st.error().to_string();
    if (!st.ok()) return "";
    EXPECT_EQ(st->state(), v1::SANDBOX_READY);
    std::string ip = st->network().ip();
    std::string prefix = node_->subnet().substr(0, node_->subnet().rfind('.') + 1);
    EXPECT_EQ(ip.rfind(prefix, 0), 0u) << "pod IP " << ip << " not in " << node_->subnet();
    return ip;
  }

  std::unique_ptr<CriNode> node_;
  ociimage::WrittenImage tiny_;
  std::string prewarm_binary_;  // the "prewarm" handler's BinaryName ("" : runc)
};

class CriHandlerTest : public CriTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(CriHandlerTest, PodRunsServesExecsLogsStopsAndLeavesNothing) {
  const std::string handler = GetParam();
  auto& cri = node_->cri();

  auto pod = node_->pod_options("tiny");
  pod.annotations["prewarm.dev/test"] = "pod-annotation";
  v1::PodSandboxConfig pod_config = cri::kubelet_pod_config(pod);

  auto t_pod = Clock::now();
  auto pod_id = node_->run_pod(pod_config, handler);
  ASSERT_TRUE(pod_id.ok()) << pod_id.error().to_string();
  double sandbox_ms = ms_since(t_pod);
  std::string ip = pod_ip(*pod_id);
  ASSERT_FALSE(ip.empty());

  // The handler the pod was given, and which annotations reached the sandbox's OCI spec: the
  // "prewarm" handler passes prewarm.dev/* through, the default one does not.
  auto verbose = cri.pod_sandbox_status_verbose(*pod_id);
  ASSERT_TRUE(verbose.ok()) << verbose.error().to_string();
  nlohmann::json info = info_of(*verbose);
  ASSERT_TRUE(info.is_object()) << "no verbose info from containerd";
  EXPECT_EQ(info.value("runtimeHandler", ""), handler);
  auto sandbox_annotations = info["runtimeSpec"]["annotations"];
  EXPECT_EQ(sandbox_annotations.value("io.kubernetes.cri.container-type", ""), "sandbox");
  if (handler == CriNode::kPrewarmHandler) {
    EXPECT_EQ(sandbox_annotations.value("prewarm.dev/test", ""), "pod-annotation");
    EXPECT_EQ(info["runtimeOptions"].value("binary_name", ""), node_->runc_path());
  } else {
    EXPECT_FALSE(sandbox_annotations.contains("prewarm.dev/test"));
  }

  cri::ContainerOptions c;
  c.name = "counter";
  c.image = kTinyImage;
  c.annotations["prewarm.dev/role"] = "app";
  v1::ContainerConfig container_config = cri::kubelet_container_config(pod, c);

  auto t_create = Clock::now();
  auto cid = cri.create_container(*pod_id, container_config, pod_config);
  ASSERT_TRUE(cid.ok()) << cid.error().to_string();
  Status started = cri.start_container(*cid);
  ASSERT_TRUE(started.ok()) << started.error().to_string();
  ASSERT_TRUE(wait_http(ip, 30s)) << "the counter did not answer at " << ip << ":8080";
  double container_ms = ms_since(t_create);
  std::printf("[cri] handler '%s': RunPodSandbox %.1f ms; CreateContainer -> first HTTP answer "
              "%.1f ms (pod IP %s)\n",
              handler.c_str(), sandbox_ms, container_ms, ip.c_str());

  // Served from inside the pod: its hostname (the pod's UTS namespace) and, with the kubelet's
  // PID namespace per container, pid 1.
  std::string body = http_get(ip, 8080, "/");
  EXPECT_EQ(body, "count=1 hostname=tiny pid=1\n");

  auto cverbose = cri.container_status_verbose(*cid);
  ASSERT_TRUE(cverbose.ok()) << cverbose.error().to_string();
  nlohmann::json cinfo = info_of(*cverbose);
  ASSERT_TRUE(cinfo.is_object());
  auto container_annotations = cinfo["runtimeSpec"]["annotations"];
  EXPECT_EQ(container_annotations.value("io.kubernetes.cri.container-type", ""), "container");
  EXPECT_EQ(container_annotations.value("io.kubernetes.cri.sandbox-id", ""), *pod_id);
  EXPECT_EQ(container_annotations.contains("prewarm.dev/role"),
            handler == CriNode::kPrewarmHandler);
  // The container's cgroup is under the pod's, under the node's identifiable root.
  std::string cgroups_path = cinfo["runtimeSpec"]["linux"].value("cgroupsPath", "");
  EXPECT_EQ(cgroups_path, pod.cgroup_parent + "/" + *cid);
  EXPECT_TRUE(std::filesystem::is_directory("/sys/fs/cgroup/memory" + cgroups_path))
      << cgroups_path;

  // ExecSync: output, error output and exit code.
  auto ex = cri.exec_sync(*cid, {"/bin/cat", "/etc/hostname"}, 10s);
  ASSERT_TRUE(ex.ok()) << ex.error().to_string();
  EXPECT_EQ(ex->stdout_data, "tiny\n");
  EXPECT_EQ(ex->exit_code, 0);
  ex = cri.exec_sync(*cid, {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, 10s);
  ASSERT_TRUE(ex.ok()) << ex.error().to_string();
  EXPECT_EQ(ex->stdout_data, "out\n");
  EXPECT_EQ(ex->stderr_data, "err\n");
  EXPECT_EQ(ex->exit_code, 3);

  // While the pod runs, the leftover check sees every part of it (so that its "" at the end
  // means something).
  std::string live = node_->leftovers(0ms);
  for (const char* what : {"CRI pod ", "CRI container ", "shim ", "in the node's cgroups",
                           "mount ", "netns ", "cgroup /sys/fs/cgroup/"})
    EXPECT_NE(live.find(what), std::string::npos) << "'" << what << "' not in:\n" << live;

  auto status = cri.container_status(*cid);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(status->state(), v1::CONTAINER_RUNNING);
  EXPECT_GT(status->started_at(), 0);
  const std::string log_path = pod.log_directory + "/counter/0.log";
  EXPECT_EQ(status->log_path(), log_path);

  // The app's stdout, in the CRI log format: "<RFC 3339 time> stdout F <line>".
  std::string log;
  for (auto deadline = Clock::now() + 5s; Clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    log = slurp(log_path);
    if (log.find("counter listening on :8080") != std::string::npos) break;
  }
  EXPECT_NE(log.find(" stdout F counter listening on :8080\n"), std::string::npos) << log;

  // StopContainer sends SIGTERM; the counter exits 0 on it (a SIGKILL after the timeout would
  // read 137), well before the 20 s timeout.
  auto t_stop = Clock::now();
  Status stopped = cri.stop_container(*cid, 20s);
  ASSERT_TRUE(stopped.ok()) << stopped.error().to_string();
  EXPECT_LT(ms_since(t_stop), 10'000.0);
  status = cri.container_status(*cid);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(status->state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status->exit_code(), 0);
  EXPECT_EQ(status->reason(), "Completed");
  EXPECT_GE(status->finished_at(), status->started_at());
  EXPECT_EQ(http_get(ip, 8080, "/healthz"), "");

  Status removed = cri.remove_container(*cid);
  ASSERT_TRUE(removed.ok()) << removed.error().to_string();
  Status s = cri.stop_pod_sandbox(*pod_id);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  s = cri.remove_pod_sandbox(*pod_id);
  ASSERT_TRUE(s.ok()) << s.error().to_string();

  auto containers = cri.list_containers();
  ASSERT_TRUE(containers.ok()) << containers.error().to_string();
  EXPECT_TRUE(containers->empty());
  EXPECT_EQ(node_->leftovers(), "");
  auto missing = cri.container_status(*cid);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound) << missing.error().message();
}

INSTANTIATE_TEST_SUITE_P(Handlers, CriHandlerTest,
                         ::testing::Values(std::string(""), std::string(CriNode::kPrewarmHandler)),
                         [](const auto& info) {
                           return info.param.empty() ? std::string("runc") : info.param;
                         });

TEST_F(CriTest, TwoPodsGetDistinctIpsAndBothServe) {
  auto& cri = node_->cri();
  struct Pod {
    cri::PodOptions options;
    v1::PodSandboxConfig config;
    std::string id, ip, container;
  };
  std::vector<Pod> pods(2);
  for (size_t i = 0; i < pods.size(); ++i) {
    auto& p = pods[i];
    p.options = node_->pod_options("tiny-" + std::to_string(i));
    p.config = cri::kubelet_pod_config(p.options);
    auto t0 = Clock::now();
    auto id = node_->run_pod(p.config);
    ASSERT_TRUE(id.ok()) << id.error().to_string();
    p.id = *id;
    double sandbox_ms = ms_since(t0);
    p.ip = pod_ip(p.id);
    ASSERT_FALSE(p.ip.empty());
    auto t1 = Clock::now();
    auto cid = cri.create_container(
        p.id, cri::kubelet_container_config(p.options, {.name = "counter", .image = kTinyImage}),
        p.config);
    ASSERT_TRUE(cid.ok()) << cid.error().to_string();
    p.container = *cid;
    Status st = cri.start_container(p.container);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    ASSERT_TRUE(wait_http(p.ip, 30s)) << p.ip;
    std::printf("[cri] pod %zu: RunPodSandbox %.1f ms; CreateContainer -> first HTTP answer "
                "%.1f ms (pod IP %s)\n",
                i, sandbox_ms, ms_since(t1), p.ip.c_str());
  }
  EXPECT_NE(pods[0].ip, pods[1].ip);
  // Each answers with its own hostname and its own count: two separate processes.
  EXPECT_EQ(http_get(pods[0].ip, 8080, "/"), "count=1 hostname=tiny-0 pid=1\n");
  EXPECT_EQ(http_get(pods[1].ip, 8080, "/"), "count=1 hostname=tiny-1 pid=1\n");
  EXPECT_EQ(http_get(pods[0].ip, 8080, "/"), "count=2 hostname=tiny-0 pid=1\n");

  auto listed = cri.list_containers();
  ASSERT_TRUE(listed.ok()) << listed.error().to_string();
  EXPECT_EQ(listed->size(), 2u);

  // The kubelet's order on pod deletion: stop the sandbox (which stops its containers), then
  // remove it (which removes them).
  for (const auto& p : pods) {
    Status s = cri.stop_pod_sandbox(p.id);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    s = cri.remove_pod_sandbox(p.id);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
  }
  EXPECT_EQ(node_->leftovers(), "");
}

// The ImageService sees the imported archive as written: its name, and the config digest as
// the image id; RemoveImage removes it.
TEST_F(CriTest, ImportedImageIsListedAndRemovable) {
  auto& cri = node_->cri();
  auto images = cri.list_images();
  ASSERT_TRUE(images.ok()) << images.error().to_string();
  bool found = false;
  for (const auto& image : *images) {
    if (std::find(image.repo_tags().begin(), image.repo_tags().end(), kTinyImage) ==
        image.repo_tags().end())
      continue;
    found = true;
    EXPECT_EQ(image.id(), tiny_.config_digest);
    EXPECT_GT(image.size(), 0u);
  }
  EXPECT_TRUE(found) << "ListImages has no " << kTinyImage;
  auto status = cri.image_status(kTinyImage);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  ASSERT_TRUE(status->has_value());
  EXPECT_EQ((*status)->id(), tiny_.config_digest);

  Status removed = cri.remove_image(kTinyImage);
  ASSERT_TRUE(removed.ok()) << removed.error().to_string();
  status = cri.image_status(kTinyImage);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_FALSE(status->has_value());
}

// A test that fails half-way leaves a running pod: stop() must clear it all from the host.
TEST_F(CriTest, StopClearsARunningPodFromTheHost) {
  auto pod = node_->pod_options("abandoned");
  auto config = cri::kubelet_pod_config(pod);
  auto pod_id = node_->run_pod(config);
  ASSERT_TRUE(pod_id.ok()) << pod_id.error().to_string();
  auto cid = node_->cri().create_container(
      *pod_id, cri::kubelet_container_config(pod, {.name = "counter", .image = kTinyImage}),
      config);
  ASSERT_TRUE(cid.ok()) << cid.error().to_string();
  ASSERT_TRUE(node_->cri().start_container(*cid).ok());
  std::string ip = pod_ip(*pod_id);
  ASSERT_TRUE(wait_http(ip, 30s));

  auto shims = node_->shim_pids();
  EXPECT_FALSE(shims.empty());
  auto verbose = node_->cri().pod_sandbox_status_verbose(*pod_id);
  ASSERT_TRUE(verbose.ok());
  std::string netns;
  nlohmann::json info = info_of(*verbose);
  for (const auto& ns : info["runtimeSpec"]["linux"]["namespaces"])
    if (ns.value("type", "") == "network") netns = ns.value("path", "");
  ASSERT_FALSE(netns.empty());
  const auto dir = node_->dir();
  const std::string bridge = node_->bridge(), cgroup_root = node_->cgroup_root();

  Status st = node_->stop();
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  node_.reset();
  for (pid_t p : shims)
    EXPECT_FALSE(process_running(p)) << "shim " << p;
  EXPECT_EQ(http_get(ip, 8080, "/healthz"), "");
  EXPECT_FALSE(std::filesystem::exists(netns)) << netns;
  EXPECT_FALSE(std::filesystem::exists(dir)) << dir;
  EXPECT_FALSE(std::filesystem::exists("/sys/class/net/" + bridge)) << bridge;
  for (const char* h : {"memory", "pids", "cpu", "freezer", "unified", "systemd"})
    EXPECT_FALSE(std::filesystem::exists(std::string("/sys/fs/cgroup/") + h + "/" + cgroup_root))
        << h << "/" << cgroup_root;
  EXPECT_EQ(slurp("/proc/self/mountinfo").find(dir.string()), std::string::npos);
}

// CriNodeOptions::prewarm_binary is what the "prewarm" handler's shim runs in runc's place:
// here a wrapper that logs its arguments and hands them to runc.
TEST(CriNodeTest, PrewarmHandlerRunsTheGivenBinary) {
  if (auto why = cri_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir tmp("prewarm-cri-wrapper");
  const auto calls = tmp.path() / "calls.log";
  const auto wrapper = tmp.path() / "runtime-wrapper";
  spit(wrapper, "#!/bin/sh\necho \"$*\" >> " + calls.string() + "\nexec " +
                          find_executable("runc") + " \"$@\"\n");
  ASSERT_EQ(::chmod(wrapper.c_str(), 0755), 0);
  CriNodeOptions options;
  options.pause_binary = PREWARM_CRI_PAUSE_BINARY;
  options.prewarm_binary = wrapper.string();
  auto node = CriNode::start(options);
  ASSERT_TRUE(node.ok()) << node.error().to_string();

  auto pod = (*node)->pod_options("wrapped");
  auto pod_id = (*node)->run_pod(cri::kubelet_pod_config(pod), CriNode::kPrewarmHandler);
  ASSERT_TRUE(pod_id.ok()) << pod_id.error().to_string() << "\n" << (*node)->log_tail();
  // The shim ran the wrapper for the sandbox: runc's CLI, the bundle and the sandbox's id.
  std::string log = slurp(calls);
  EXPECT_NE(log.find("create --bundle"), std::string::npos) << log;
  EXPECT_NE(log.find("start " + *pod_id), std::string::npos) << log;
  // The default handler does not.
  size_t before = slurp(calls).size();
  auto plain = (*node)->run_pod(cri::kubelet_pod_config((*node)->pod_options("plain")));
  ASSERT_TRUE(plain.ok()) << plain.error().to_string();
  EXPECT_EQ(slurp(calls).size(), before);

  for (const auto& id : {*pod_id, *plain}) {
    Status s = (*node)->cri().stop_pod_sandbox(id);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    s = (*node)->cri().remove_pod_sandbox(id);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
  }
  EXPECT_EQ((*node)->leftovers(), "");
  Status st = (*node)->stop();
  EXPECT_TRUE(st.ok()) << st.error().to_string();
}


// ---------------------------------------------------------------------------------------------
// Pods started from checkpoints through RuntimeClass `prewarm`: the handler's binary is
// prewarm-runtime (through a script that gives it this test's state dir), the checkpoint is the
// tiny counter baked from the same OCI image the pods run.

namespace prewarm_pods {

constexpr const char* kCheckpoint = "tiny-pod";

}  // namespace prewarm_pods

class PrewarmPodTest : public CriTest {
 protected:
  void SetUp() override {
    if (auto why = cri_skip_reason(); !why.empty()) GTEST_SKIP() << why;
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = fs::random_hex(3);
    state_ = std::filesystem::path("/var/tmp") / ("prewarm-pods-" + tag_);
    ASSERT_TRUE(fs::make_dirs(state_, 0700).ok());
    bridge_ = "pwbrp" + tag_;
    env_ = {"PREWARM_STATE_DIR=" + (state_ / "state").string(),
            "PREWARM_CACHE_DIR=" + (state_ / "cache").string(), "PREWARM_BRIDGE=" + bridge_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_)};
    if (!runtime_.empty()) env_.push_back("PREWARM_RUNTIME=" + runtime_);
    // The handler's binary: prewarm-runtime with this test's state (containerd gives its shims
    // no environment of ours).
    std::string script = "#!/bin/sh\n";
    for (const auto& e : env_) script += "export " + e + "\n";
    if (!extra_runtime_env_.empty()) script += "export " + extra_runtime_env_ + "\n";
    script += "exec " PREWARM_BINARY_DIR "/cmd/prewarm/prewarm-runtime \"$@\"\n";
    ASSERT_TRUE(fs::write_file(state_ / "prewarm-runtime", script, 0755).ok());
    prewarm_binary_ = (state_ / "prewarm-runtime").string();
    CriTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;

    // The image the pods run, as an archive the bake reads (the writer is reproducible: the
    // same rootfs and config give the digests import_rootfs gave).
    ociimage::ImageConfig tiny;
    tiny.entrypoint = {"/bin/counter"};
    tiny.exposed_ports = {"8080/tcp"};
    ociimage::WriteOptions wo;
    wo.name = kTinyImage;
    auto archive = state_ / "tiny.tar";
    auto written = ociimage::write_archive(PREWARM_EXAMPLE_TINY_ROOTFS, tiny, wo, archive);
    ASSERT_TRUE(written.ok()) << written.error().to_string();
    ASSERT_EQ(written->config_digest, tiny_.config_digest);
    std::string spec = std::string("name: ") + prewarm_pods::kCheckpoint + "\n" +
                       "rootfs:\n  image: oci-archive:" + archive.string() + ":" + kTinyImage +
                       "\n" +
                       "command: [\"/bin/counter\"]\n"
                       "ports: [{name: http, containerPort: 8080}]\n"
                       "readinessProbe:\n  httpGet: {path: /healthz, port: http}\n"
                       "  periodMilliseconds: 10\n  failureThreshold: 500\n"
                       "warmup:\n  - httpGet: {path: /, port: http}\n    repeat: 5\n"
                       "  - exec:\n      command: [\"/bin/sh\", \"-c\", "
                       "\"echo warmed > /tmp/warm-marker\"]\n";
    ASSERT_TRUE(fs::write_file(state_ / "spec.yaml", spec, 0644).ok());
    auto bake = run_prewarm({"bake", (state_ / "spec.yaml").string()}, env_);
    ASSERT_EQ(bake.status, 0) << bake.err;
  }

  void TearDown() override {
    CriTest::TearDown();
    if (state_.empty()) return;
    (void)run_prewarm({"rm", "--all"}, env_);
    remove_test_bridge(bridge_);
    EXPECT_EQ(leftovers(prewarm_pods::kCheckpoint + std::string("-")), "");
    // What the runtime keeps per container is gone with the container.
    for (const auto& id : containers_) {
      EXPECT_FALSE(std::filesystem::exists(std::string("/run/prewarm/pods/") + id)) << id;
      EXPECT_FALSE(std::filesystem::exists(std::string("/run/prewarm/pods/") + id + ".json"));
    }
    if (!HasFailure()) (void)fs::remove_all(state_);
  }

  struct Pod {
    cri::PodOptions options;
    v1::PodSandboxConfig config;
    std::string id, ip, container;
    double sandbox_ms = 0, container_ms = 0;
  };

  // A pod of the prewarm runtime class running the tiny image (by id, as the kubelet names
  // it), with `checkpoint` as its annotation ("" : none); waits until the app answers.
  Pod start_pod(const std::string& name, const std::string& checkpoint,
                const std::string& image = "", bool with_volume = false) {
    Pod p;
    p.options = node_->pod_options(name);
    if (!checkpoint.empty()) p.options.annotations["prewarm.dev/checkpoint"] = checkpoint;
    p.config = cri::kubelet_pod_config(p.options);
    auto t0 = Clock::now();
    auto id = node_->run_pod(p.config, CriNode::kPrewarmHandler);
    EXPECT_TRUE(id.ok()) << id.error().to_string();
    if (!id.ok()) return p;
    p.id = *id;
    p.sandbox_ms = ms_since(t0);
    p.ip = pod_ip(p.id);
    auto t1 = Clock::now();
    cri::ContainerOptions c;
    c.name = "counter";
    c.image = image.empty() ? tiny_.config_digest : image;
    v1::ContainerConfig cc = cri::kubelet_container_config(p.options, c);
    if (with_volume) {
      // A volume as the kubelet passes it: a host directory, read-only here.
      const auto vol = state_ / ("volume-" + name);
      EXPECT_TRUE(fs::make_dirs(vol, 0755).ok());
      EXPECT_TRUE(fs::write_file(vol / "hello", "from the node\n", 0644).ok());
      auto* m = cc.add_mounts();
      m->set_host_path(vol.string());
      m->set_container_path("/data");
      m->set_readonly(true);
    }
    auto cid = node_->cri().create_container(p.id, cc, p.config);
    EXPECT_TRUE(cid.ok()) << cid.error().to_string();
    if (!cid.ok()) return p;
    p.container = *cid;
    containers_.push_back(p.container);
    Status st = node_->cri().start_container(p.container);
    EXPECT_TRUE(st.ok()) << st.error().to_string();
    EXPECT_TRUE(wait_http(p.ip, 30s)) << "no answer at " << p.ip;
    p.container_ms = ms_since(t1);
    std::printf("[cri] %s (%s): RunPodSandbox %.1f ms; CreateContainer -> first answer %.1f ms\n",
                name.c_str(), checkpoint.empty() ? "no checkpoint" : checkpoint.c_str(),
                p.sandbox_ms, p.container_ms);
    return p;
  }

  nlohmann::json outcome(const std::string& container) {
    auto text = fs::read_file(std::string("/run/prewarm/pods/") + container + ".json", 1 << 20);
    if (!text.ok()) return nullptr;
    return nlohmann::json::parse(*text, nullptr, false);
  }

  std::string container_log(const Pod& p) {
    return slurp(p.options.log_directory + "/counter/0.log");
  }

  // The CRI log once it holds `needle` (the runtime writes it shortly), or as it is after 5 s.
  std::string log_once_it_has(const Pod& p, const std::string& needle) {
    std::string log;
    for (auto deadline = Clock::now() + 5s; Clock::now() < deadline; std::this_thread::sleep_for(10ms))
      if ((log = container_log(p)).find(needle) != std::string::npos) break;
    return log;
  }

  void remove_pod(const Pod& p) {
    Status s = node_->cri().stop_pod_sandbox(p.id);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
    s = node_->cri().remove_pod_sandbox(p.id);
    EXPECT_TRUE(s.ok()) << s.error().to_string();
  }

  std::string tag_, bridge_;
  std::string runtime_;  // the restore backend ("" : the default, direct CRIU)
  std::string extra_runtime_env_;  // one more KEY=VALUE for the runtime only (not the bake)
  std::filesystem::path state_;
  std::vector<std::string> env_, containers_;
};

// The same through each restore backend: direct CRIU (the default; prewarm answers the shim's
// later runc calls itself) and `runc restore` (runc keeps the container as its own).
class PrewarmPodBackendTest : public PrewarmPodTest,
                              public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    runtime_ = GetParam();
    PrewarmPodTest::SetUp();
  }
};

TEST_P(PrewarmPodBackendTest, RestoredPodServesTheCheckpointedStateAtItsPodIp) {
  Pod p = start_pod("warm", prewarm_pods::kCheckpoint, "", /*with_volume=*/true);
  ASSERT_FALSE(p.container.empty());
  // The warm-up counted 5; this copy continues, under the pod's hostname, as pid 1 of its own
  // PID namespace.
  EXPECT_EQ(http_get(p.ip, 8080, "/"), "count=6 hostname=warm pid=1\n");
  nlohmann::json o = outcome(p.container);
  ASSERT_TRUE(o.is_object());
  EXPECT_EQ(o["restored"], true) << o.dump();
  EXPECT_EQ(o["image"], prewarm_pods::kCheckpoint);
  EXPECT_EQ(o["runtime"], GetParam()) << o.dump();
  std::printf("[cri] %s: the runtime's create took %.1f ms until restored\n", GetParam().c_str(),
              o.value("restoreMs", 0.0));
  // The rootfs is the pod's image plus what the app changed before the checkpoint; the pod's
  // own mounts are there too: a volume (read-only here) and the runtime's /etc/hostname.
  auto& cri = node_->cri();
  auto vol = cri.exec_sync(p.container, {"/bin/sh", "-c", "cat /data/hello; echo x > /data/new"}, 10s);
  ASSERT_TRUE(vol.ok()) << vol.error().to_string();
  EXPECT_EQ(vol->stdout_data, "from the node\n");
  EXPECT_NE(vol->exit_code, 0) << "the volume is read-only";
  auto etc = cri.exec_sync(p.container, {"/bin/cat", "/etc/hostname"}, 10s);
  ASSERT_TRUE(etc.ok()) << etc.error().to_string();
  EXPECT_EQ(etc->stdout_data, "warm\n");
  auto ex = cri.exec_sync(p.container, {"/bin/cat", "/tmp/warm-marker"}, 10s);
  ASSERT_TRUE(ex.ok()) << ex.error().to_string();
  EXPECT_EQ(ex->stdout_data, "warmed\n");
  EXPECT_EQ(ex->exit_code, 0);
  ex = cri.exec_sync(p.container, {"/bin/sh", "-c", "hostname; exit 4"}, 10s);
  ASSERT_TRUE(ex.ok()) << ex.error().to_string();
  EXPECT_EQ(ex->stdout_data, "warm\n");
  EXPECT_EQ(ex->exit_code, 4);
  // What the runtime said is in the container's log (kubectl logs).
  std::string log = log_once_it_has(p, "restored from checkpoint");
  EXPECT_NE(log.find(" stderr F prewarm: restored from checkpoint tiny-pod in "), std::string::npos)
      << log;
  // The app's output after the restore lands there too: the checkpoint's stdout pipe is the
  // shim's now.
  EXPECT_EQ(http_get(p.ip, 8080, "/log"), "logged\n");
  log = log_once_it_has(p, "count is 6");
  EXPECT_NE(log.find(" stdout F count is 6\n"), std::string::npos) << log;
  auto status = cri.container_status(p.container);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(status->state(), v1::CONTAINER_RUNNING);

  // StopContainer: SIGTERM, the counter exits 0 on it.
  Status stopped = cri.stop_container(p.container, 20s);
  ASSERT_TRUE(stopped.ok()) << stopped.error().to_string();
  status = cri.container_status(p.container);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(status->state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status->exit_code(), 0);
  EXPECT_EQ(status->reason(), "Completed");
  Status removed = cri.remove_container(p.container);
  ASSERT_TRUE(removed.ok()) << removed.error().to_string();
  remove_pod(p);
  EXPECT_EQ(node_->leftovers(), "");
}

INSTANTIATE_TEST_SUITE_P(Backends, PrewarmPodBackendTest,
                         ::testing::Values(std::string("criu"), std::string("runc")),
                         [](const auto& info) { return info.param; });

TEST_F(PrewarmPodTest, TwoPodsFromOneCheckpointAreIndependent) {
  Pod a = start_pod("copy-a", prewarm_pods::kCheckpoint);
  Pod b = start_pod("copy-b", prewarm_pods::kCheckpoint);
  ASSERT_FALSE(a.container.empty() || b.container.empty());
  EXPECT_NE(a.ip, b.ip);
  EXPECT_EQ(http_get(a.ip, 8080, "/"), "count=6 hostname=copy-a pid=1\n");
  EXPECT_EQ(http_get(a.ip, 8080, "/"), "count=7 hostname=copy-a pid=1\n");
  EXPECT_EQ(http_get(b.ip, 8080, "/"), "count=6 hostname=copy-b pid=1\n");
  remove_pod(a);
  remove_pod(b);
  EXPECT_EQ(node_->leftovers(), "");
}

// Whatever stands in the way, the pod starts: cold, from its image, with the reason recorded.
TEST_F(PrewarmPodTest, ImpossibleRestoresColdStartWithTheReason) {
  Pod missing = start_pod("missing", "no-such-checkpoint");
  ASSERT_FALSE(missing.container.empty());
  EXPECT_EQ(http_get(missing.ip, 8080, "/"), "count=1 hostname=missing pid=1\n");
  nlohmann::json o = outcome(missing.container);
  ASSERT_TRUE(o.is_object());
  EXPECT_EQ(o["restored"], false);
  EXPECT_NE(o.value("reason", "").find("no-such-checkpoint"), std::string::npos) << o.dump();
  std::string log = log_once_it_has(missing, "cold start");
  EXPECT_NE(log.find("prewarm: cold start (checkpoint no-such-checkpoint not restored): "),
            std::string::npos)
      << log;

  // Another image than the one the checkpoint was baked on: the same files under another
  // name would restore fine, so the runtime compares what the CRI says, not the files.
  auto other = node_->import_rootfs(PREWARM_EXAMPLE_TINY_ROOTFS,
                                    {.entrypoint = {"/bin/counter"}, .env = {"OTHER=1"}},
                                    "prewarm.test/other:1");
  ASSERT_TRUE(other.ok()) << other.error().to_string();
  Pod wrong = start_pod("wrong", prewarm_pods::kCheckpoint, other->config_digest);
  ASSERT_FALSE(wrong.container.empty());
  EXPECT_EQ(http_get(wrong.ip, 8080, "/"), "count=1 hostname=wrong pid=1\n");
  o = outcome(wrong.container);
  ASSERT_TRUE(o.is_object());
  EXPECT_EQ(o["restored"], false);
  EXPECT_NE(o.value("reason", "").find("was baked on"), std::string::npos) << o.dump();

  // The tag the checkpoint was baked from, moved to another image since: containerd's image id
  // for the name is not the one baked on.
  auto moved = node_->import_rootfs(PREWARM_EXAMPLE_TINY_ROOTFS,
                                    {.entrypoint = {"/bin/counter"}, .env = {"MOVED=1"}},
                                    kTinyImage);
  ASSERT_TRUE(moved.ok()) << moved.error().to_string();
  ASSERT_NE(moved->config_digest, tiny_.config_digest);
  Pod retagged = start_pod("retagged", prewarm_pods::kCheckpoint, kTinyImage);
  ASSERT_FALSE(retagged.container.empty());
  EXPECT_EQ(http_get(retagged.ip, 8080, "/"), "count=1 hostname=retagged pid=1\n");
  o = outcome(retagged.container);
  ASSERT_TRUE(o.is_object());
  EXPECT_EQ(o["restored"], false);
  EXPECT_NE(o.value("reason", "").find("the pod's is " + moved->config_digest), std::string::npos)
      << o.dump();
  remove_pod(missing);
  remove_pod(wrong);
  remove_pod(retagged);
  EXPECT_EQ(node_->leftovers(), "");
}

// A checkpoint that is not on the node, named by its registry reference, is pulled when the
// pod starts; the time it took is in the outcome.
TEST_F(PrewarmPodTest, CheckpointNotOnTheNodeIsPulledOnDemand) {
  RegistryServer registry;
  Status up = registry.start(state_ / "registry");
  ASSERT_TRUE(up.ok()) << up.error().to_string();
  const std::string ref =
      "127.0.0.1:" + std::to_string(registry.port()) + "/prewarm/" + prewarm_pods::kCheckpoint + ":v1";
  auto push = run_prewarm({"push", prewarm_pods::kCheckpoint, ref}, env_);
  ASSERT_EQ(push.status, 0) << push.err;
  auto rmi = run_prewarm({"rmi", prewarm_pods::kCheckpoint}, env_);
  ASSERT_EQ(rmi.status, 0) << rmi.err;
  auto gc = run_prewarm({"gc"}, env_);
  ASSERT_EQ(gc.status, 0) << gc.err;

  Pod p = start_pod("pulled", ref, kTinyImage);
  ASSERT_FALSE(p.container.empty());
  EXPECT_EQ(http_get(p.ip, 8080, "/"), "count=6 hostname=pulled pid=1\n");
  nlohmann::json o = outcome(p.container);
  ASSERT_TRUE(o.is_object());
  EXPECT_EQ(o["restored"], true) << o.dump();
  EXPECT_GT(o.value("pullMs", 0.0), 0.0) << o.dump();
  std::string log = log_once_it_has(p, "pulled first");
  EXPECT_NE(log.find("(pulled first: "), std::string::npos) << log;
  remove_pod(p);
  EXPECT_EQ(node_->leftovers(), "");
}

// The runtime killed while CRIU holds the restored tasks stopped: the container does not
// start, and once the pod is removed nothing of the attempt is left (the shim's delete finds
// the runtime's directory and undoes the overlay, the direct backend's state and the cgroup).
class PrewarmPodFaultTest : public PrewarmPodTest {
 protected:
  void SetUp() override {
    extra_runtime_env_ = "PREWARM_FAULT=pod.before_resume";
    PrewarmPodTest::SetUp();
  }
};

TEST_F(PrewarmPodFaultTest, RuntimeKilledMidRestoreLeavesNothing) {
  auto& cri = node_->cri();
  cri::PodOptions po = node_->pod_options("killed");
  po.annotations["prewarm.dev/checkpoint"] = prewarm_pods::kCheckpoint;
  v1::PodSandboxConfig pc = cri::kubelet_pod_config(po);
  auto pod = node_->run_pod(pc, CriNode::kPrewarmHandler);
  ASSERT_TRUE(pod.ok()) << pod.error().to_string();
  cri::ContainerOptions c;
  c.name = "counter";
  c.image = tiny_.config_digest;
  auto cid = cri.create_container(*pod, cri::kubelet_container_config(po, c), pc);
  ASSERT_TRUE(cid.ok()) << cid.error().to_string();
  containers_.push_back(*cid);
  Status started = cri.start_container(*cid);
  EXPECT_FALSE(started.ok()) << "the runtime died in create";
  Status s = cri.remove_container(*cid);
  EXPECT_TRUE(s.ok()) << s.error().to_string();
  s = cri.stop_pod_sandbox(*pod);
  EXPECT_TRUE(s.ok()) << s.error().to_string();
  s = cri.remove_pod_sandbox(*pod);
  EXPECT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(node_->leftovers(), "");
  EXPECT_FALSE(std::filesystem::exists(std::string(oci::kCriuDirectStateRoot) + "/" + *cid));
  // (TearDown checks /run/prewarm/pods/<id> and its outcome file are gone.)
}

// A pod of the prewarm class that asks for no checkpoint runs exactly as under runc.
TEST_F(PrewarmPodTest, WithoutTheAnnotationThePodRunsAsUnderRunc) {
  Pod p = start_pod("plain", "");
  ASSERT_FALSE(p.container.empty());
  EXPECT_EQ(http_get(p.ip, 8080, "/"), "count=1 hostname=plain pid=1\n");
  EXPECT_TRUE(outcome(p.container).is_null());
  remove_pod(p);
  EXPECT_EQ(node_->leftovers(), "");
}


// Runtime in runtime (no node changes): a privileged container of the plain runc handler runs
// the prewarm image (`prewarm self-image`), whose entrypoint restores the app inside the pod
// container, in the pod's network namespace; the store is the node's, mounted in.
TEST_F(PrewarmPodTest, RuntimeInRuntimePodRestoresAndServesAtItsPodIp) {
  auto& cri = node_->cri();
  const auto archive = state_ / "prewarm-image.tar";
  auto self = run_prewarm({"self-image", archive.string(), "--name", "prewarm.test/prewarm:1"}, env_);
  ASSERT_EQ(self.status, 0) << self.err;
  Status imported = node_->import_archive(archive, "prewarm.test/prewarm:1");
  ASSERT_TRUE(imported.ok()) << imported.error().to_string();

  Pod p;
  p.options = node_->pod_options("rinr");
  p.config = cri::kubelet_pod_config(p.options);
  p.config.mutable_linux()->mutable_security_context()->set_privileged(true);
  auto t0 = Clock::now();
  auto id = node_->run_pod(p.config);
  ASSERT_TRUE(id.ok()) << id.error().to_string();
  p.id = *id;
  p.ip = pod_ip(p.id);
  cri::ContainerOptions c;
  c.name = "counter";
  c.image = "prewarm.test/prewarm:1";
  c.args = {"run", prewarm_pods::kCheckpoint, "--foreground"};
  v1::ContainerConfig cc = cri::kubelet_container_config(p.options, c);
  cc.mutable_linux()->mutable_security_context()->set_privileged(true);
  for (const auto& [host, inside] : {std::pair{state_ / "state", "/var/lib/prewarm"},
                                     {state_ / "cache", "/var/cache/prewarm"}}) {
    auto* m = cc.add_mounts();
    m->set_host_path(host.string());
    m->set_container_path(inside);
  }
  auto cid = cri.create_container(p.id, cc, p.config);
  ASSERT_TRUE(cid.ok()) << cid.error().to_string();
  p.container = *cid;
  Status st = cri.start_container(p.container);
  ASSERT_TRUE(st.ok()) << st.error().to_string();
  ASSERT_TRUE(wait_http(p.ip, 60s)) << "no answer at " << p.ip << "\n" << container_log(p);
  std::printf("[cri] runtime in runtime: RunPodSandbox -> first answer %.1f ms\n", ms_since(t0));
  EXPECT_EQ(http_get(p.ip, 8080, "/"), "count=6 hostname=rinr pid=1\n") << container_log(p);
  // prewarm writes its outcome once its own probe passed, a moment after the first answer.
  nlohmann::json outcome;
  std::string said;
  for (auto deadline = Clock::now() + 10s; Clock::now() < deadline && !outcome.is_object();
       std::this_thread::sleep_for(20ms)) {
    auto ex = cri.exec_sync(p.container, {"/bin/cat", "/run/prewarm/outcome.json"}, 10s);
    ASSERT_TRUE(ex.ok()) << ex.error().to_string();
    said = ex->stdout_data + ex->stderr_data;
    outcome = nlohmann::json::parse(ex->stdout_data, nullptr, false);
  }
  ASSERT_TRUE(outcome.is_object()) << said;
  EXPECT_EQ(outcome["restored"], true) << outcome.dump();
  std::string log = container_log(p);
  EXPECT_NE(log.find("prewarm: restored tiny-pod as "), std::string::npos) << log;
  // The app's output is the container's.
  EXPECT_EQ(http_get(p.ip, 8080, "/log"), "logged\n");
  log = log_once_it_has(p, "count is 6");
  EXPECT_NE(log.find(" stdout F count is 6\n"), std::string::npos) << log;

  // The kubelet's stop reaches the app through prewarm, and prewarm exits as the app did.
  Status stopped = cri.stop_container(p.container, 20s);
  ASSERT_TRUE(stopped.ok()) << stopped.error().to_string();
  auto status = cri.container_status(p.container);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(status->state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status->exit_code(), 0) << container_log(p);
  // prewarm removed its instance from the shared store on the way out.
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_empty(state_ / "state" / "instances", ec)) << ec.message();
  remove_pod(p);
  EXPECT_EQ(node_->leftovers(), "");
}

}  // namespace
}  // namespace prewarm::testing
