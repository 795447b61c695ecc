// A checkpoint made by real Podman (`podman container checkpoint --export`: the archive layout
// the kubelet and CRI-O write too) imported into prewarm and restored with runc + CRIU, its
// state intact. The container runs in a network namespace made for it, as a pod's is made by
// CNI before the kubelet starts a container in it.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <set>
#include <thread>

#include "engine/images.h"
#include "engine/instance.h"
#include "net/net.h"
#include "probe/probe.h"
#include "support/engine_fixture.h"

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

TEST_F(PodmanImportTest, PodmanCheckpointRestoresWithItsState) {
  const std::string name = "podman-" + tag_;
  track(name);
  // Podman writes the mount points of its bind mounts (/etc/hosts, ...) into a --rootfs;
  // the copy is the container image's files as the user would pass them to import.
  const stdfs::path rootfs = state_ / "rootfs";
  ASSERT_EQ(run_out({"cp", "-a", PREWARM_EXAMPLE_TINY_ROOTFS, rootfs.string()}), "");

  PodGuard pod{ctx_.net, "", std::nullopt};
  ASSERT_TRUE(net::ensure_bridge(ctx_.net).ok());
  auto att = net::attach(ctx_.net, name + "-pod");
  ASSERT_TRUE(att.ok()) << att.error().to_string();
  pod.att = *att;

  // Podman needs lower rlimits than its defaults here (no CAP_SYS_RESOURCE), and runc: crun
  // in Debian has no CRIU.
  const std::string ctr = "prewarm-test-" + tag_;
  auto run = run_checked({"podman", "run", "-d", "--name", ctr, "--runtime", "runc",
                          "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                          "--network", "ns:" + att->netns_path.string(), "--rootfs",
                          rootfs.string(), "/bin/counter"},
                         std::chrono::minutes(2));
  pod.container = ctr;
  ASSERT_TRUE(run.ok()) << run.error().to_string();
  std::string cid = *run;
  while (!cid.empty() && (cid.back() == '\n' || cid.back() == ' ')) cid.pop_back();
  ASSERT_EQ(cid.size(), 64u) << cid;
  // The leftover check sees a running container (so its silence later means something).
  std::string running = podman_leftovers(ctr, cid);
  EXPECT_NE(running.find("podman container"), std::string::npos) << running;
  EXPECT_NE(running.find("libpod-" + cid), std::string::npos) << running;

  // Ready, then warm: five counted requests.
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (get(att->ip, "/healthz") != "ok\n" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  ASSERT_EQ(get(att->ip, "/healthz"), "ok\n");
  for (int i = 1; i <= 5; ++i)
    ASSERT_NE(get(att->ip, "/").find("count=" + std::to_string(i) + " "), std::string::npos);

  const stdfs::path archive = state_ / "podman-checkpoint.tar.zst";
  ASSERT_EQ(run_out({"podman", "container", "checkpoint", "--export", archive.string(), ctr}),
            ctr + "\n");
  // The checkpointed container is stopped; nothing of it may stay, and the pod goes too.
  ASSERT_EQ(run_out({"podman", "rm", ctr}), ctr + "\n");
  pod.container.clear();
  ASSERT_TRUE(net::detach(ctx_.net, *att).ok());
  pod.att.reset();
  EXPECT_EQ(podman_leftovers(ctr, cid), "");

  auto imported = engine::import_image(ctx_, archive, name, rootfs);
  ASSERT_TRUE(imported.ok()) << imported.error().to_string();
  EXPECT_TRUE(imported->foreign);
  auto img = engine::load_image(ctx_, name);
  ASSERT_TRUE(img.ok()) << img.error().to_string();

  // Two instances: each one restored (no fallback), continuing from count=5, with its own
  // hostname and IP in the /etc/hosts prewarm made for it.
  std::set<std::string> ips;
  for (int copy = 0; copy < 2; ++copy) {
    SCOPED_TRACE("copy " + std::to_string(copy));
    auto s = engine::start_instance(ctx_, *img, engine::StartMode::kRestore);
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
    std::string hosts = run_out({"runc", "exec", r.id, "cat", "/etc/hosts"});
    EXPECT_NE(hosts.find(r.ip + "\t" + r.id + "\n"), std::string::npos) << hosts;
    EXPECT_EQ(run_out({"runc", "exec", r.id, "cat", "/etc/hostname"}), r.id + "\n");
    EXPECT_EQ(run_out({"runc", "exec", r.id, "cat", "/run/.containerenv"}), "");
    ips.insert(r.ip);
  }
  EXPECT_EQ(ips.size(), 2u);

  auto all = engine::list_instances(ctx_);
  ASSERT_TRUE(all.ok());
  for (const auto& s : *all) EXPECT_TRUE(engine::remove_instance(ctx_, s.record.id).ok());
  EXPECT_EQ(podman_leftovers(ctr, cid), "");
}

}  // namespace
}  // namespace prewarm::testing
