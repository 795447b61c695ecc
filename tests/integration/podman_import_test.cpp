// A checkpoint made by real Podman (`podman container checkpoint --export`: the archive layout
// the kubelet and CRI-O write too) imported into prewarm and restored with runc + CRIU, its
// state intact. The container runs in a network namespace made for it, as a pod's is made by
// CNI before the kubelet starts a container in it.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "images/images.h"
#include "lifecycle/instance.h"
#include "net/net.h"
#include "probe/probe.h"
#include "support/engine_fixture.h"
#include "support/registry_server.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

std::string get(const std::string& ip, const std::string& path) {
  auto r = probe::http_get(ip, 8080, path, {}, std::chrono::milliseconds(3000));
  if (!r.ok()) return "ERROR " + r.error().message();
  return r->body;
}

std::string run_out(const std::vector<std::string>& argv) {
  auto r = run_checked(argv, std::chrono::minutes(2));
  return r.ok() ? *r : "ERROR " + r.error().message();
}

// What Podman could leave of a container: the container itself, its runc container, netns,
// mounts, its cgroups (under libpod_parent/), and processes (conmon) naming it.
std::string podman_leftovers(const std::string& name, const std::string& cid) {
  std::string found;
  auto ps = run_checked({"podman", "ps", "-a", "-q", "--no-trunc", "--filter", "name=" + name});
  if (!ps.ok() || !ps->empty()) found += "podman container: " + (ps.ok() ? *ps : ps.error().message());
  if (cid.empty()) return found;
  found += leftovers(cid);
  std::error_code ec;
  for (const auto& h : stdfs::directory_iterator("/sys/fs/cgroup", ec))
    if (stdfs::exists(h.path() / "libpod_parent" / ("libpod-" + cid), ec))
      found += "cgroup " + (h.path() / "libpod_parent" / ("libpod-" + cid)).string() + "\n";
  for (const auto& p : stdfs::directory_iterator("/proc", ec)) {
    std::string cmdline = slurp(p.path() / "cmdline");
    if (cmdline.find(cid) != std::string::npos) found += "process " + p.path().string() + "\n";
  }
  return found;
}

class PodmanImportTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (find_executable("podman").empty())
      GTEST_SKIP() << "podman not installed (scripts/setup.sh installs it)";
  }
};

// Removes the Podman container and the pod's network namespace however the test ends.
struct PodGuard {
  const net::Config& net;
  std::string container;
  std::optional<net::Attachment> att;
  ~PodGuard() {
    if (!container.empty()) (void)run_checked({"podman", "rm", "-f", "-t", "0", container});
    if (att) (void)net::detach(net, *att);
  }
};

// A Podman container of the tiny counter on a copy of its rootfs, in a netns of its own (as
// a pod's), warmed by five counted requests; removed with its netns however the test ends.
class PodmanContainer {
 public:
  PodmanContainer(const engine::Context& ctx, const std::string& tag, const stdfs::path& state)
      : pod_{ctx.net, "", std::nullopt}, name_("prewarm-test-" + tag), rootfs_(state / "rootfs") {}

  // Starts and warms it; fatal failures end the test.
  void start() {
    // Podman writes the mount points of its bind mounts (/etc/hosts, ...) into a --rootfs;
    // the copy is the container image's files as the user would pass them to import.
    ASSERT_EQ(run_out({"cp", "-a", PREWARM_EXAMPLE_TINY_ROOTFS, rootfs_.string()}), "");
    ASSERT_TRUE(net::ensure_bridge(pod_.net).ok());
    auto att = net::attach(pod_.net, name_ + "-pod");
    ASSERT_TRUE(att.ok()) << att.error().to_string();
    pod_.att = *att;
    // Podman needs lower rlimits than its defaults here (no CAP_SYS_RESOURCE), and runc: crun
    // in Debian has no CRIU.
    auto run = run_checked({"podman", "run", "-d", "--name", name_, "--runtime", "runc",
                            "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                            "--network", "ns:" + att->netns_path.string(), "--rootfs",
                            rootfs_.string(), "/bin/counter"},
                           std::chrono::minutes(2));
    pod_.container = name_;
    ASSERT_TRUE(run.ok()) << run.error().to_string();
    cid_ = *run;
    while (!cid_.empty() && (cid_.back() == '\n' || cid_.back() == ' ')) cid_.pop_back();
    ASSERT_EQ(cid_.size(), 64u) << cid_;
    // The leftover check sees a running container (so its silence later means something).
    std::string running = podman_leftovers(name_, cid_);
    EXPECT_NE(running.find("podman container"), std::string::npos) << running;
    EXPECT_NE(running.find("libpod-" + cid_), std::string::npos) << running;

    // Ready, then warm: five counted requests.
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (get(att->ip, "/healthz") != "ok\n" && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    ASSERT_EQ(get(att->ip, "/healthz"), "ok\n");
    for (int i = 1; i <= 5; ++i)
      ASSERT_NE(get(att->ip, "/").find("count=" + std::to_string(i) + " "), std::string::npos);
  }

  // `podman container checkpoint <flag> <value>`, then the stopped container and the pod go.
  void checkpoint(const std::string& flag, const std::string& value) {
    ASSERT_EQ(run_out({"podman", "container", "checkpoint", flag, value, name_}), name_ + "\n");
    ASSERT_EQ(run_out({"podman", "rm", name_}), name_ + "\n");
    pod_.container.clear();
    ASSERT_TRUE(net::detach(pod_.net, *pod_.att).ok());
    pod_.att.reset();
    EXPECT_EQ(podman_leftovers(name_, cid_), "");
  }

  const stdfs::path& rootfs() const { return rootfs_; }
  std::string leftovers() const { return podman_leftovers(name_, cid_); }

 private:
  PodGuard pod_;
  std::string name_, cid_;
  stdfs::path rootfs_;
};

// Two instances of an imported Podman checkpoint: each one restored (no fallback), continuing
// from count=5, with its own hostname and IP in the /etc/hosts prewarm made for it.
void expect_two_restores_with_state(const engine::Context& ctx, const std::string& name) {
  auto img = images::load_image(ctx, name);
  ASSERT_TRUE(img.ok()) << img.error().to_string();
  std::set<std::string> ips;
  for (int copy = 0; copy < 2; ++copy) {
    SCOPED_TRACE("copy " + std::to_string(copy));
    auto s = lifecycle::start_instance(ctx, *img, lifecycle::StartMode::kRestore);
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    const auto& r = s->record;
    ASSERT_EQ(r.started_by, "restore") << r.fallback_reason;
    EXPECT_EQ(r.fallback_reason, "");
    // Podman's archive records neither the CPU nor the CRIU version.
    EXPECT_NE(r.restore_note.find("host facts unknown"), std::string::npos) << r.restore_note;
    EXPECT_EQ(get(r.ip, "/count"), "5\n");
    std::string body = get(r.ip, "/");
    EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
    EXPECT_NE(body.find("hostname=" + r.id + " "), std::string::npos) << body;
    std::string hosts = exec_in(ctx, r.id, {"cat", "/etc/hosts"});
    EXPECT_NE(hosts.find(r.ip + "\t" + r.id + "\n"), std::string::npos) << hosts;
    EXPECT_EQ(exec_in(ctx, r.id, {"cat", "/etc/hostname"}), r.id + "\n");
    EXPECT_EQ(exec_in(ctx, r.id, {"cat", "/run/.containerenv"}), "");
    ips.insert(r.ip);
  }
  EXPECT_EQ(ips.size(), 2u);
  auto all = lifecycle::list_instances(ctx);
  ASSERT_TRUE(all.ok());
  for (const auto& s : *all) EXPECT_TRUE(lifecycle::remove_instance(ctx, s.record.id).ok());
}

TEST_F(PodmanImportTest, PodmanCheckpointRestoresWithItsState) {
  const std::string name = "podman-" + tag_;
  track(name);
  PodmanContainer ctr(ctx_, tag_, state_);
  ctr.start();
  if (HasFatalFailure()) return;
  const stdfs::path archive = state_ / "podman-checkpoint.tar.zst";
  ctr.checkpoint("--export", archive.string());
  if (HasFatalFailure()) return;

  auto imported = images::import_image(ctx_, archive, name, ctr.rootfs());
  ASSERT_TRUE(imported.ok()) << imported.error().to_string();
  EXPECT_TRUE(imported->foreign);
  expect_two_restores_with_state(ctx_, name);
  EXPECT_EQ(ctr.leftovers(), "");
}

// A checkpoint image as Podman makes it (`--create-image`: an OCI image whose layer is the
// archive, as CRI-O's are) pushed by Podman to a real registry, pulled by prewarm, restored.
TEST_F(PodmanImportTest, PodmanCheckpointImagePulledFromARegistryRestores) {
  if (auto why = registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir registry_dir("prewarm-podman-registry");
  RegistryServer registry;
  auto started = registry.start(registry_dir.path());
  ASSERT_TRUE(started.ok()) << started.error().to_string();
  const std::string local = "localhost/prewarm-test-" + tag_ + ":checkpoint";
  struct ImageGuard {
    std::string ref;
    ~ImageGuard() { (void)run_checked({"podman", "rmi", "-f", ref}); }
  } image_guard{local};

  const std::string name = "podman-image-" + tag_;
  track(name);
  PodmanContainer ctr(ctx_, tag_, state_);
  ctr.start();
  if (HasFatalFailure()) return;
  ctr.checkpoint("--create-image", local);
  if (HasFatalFailure()) return;
  const std::string ref = "127.0.0.1:" + std::to_string(registry.port()) + "/podman/counter:ckpt";
  auto pushed = run_checked({"podman", "push", "--tls-verify=false", local, ref},
                            std::chrono::minutes(2));
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();

  auto pulled = images::pull_image(ctx_, ref, name, images::registry_options(ctx_), ctr.rootfs());
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  EXPECT_EQ(*pulled, name);
  expect_two_restores_with_state(ctx_, name);
  EXPECT_EQ(ctr.leftovers(), "");
  // The pull's scratch files are gone.
  for (const auto& e : stdfs::directory_iterator(state_))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
  registry.stop();
}

}  // namespace
}  // namespace prewarm::testing
