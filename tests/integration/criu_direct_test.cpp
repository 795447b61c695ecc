// The direct-CRIU runtime backend against real runc and CRIU: a runc-made checkpoint of the tiny
// counter restored without runc, its state checked, every operation leaving nothing behind, and
// failing restores undone with CRIU's log lines in the error. (Timing both backends is
// `prewarm bench startup`'s job.)
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "net/netns.h"
#include "oci/cgroup.h"
#include "oci/config.h"
#include "oci/criu_direct.h"
#include "oci/runtime.h"
#include "rootfs/rootfs.h"
#include "support/files.h"

#ifndef PREWARM_EXAMPLE_TINY_ROOTFS
#define PREWARM_EXAMPLE_TINY_ROOTFS ""
#endif

namespace prewarm::oci {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

stdfs::path tiny_rootfs() {
  if (const char* env = std::getenv("PREWARM_TINY_ROOTFS"); env && *env) return env;
  return PREWARM_EXAMPLE_TINY_ROOTFS;
}

std::string skip_reason() {
  if (::geteuid() != 0) return "needs root (runc, CRIU, mounts, namespaces)";
  if (criu::criu_binary().empty()) return "CRIU not installed (run scripts/setup.sh)";
  if (find_executable("runc").empty()) return "runc not installed (run scripts/setup.sh)";
  if (tiny_rootfs().empty() || !stdfs::exists(tiny_rootfs() / "bin/counter"))
    return "the tiny example rootfs is not built (build target example-tiny-rootfs, or set "
           "PREWARM_TINY_ROOTFS)";
  return {};
}

// Runs fn on a thread that has joined the network namespace at `netns`.
template <class Fn>
auto in_netns(const stdfs::path& netns, Fn fn) {
  decltype(fn()) out{};
  std::thread t([&] {
    UniqueFd ns(::open(netns.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid() || ::setns(ns.get(), CLONE_NEWNET) != 0) return;
    out = fn();
  });
  t.join();
  return out;
}

// GET path from 127.0.0.1:8080 inside the netns: the body, or "" on failure/timeout.
std::string http_get(const stdfs::path& netns, const std::string& path,
                     milliseconds timeout = milliseconds(2000)) {
  return in_netns(netns, [&]() -> std::string {
    auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(8080);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      timeval tv{0, 300000};
      ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        std::this_thread::sleep_for(milliseconds(5));
        continue;
      }
      std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
      if (::send(s.get(), req.data(), req.size(), MSG_NOSIGNAL) < 0) continue;
      std::string resp;
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(s.get(), buf, sizeof buf, 0)) > 0) resp.append(buf, n);
      auto body = resp.find("\r\n\r\n");
      if (body != std::string::npos) return resp.substr(body + 4);
    }
    return {};
  });
}

Status set_hostname_of(pid_t pid, const std::string& name) {
  Status st;
  std::thread t([&] {
    UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/uts").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) {
      st = Error::sys("open uts ns", errno);
      return;
    }
    if (::unshare(CLONE_FS) != 0 || ::setns(ns.get(), CLONE_NEWUTS) != 0) {
      st = Error::sys("setns uts", errno);
      return;
    }
    if (::sethostname(name.data(), name.size()) != 0) st = Error::sys("sethostname", errno);
  });
  t.join();
  return st;
}

bool process_exists(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// One checkpoint of the counter (count=5, hostname "bake") shared by the tests, and per
// restore a fresh netns (lo down), overlay and bundle.
class CriuDirectTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!skip_reason().empty()) return;
    tag_ = "cd" + fs::random_hex(3);
    base_ = stdfs::path("/var/tmp") / ("prewarm-" + tag_);
    ASSERT_TRUE(fs::make_dirs(base_).ok());
    runc_ = std::shared_ptr<Runtime>(make_runc());
    auto bake = prepare_instance("bake");
    ASSERT_TRUE(bake.ok()) << bake.error().to_string();
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    log_r_.reset(p[0]);
    UniqueFd log_w(p[1]);
    ::fcntl(log_r_.get(), F_SETFL, O_NONBLOCK);
    const std::string id = tag_ + "-bake";
    Status st = runc_->run(id, base_ / "bake", log_w.get());
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    for (int i = 0; i < 5; ++i) ASSERT_NE(http_get(*bake, "/"), "");
    ballast_ = http_get(*bake, "/ballast");
    ASSERT_EQ(ballast_.rfind("8 ", 0), 0u) << ballast_;
    image_ = base_ / "image";
    CheckpointOptions co;
    co.image_dir = image_;
    co.work_dir = base_ / "bake-work";
    ASSERT_TRUE(fs::make_dirs(co.work_dir).ok());
    st = runc_->checkpoint(id, co);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    (void)runc_->remove(id);
    ::sync();
    ASSERT_TRUE(cleanup_instance("bake").ok());
  }

  static void TearDownTestSuite() {
    if (base_.empty()) return;
    (void)fs::remove_all(base_);
  }

  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_FALSE(image_.empty()) << "the bake failed";
    backend_ = make_criu_direct(runc_, base_ / "state");
  }

  void TearDown() override {
    for (const auto& name : names_) {
      (void)backend_->remove(tag_ + "-" + name);
      (void)cleanup_instance(name);
    }
    for (const auto& name : names_) {
      const std::string id = tag_ + "-" + name;
      EXPECT_FALSE(stdfs::exists(base_ / "state" / id)) << "state dir of " << id << " left";
      for (const auto& d : CgroupSet("prewarm-" + id).dirs())
        EXPECT_FALSE(stdfs::exists(d)) << d << " left";
    }
  }

  // netns pw-<tag>-<name> (lo down, as a fresh one is), overlay and bundle at base_/<name>.
  static Result<stdfs::path> prepare_instance(const std::string& name) {
    const std::string id = tag_ + "-" + name;
    PW_ASSIGN(net::NamedNetns ns, net::create_named_netns("pw-" + id));
    stdfs::path dir = base_ / name;
    PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(tiny_rootfs(), dir));
    ContainerConfig c;
    c.rootfs = ov.merged;
    c.argv = {"/bin/counter"};
    c.hostname = name;
    // 8 MiB of patterned memory: large enough for huge pages, checked after restores.
    c.env = {{"BALLAST_MB", "8"}};
    c.netns_path = ns.path;
    c.cgroups_path = "/prewarm-" + id;
    PW_TRY(write_bundle(dir, c));
    if (name == "bake") {
      // The bake has lo up through runc's view of the world; restores get theirs from the backend.
      PW_TRY(run_checked({"ip", "-n", "pw-" + id, "link", "set", "lo", "up"}).ok()
                 ? Status()
                 : Status(Error("ip link set lo up failed")));
    }
    return ns.path;
  }

  static Status cleanup_instance(const std::string& name) {
    const std::string id = tag_ + "-" + name;
    stdfs::path dir = base_ / name;
    PW_TRY(rootfs::unmount(dir / "rootfs"));
    PW_TRY(net::remove_named_netns("pw-" + id));
    return fs::remove_all(dir);
  }

  Result<stdfs::path> instance(const std::string& name) {
    names_.push_back(name);
    return prepare_instance(name);
  }

  RestoreOptions options(const std::string& name) {
    RestoreOptions o;
    o.image_dir = image_;
    o.work_dir = base_ / name / "criu";
    (void)fs::make_dirs(o.work_dir);
    o.stdio_fd = log_w_dup();
    return o;
  }

  int log_w_dup() {
    // Restores write to their own pipe whose read end nobody needs to keep.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return -1;
    pipes_.emplace_back(p[0]);
    pipes_.emplace_back(p[1]);
    return p[1];
  }

  static inline std::string tag_;
  static inline stdfs::path base_;
  static inline stdfs::path image_;
  static inline std::string ballast_;  // the counter's /ballast answer at checkpoint
  static inline std::shared_ptr<Runtime> runc_;
  static inline UniqueFd log_r_;
  std::unique_ptr<Runtime> backend_;
  std::vector<std::string> names_;
  std::vector<UniqueFd> pipes_;
};

TEST_F(CriuDirectTest, RestoresWithStateAndIdentityBeforeResume) {
  auto ns = instance("r1");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-r1";
  RestoreOptions o = options("r1");
  // The tasks are still in CRIU's restorer here (their scheduler state says nothing: it may
  // read R while the restorer waits for CRIU): what counts is that the app's first answer
  // already has the new name, checked below.
  pid_t seen_before_resume = 0;
  o.before_resume = [&](pid_t pid) -> Status {
    seen_before_resume = pid;
    return set_hostname_of(pid, "restored-one");
  };
  const std::string own_cgroups = testing::slurp("/proc/thread-self/cgroup");
  auto r = backend_->restore(id, base_ / "r1", o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_TRUE(r->hook_before_resume);
  EXPECT_GT(r->pid, 0);
  EXPECT_EQ(seen_before_resume, r->pid) << "before_resume got another pid";
  for (const auto& [k, v] : r->phases) std::cerr << "  " << k << " = " << v << "\n";

  // The counter continues from the checkpoint, and sees the new hostname from its first answer.
  EXPECT_EQ(http_get(*ns, "/"), "count=6 hostname=restored-one pid=1\n");

  auto s = backend_->state(id);
  ASSERT_TRUE(s.ok()) << s.error().to_string();
  EXPECT_EQ(s->status, "running");
  EXPECT_EQ(s->pid, r->pid);
  auto l = backend_->list();
  ASSERT_TRUE(l.ok()) << l.error().to_string();
  EXPECT_TRUE(std::any_of(l->begin(), l->end(), [&](const auto& c) { return c.id == id; }));

  // The restored tasks are in the container's cgroups, not ours.
  std::string cg = testing::slurp("/proc/" + std::to_string(r->pid) + "/cgroup");
  EXPECT_NE(cg.find("freezer:/prewarm-" + id), std::string::npos) << cg;
  // criu was started from inside them by this thread, which is back where it was.
  EXPECT_EQ(testing::slurp("/proc/thread-self/cgroup"), own_cgroups);

  ASSERT_TRUE(backend_->pause(id).ok());
  EXPECT_EQ(backend_->state(id)->status, "paused");
  EXPECT_EQ(http_get(*ns, "/count", milliseconds(300)), "");
  ASSERT_TRUE(backend_->resume(id).ok());
  EXPECT_EQ(backend_->state(id)->status, "running");
  EXPECT_EQ(http_get(*ns, "/count"), "6\n");

  auto code = backend_->exec(id, {"/bin/sh", "-c", "test \"$(hostname)\" = restored-one"},
                             std::chrono::seconds(10));
  ASSERT_TRUE(code.ok()) << code.error().to_string();
  EXPECT_EQ(*code, 0);

  ASSERT_TRUE(backend_->kill(id, SIGTERM).ok());
  for (int i = 0; i < 200 && process_exists(r->pid); ++i) {
    ::waitpid(r->pid, nullptr, WNOHANG);
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(backend_->state(id)->status, "stopped");
  ASSERT_TRUE(backend_->remove(id).ok());
  EXPECT_EQ(backend_->state(id).error().kind(), ErrorKind::kNotFound);
  EXPECT_FALSE(process_exists(r->pid));
}

// The VmFlags of the mapping of `pid` that is at least `min_bytes` long and anonymous ("" if none).
std::string vm_flags_of_large_anon(pid_t pid, size_t min_bytes) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  std::string line;
  bool in_large = false;
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {};
    unsigned long off = 0;
    char dev[16] = {};
    unsigned long inode = 1;
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx %15s %lu", &lo, &hi, perms, &off, dev,
                    &inode) == 6) {
      in_large = hi - lo >= min_bytes && inode == 0 && perms[1] == 'w';
      continue;
    }
    if (in_large && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return {};
}

std::string thp_mode() {
  auto s = fs::read_file("/sys/kernel/mm/transparent_hugepage/enabled", 256);
  if (!s.ok()) return "";
  auto l = s->find('['), r = s->find(']');
  return l == std::string::npos || r == std::string::npos ? "" : s->substr(l + 1, r - l - 1);
}

// huge_pages fills large areas with transparent huge pages (prewarm's CRIU patch): the areas
// come back MADV_HUGEPAGE ("hg") with their contents intact; without it they are as dumped.
TEST_F(CriuDirectTest, HugePageFillKeepsMemoryIntact) {
  if (!criu::criu_fills_huge_pages(criu::criu_binary()))
    GTEST_SKIP() << criu::criu_binary() << " lacks prewarm's huge-page patch (run scripts/setup.sh)";
  if (thp_mode() == "never" || thp_mode().empty())
    GTEST_SKIP() << "transparent huge pages are off on this host";
  for (bool huge : {false, true}) {
    SCOPED_TRACE(huge ? "huge pages" : "4 KiB pages");
    const std::string name = huge ? "hp1" : "hp0";
    auto ns = instance(name);
    ASSERT_TRUE(ns.ok()) << ns.error().to_string();
    const std::string id = tag_ + "-" + name;
    RestoreOptions o = options(name);
    o.huge_pages = huge;
    auto r = backend_->restore(id, base_ / name, o);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(http_get(*ns, "/ballast"), ballast_) << "memory restored wrong";
    EXPECT_EQ(http_get(*ns, "/count"), "5\n");
    std::string flags = vm_flags_of_large_anon(r->pid, 8u << 20);
    ASSERT_NE(flags, "") << "no 8 MiB anonymous mapping in the restored counter";
    EXPECT_EQ(flags.find(" hg") != std::string::npos, huge) << flags;
    ASSERT_TRUE(backend_->remove(id).ok());
  }
}

// populate faults in the pages to fill with MADV_POPULATE_WRITE first (prewarm's CRIU patch):
// the memory comes back the same, and CRIU's log says how much it populated; without it, no
// such line.
TEST_F(CriuDirectTest, PopulateFillKeepsMemoryIntact) {
  if (!criu::criu_fills_populate(criu::criu_binary()))
    GTEST_SKIP() << criu::criu_binary() << " lacks prewarm's populate patch (run scripts/setup.sh)";
  for (bool populate : {false, true}) {
    SCOPED_TRACE(populate ? "populate" : "faults");
    const std::string name = populate ? "pp1" : "pp0";
    auto ns = instance(name);
    ASSERT_TRUE(ns.ok()) << ns.error().to_string();
    const std::string id = tag_ + "-" + name;
    RestoreOptions o = options(name);
    o.populate = populate;
    auto r = backend_->restore(id, base_ / name, o);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_EQ(http_get(*ns, "/ballast"), ballast_) << "memory restored wrong";
    EXPECT_EQ(http_get(*ns, "/count"), "5\n");
    auto log = fs::read_file(o.work_dir / "restore.log");
    ASSERT_TRUE(log.ok()) << log.error().to_string();
    const auto at = log->find("prewarm fill: MADV_POPULATE_WRITE of ");
    ASSERT_EQ(at != std::string::npos, populate) << "restore.log: populate line";
    if (populate) {
      // At least the 8 MiB ballast, all of it supported by this kernel.
      const auto line = log->substr(at, log->find('\n', at) - at);
      const unsigned long long bytes = std::stoull(line.substr(line.rfind(" of ") + 4));
      EXPECT_GE(bytes, 8ull << 20) << line;
      EXPECT_EQ(line.find("not supported"), std::string::npos) << line;
    }
    ASSERT_TRUE(backend_->remove(id).ok());
  }
}

// At log level 2 CRIU writes only its errors and warnings: a good restore leaves almost nothing
// in restore.log, and a failed one still explains itself with CRIU's error lines.
TEST_F(CriuDirectTest, QuietLogLevelStillExplainsAFailure) {
  auto ns = instance("q1");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-q1";
  RestoreOptions o = options("q1");
  o.criu_log_level = 2;
  auto r = backend_->restore(id, base_ / "q1", o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(http_get(*ns, "/count"), "5\n");
  auto log = fs::read_file(o.work_dir / "restore.log");
  ASSERT_TRUE(log.ok()) << log.error().to_string();
  EXPECT_EQ(log->find("Preadv"), std::string::npos) << "debug lines at level 2";
  EXPECT_LT(std::count(log->begin(), log->end(), '\n'), 50) << *log;
  ASSERT_TRUE(backend_->remove(id).ok());

  auto ns2 = instance("q2");
  ASSERT_TRUE(ns2.ok()) << ns2.error().to_string();
  stdfs::path bad = base_ / "bad-image-q";
  stdfs::remove_all(bad);
  stdfs::copy(image_, bad, stdfs::copy_options::recursive);
  stdfs::resize_file(bad / "core-1.img", 10);
  RestoreOptions b = options("q2");
  b.image_dir = bad;
  b.criu_log_level = 2;
  auto f = backend_->restore(tag_ + "-q2", base_ / "q2", b);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().kind(), ErrorKind::kRuntime);
  EXPECT_NE(f.error().detail().find("Error ("), std::string::npos) << f.error().to_string();
  EXPECT_NE(f.error().detail().find("PREWARM_CRIU_LOG_LEVEL=4"), std::string::npos)
      << "the heading says how to get the whole log: " << f.error().to_string();
  EXPECT_FALSE(stdfs::exists(base_ / "state" / (tag_ + "-q2")));
  stdfs::remove_all(bad);
}

// The instance's network namespace is new and private: CRIU takes no network lock. prewarm's
// CRIU is told so through its environment (no image view); any other CRIU gets a view of the
// image whose inventory says "skip".
TEST_F(CriuDirectTest, SkipsTheNetworkLockOfTheCheckpoint) {
  auto ns = instance("nl");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-nl";
  RestoreOptions o = options("nl");
  o.criu_log_level = 4;
  auto r = backend_->restore(id, base_ / "nl", o);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(http_get(*ns, "/count"), "5\n");
  auto log = fs::read_file(o.work_dir / "restore.log");
  ASSERT_TRUE(log.ok()) << log.error().to_string();
  if (criu::criu_skips_network_lock_by_env(criu::criu_binary())) {
    EXPECT_NE(log->find("Network lock skipped (CRIU_RESTORE_NETWORK_LOCK=skip)"), std::string::npos);
    EXPECT_FALSE(stdfs::exists(o.work_dir / "images")) << "an image view was made anyway";
  } else {
    EXPECT_TRUE(stdfs::exists(o.work_dir / "images" / "inventory.img")) << "no image view";
  }
  ASSERT_TRUE(backend_->remove(id).ok());
}

TEST_F(CriuDirectTest, RemoveOfRunningContainerLeavesNothing) {
  auto ns = instance("r2");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-r2";
  auto r = backend_->restore(id, base_ / "r2", options("r2"));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(http_get(*ns, "/count"), "5\n");
  ASSERT_TRUE(backend_->pause(id).ok());
  ASSERT_TRUE(backend_->remove(id).ok());
  EXPECT_FALSE(process_exists(r->pid));
  EXPECT_FALSE(stdfs::exists(base_ / "state" / id));
  for (const auto& d : CgroupSet("prewarm-" + id).dirs()) EXPECT_FALSE(stdfs::exists(d)) << d;
  EXPECT_TRUE(backend_->remove(id).ok()) << "a second remove is fine";
}

TEST_F(CriuDirectTest, FailingBeforeResumeLeavesNothing) {
  auto ns = instance("f1");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-f1";
  RestoreOptions o = options("f1");
  pid_t seen = 0;
  o.before_resume = [&](pid_t pid) -> Status {
    seen = pid;
    return Error("identity refused");
  };
  auto r = backend_->restore(id, base_ / "f1", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kRuntime);
  EXPECT_NE(r.error().message().find("identity refused"), std::string::npos) << r.error().to_string();
  EXPECT_NE(r.error().detail(), "") << "no CRIU log lines: " << r.error().to_string();
  EXPECT_GT(seen, 0);
  EXPECT_FALSE(process_exists(seen));
  EXPECT_FALSE(stdfs::exists(base_ / "state" / id));
  for (const auto& d : CgroupSet("prewarm-" + id).dirs()) EXPECT_FALSE(stdfs::exists(d)) << d;
  EXPECT_EQ(http_get(*ns, "/count", milliseconds(200)), "");
}

TEST_F(CriuDirectTest, CorruptImageFailsWithCriuLogLines) {
  auto ns = instance("f2");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-f2";
  stdfs::path bad = base_ / "bad-image";
  stdfs::remove_all(bad);
  stdfs::copy(image_, bad, stdfs::copy_options::recursive);
  // A core image cut short: CRIU cannot read the task's registers.
  stdfs::resize_file(bad / "core-1.img", 10);
  RestoreOptions o = options("f2");
  o.image_dir = bad;
  auto r = backend_->restore(id, base_ / "f2", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().kind(), ErrorKind::kRuntime);
  EXPECT_NE(r.error().detail(), "") << r.error().to_string();
  std::cerr << r.error().to_string() << "\n";
  EXPECT_FALSE(stdfs::exists(base_ / "state" / id));
  for (const auto& d : CgroupSet("prewarm-" + id).dirs()) EXPECT_FALSE(stdfs::exists(d)) << d;
  stdfs::remove_all(bad);
}

TEST_F(CriuDirectTest, DuplicateIdIsAConflictAndKeepsTheFirst) {
  auto ns = instance("d1");
  ASSERT_TRUE(ns.ok()) << ns.error().to_string();
  const std::string id = tag_ + "-d1";
  auto r = backend_->restore(id, base_ / "d1", options("d1"));
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  auto again = backend_->restore(id, base_ / "d1", options("d1"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().kind(), ErrorKind::kConflict);
  EXPECT_EQ(backend_->state(id)->status, "running");
  EXPECT_EQ(http_get(*ns, "/count"), "5\n");
}


}  // namespace
}  // namespace prewarm::oci

namespace prewarm::oci {
namespace {

// A restore that died right after claiming its id, with the root still bind-mounted in its
// state dir and no state written: remove() takes the dir, unmounting the root first, so the
// root's files survive.
TEST_F(CriuDirectTest, RemoveAfterACrashMidRestoreUnmountsTheRootFirst) {
  const std::string id = "crashed-" + fs::random_hex(3);
  const stdfs::path root = base_ / ("root-" + id), state = base_ / "state" / id;
  ASSERT_TRUE(fs::make_dirs(root).ok());
  ASSERT_TRUE(fs::write_file(root / "precious", "keep\n").ok());
  ASSERT_TRUE(fs::make_dirs(state / "criu-root").ok());
  ASSERT_EQ(::mount(root.c_str(), (state / "criu-root").c_str(), nullptr, MS_BIND | MS_REC, nullptr),
            0);
  Status st = backend_->remove(id);
  EXPECT_TRUE(st.ok()) << st.error().to_string();
  EXPECT_FALSE(stdfs::exists(state));
  EXPECT_EQ(testing::slurp(root / "precious"), "keep\n");
  (void)fs::remove_all(root);
}

}  // namespace
}  // namespace prewarm::oci
