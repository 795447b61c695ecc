// The prewarm CLI as a user runs it: bake, run, ps, rm, images, inspect, doctor, and its
// errors. Each test has its own state dir, bridge and subnet.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "probe/probe.h"
#include "support/cli.h"
#include "support/engine_fixture.h"
#include "support/oci_image.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "e" + fs::random_hex(3);
    state_ = stdfs::path("/var/tmp") / ("prewarm-e2e-" + tag_);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=pwbr" + tag_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_.substr(1))};
  }

  void TearDown() override {
    if (state_.empty()) return;
    auto rm = prewarm({"rm", "--all"});
    EXPECT_EQ(rm.status, 0) << rm.err;
    EXPECT_EQ(bridge_ports("pwbr" + tag_), "") << "veths left on the bridge";
    remove_test_bridge("pwbr" + tag_);
    EXPECT_EQ(leftovers(name_ + "-"), "");
    if (!HasFailure()) (void)fs::remove_all(state_);
  }

  // The CLI with this test's environment, or `env` instead.
  RunResult prewarm(const std::vector<std::string>& args,
                    const std::vector<std::string>* env = nullptr) {
    return run_prewarm(args, env != nullptr ? *env : env_);
  }

  // prewarm as the unprivileged user nobody.
  RunResult prewarm_as_nobody(std::vector<std::string> args) {
    std::vector<std::string> argv{kSetpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                                  PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions o;
    o.argv = std::move(argv);
    o.env = env_;
    auto r = run_capture(o, std::chrono::minutes(1));
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }
  static constexpr const char* kSetpriv = "/usr/bin/setpriv";

  static int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

  std::string tag_, name_ = "never";
  stdfs::path state_;
  std::vector<std::string> env_;
};

TEST_F(CliTest, BakeRunPsRmRoundTrip) {
  name_ = "counter-" + tag_;
  auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;
  EXPECT_NE(bake.out.find("baked " + name_), std::string::npos) << bake.out;
  EXPECT_NE(bake.out.find("checkpoint"), std::string::npos);  // phase timings

  auto images = prewarm({"images"});
  EXPECT_NE(images.out.find(name_), std::string::npos) << images.out;
  auto inspect = prewarm({"inspect", name_});
  ASSERT_EQ(code(inspect), 0) << inspect.err;
  auto manifest = json::parse(inspect.out);
  EXPECT_EQ(manifest["verified"], true);
  EXPECT_EQ(manifest["host"]["criuVersion"].get<std::string>().substr(0, 3), "4.2");

  // CRIU's full log for these two (restores log errors and warnings only by default).
  std::vector<std::string> debug_log = env_;
  debug_log.push_back("PREWARM_CRIU_LOG_LEVEL=4");
  auto run = prewarm({"run", name_, "--count", "2"}, &debug_log);
  ASSERT_EQ(code(run), 0) << run.err;
  std::regex line(name_ + "-[0-9a-f]{8} +(10\\.90\\.[0-9.]+) +ready in .* restore");  // subnets.h
  auto lines = std::distance(std::sregex_iterator(run.out.begin(), run.out.end(), line),
                             std::sregex_iterator());
  EXPECT_EQ(lines, 2) << run.out;

  auto ps = prewarm({"ps", "--json"});
  ASSERT_EQ(code(ps), 0) << ps.err;
  auto list = json::parse(ps.out);
  ASSERT_EQ(list.size(), 2u);
  for (const auto& i : list) {
    EXPECT_EQ(i["state"], "ready");  // the lifecycle's
    EXPECT_EQ(i["runtimeState"], "running");  // the process's, as the runtime sees it
    EXPECT_EQ(i["startedBy"], "restore");
    EXPECT_EQ(i["runtime"], "criu");
    // The memory was faulted in range by range before CRIU filled it (prewarm's CRIU patch,
    // on by default), and CRIU logged it at the level asked for.
    auto log = fs::read_file(state_ / "instances" / i["id"].get<std::string>() / "criu" /
                             "restore.log");
    ASSERT_TRUE(log.ok()) << log.error().to_string();
    EXPECT_NE(log->find("Preadv"), std::string::npos) << "no debug lines at level 4";
    if (criu::criu_fills_populate(criu::criu_binary()))
      EXPECT_NE(log->find("prewarm fill: MADV_POPULATE_WRITE of "), std::string::npos)
          << "restore.log of " << i["id"];
    // The image's first restores here: mapped files checked by build-id (CRIU's default).
    EXPECT_FALSE(stdfs::exists(state_ / "instances" / i["id"].get<std::string>() / "criu" /
                               "criu-restore.conf"));
    // /dev comes ready made with the root (the shared /dev layer), bound from the instance's
    // own overlay: nothing to make per instance, writes copied up into its upper.
    const stdfs::path inst = state_ / "instances" / i["id"].get<std::string>();
    EXPECT_FALSE(stdfs::exists(inst / "dev")) << "a /dev made for " << i["id"];
    auto config = json::parse(fs::read_file(inst / "config.json").value());
    std::string dev_source;
    for (const auto& m : config["mounts"])
      if (m["destination"] == "/dev") dev_source = m.value("source", "");
    EXPECT_EQ(dev_source, (inst / "rootfs" / "dev").string());
  }
  size_t stamps = 0;
  for (const auto& e : stdfs::directory_iterator(state_ / "stamps"))
    stamps += e.path().filename().string().rfind("files-ok-", 0) == 0;
  EXPECT_EQ(stamps, 1u) << "one remembered file check for the image over its base";
  // At the default level CRIU logs only errors and warnings; the files were checked once, so
  // this restore checks them by size.
  auto quiet = prewarm({"run", name_});
  ASSERT_EQ(code(quiet), 0) << quiet.err;
  for (const auto& i : json::parse(prewarm({"ps", "--json"}).out)) {
    if (i["id"] == list[0]["id"] || i["id"] == list[1]["id"]) continue;
    auto log = fs::read_file(state_ / "instances" / i["id"].get<std::string>() / "criu" /
                             "restore.log");
    ASSERT_TRUE(log.ok()) << log.error().to_string();
    EXPECT_EQ(log->find("Preadv"), std::string::npos) << "debug lines at the default level";
    auto conf = fs::read_file(state_ / "instances" / i["id"].get<std::string>() / "criu" /
                              "criu-restore.conf");
    ASSERT_TRUE(conf.ok()) << conf.error().to_string();
    EXPECT_EQ(*conf, "file-validation filesize\n");
  }

  auto cold = prewarm({"run", name_, "--cold"});
  ASSERT_EQ(code(cold), 0) << cold.err;
  EXPECT_NE(cold.out.find(" cold"), std::string::npos) << cold.out;

  auto rm_one = prewarm({"rm", list[0]["id"].get<std::string>()});
  EXPECT_EQ(code(rm_one), 0) << rm_one.err;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 3u);  // 2 + quiet + cold - 1
  auto rm_all = prewarm({"rm", "--all"});
  EXPECT_EQ(code(rm_all), 0) << rm_all.err;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 0u);
  EXPECT_EQ(leftovers(name_ + "-"), "");
}

// Runtime in runtime: `prewarm run --foreground` as a pod container's entrypoint, here in a
// network namespace the test makes (standing in for the pod's). The app answers at that
// namespace's address with the checkpointed state, its output is prewarm's, SIGTERM reaches it,
// prewarm exits with the app's status, and nothing is left.
TEST_F(CliTest, ForegroundRunInAGivenNetworkNamespace) {
  name_ = "counter-" + tag_;
  auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;

  const std::string ns = "pwfg-" + tag_;
  const std::string ip = "10.253." + std::to_string(std::stoul(tag_.substr(1), nullptr, 16) % 250) + ".2";
  ASSERT_EQ(std::system(("ip netns add " + ns).c_str()), 0);
  struct NetnsGuard {
    std::string ns;
    ~NetnsGuard() { (void)std::system(("ip netns del " + ns + " 2>/dev/null").c_str()); }
  } guard{ns};
  const std::string in_ns = "ip netns exec " + ns + " ";
  ASSERT_EQ(std::system((in_ns + "ip link set lo up && " + in_ns +
                         "ip link add v0 type veth peer name v1 && " + in_ns + "ip addr add " +
                         ip + "/24 dev v0 && " + in_ns + "ip link set v0 up && " + in_ns +
                         "ip link set v1 up").c_str()),
            0);
  const stdfs::path outcome = state_ / "outcome.json";
  const stdfs::path out_file = state_ / "fg.out", err_file = state_ / "fg.err";
  auto start = [&](std::vector<std::string> extra) {
    UniqueFd out(::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    UniqueFd err(::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_TRUE(out.get() >= 0 && err.get() >= 0);
    SpawnOptions o;
    // nsenter, not `ip netns exec`: that one mounts a fresh /sys without the cgroup hierarchies.
    o.argv = {"nsenter", "--net=/run/netns/" + ns, PREWARM_BINARY_DIR "/cmd/prewarm/prewarm",
              "run", name_, "--foreground", "--outcome-file", outcome.string()};
    o.argv.insert(o.argv.end(), extra.begin(), extra.end());
    o.env = env_;
    o.stdout_fd = out.get();
    o.stderr_fd = err.get();
    auto child = spawn(o);
    EXPECT_TRUE(child.ok()) << (child.ok() ? "" : child.error().message());
    return child;
  };
  auto text_of = [](const stdfs::path& f) {
    auto r = fs::read_file(f, 1 << 20);
    return r.ok() ? *r : std::string();
  };
  auto wait_outcome = [&]() -> json {
    for (int i = 0; i < 600; ++i) {
      auto text = fs::read_file(outcome, 1 << 16);
      if (text.ok()) return json::parse(*text);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return json();
  };
  auto get = [&](const std::string& path) {
    SpawnOptions o;
    o.argv = {"nsenter", "--net=/run/netns/" + ns, "curl", "-s", "-m", "5",
              "http://" + ip + ":8080" + path};
    auto r = run_capture(o, std::chrono::seconds(10));
    return r.ok() ? r->out : std::string();
  };

  // SIGTERM goes to the app, which exits 0 on it.
  auto child = start({"--hostname", "fg-host"});
  ASSERT_TRUE(child.ok());
  json o = wait_outcome();
  ASSERT_TRUE(o.is_object()) << text_of(err_file);
  EXPECT_EQ(o["restored"], true) << o.dump();
  std::string answer = get("/");
  EXPECT_EQ(answer.find("count=6 hostname=fg-host "), 0u) << answer;  // the checkpoint held 5
  auto err = text_of(err_file);
  EXPECT_NE(err.find("restored " + name_), std::string::npos) << err;
  ::kill(child->pid(), SIGTERM);
  auto status = child->wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 0u);
  EXPECT_EQ(leftovers(name_ + "-"), "");

  // The app killed from outside: prewarm exits as the app did (128 + SIGKILL).
  ::unlink(outcome.c_str());
  auto second = start({});
  ASSERT_TRUE(second.ok());
  o = wait_outcome();
  ASSERT_TRUE(o.is_object() && o.contains("pid"));
  ::kill(o["pid"].get<pid_t>(), SIGKILL);
  status = second->wait(std::chrono::seconds(30));
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 128 + SIGKILL) << *status;
  EXPECT_EQ(json::parse(prewarm({"ps", "--json"}).out).size(), 0u);
  EXPECT_EQ(leftovers(name_ + "-"), "");
}

// rootfs: {image: oci:LAYOUT:TAG} (issue 9): the tiny example baked from an OCI image layout the
// test writes (its rootfs as one zstd layer); inspect shows the image, and a restored copy
// continues the warm counter.
TEST_F(CliTest, BakesFromAnOciImageLayoutAndRestoresTheWarmCounter) {
  name_ = "oci-" + tag_;
  ASSERT_TRUE(fs::make_dirs(state_).ok());
  env_.push_back("PREWARM_CACHE_DIR=" + (state_ / "cache").string());
  const auto rootfs = stdfs::path(PREWARM_EXAMPLE_TINY_SPEC).parent_path() / "rootfs";
  auto tar = tar_of_dir(rootfs);
  ASSERT_TRUE(tar.ok()) << tar.error().to_string();
  auto layer = make_layer(*tar, image::Compression::kZstd);
  ASSERT_TRUE(layer.ok()) << layer.error().to_string();
  const TestImage img = make_image({*layer});
  ASSERT_TRUE(write_layout(state_ / "layout", {{"v1", img}}).ok());
  // A relative layout path: it resolves against the spec's directory.
  std::string spec = std::regex_replace(slurp(PREWARM_EXAMPLE_TINY_SPEC),
                                        std::regex("directory: \"[^\"]+\""),
                                        "image: \"oci:layout:v1\"");
  ASSERT_TRUE(fs::write_file(state_ / "spec.yaml", spec).ok());

  auto bake = prewarm({"bake", (state_ / "spec.yaml").string(), "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;
  auto inspect = prewarm({"inspect", name_});
  ASSERT_EQ(code(inspect), 0) << inspect.err;
  auto m = json::parse(inspect.out);
  EXPECT_EQ(m["rootfs"]["id"], "image:" + img.manifest_digest());
  EXPECT_EQ(m["rootfs"]["dir"],
            (state_ / "cache" / "rootfs" / "image" / img.manifest_digest().substr(7)).string());
  EXPECT_EQ(m["rootfs"]["image"]["reference"], "oci:" + (state_ / "layout").string() + ":v1");
  EXPECT_EQ(m["rootfs"]["image"]["manifestDigest"], img.manifest_digest());
  EXPECT_EQ(m["rootfs"]["image"]["configDigest"], img.config_digest());

  auto run = prewarm({"run", name_, "--json"});
  ASSERT_EQ(code(run), 0) << run.err;
  auto started = json::parse(run.out);
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0]["startedBy"], "restore") << run.out;
  auto got = probe::http_get(started[0]["ip"].get<std::string>(), 8080, "/", {},
                             std::chrono::milliseconds(3000));
  ASSERT_TRUE(got.ok()) << got.error().to_string();
  EXPECT_NE(got->body.find("count=6 "), std::string::npos) << got->body;
}

// Two state dirs on one bridge draw addresses from one pool (issue 8): distinct IPs and MACs,
// and removing everything in one leaves the other's instance and lease alone.
TEST_F(CliTest, TwoStateDirsOnOneBridgeGetDistinctAddresses) {
  name_ = "counter-" + tag_;
  const stdfs::path state2 = state_.string() + "-2";
  std::vector<std::string> env2 = env_;
  env2[0] = "PREWARM_STATE_DIR=" + state2.string();
  auto prewarm_in = [&](const std::vector<std::string>& env, std::vector<std::string> args) {
    return prewarm(std::move(args), &env);
  };
  std::vector<std::string> ips, macs;
  for (const auto* env : {&env_, &env2}) {
    auto bake = prewarm_in(*env, {"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
    ASSERT_EQ(code(bake), 0) << bake.err;
    auto run = prewarm_in(*env, {"run", name_, "--json"});
    ASSERT_EQ(code(run), 0) << run.err;
    auto started = json::parse(run.out);
    ips.push_back(started[0]["ip"]);
    auto link = run_checked({"ip", "-n", "pw-" + started[0]["id"].get<std::string>(), "-o",
                             "link", "show", "eth0"});
    ASSERT_TRUE(link.ok()) << link.error().message();
    std::smatch m;
    ASSERT_TRUE(std::regex_search(*link, m, std::regex("link/ether ([0-9a-f:]+)"))) << *link;
    macs.push_back(m[1]);
  }
  EXPECT_NE(ips[0], ips[1]);
  EXPECT_NE(macs[0], macs[1]);
  auto rm2 = prewarm_in(env2, {"rm", "--all"});
  EXPECT_EQ(code(rm2), 0) << rm2.err;
  auto ps = json::parse(prewarm({"ps", "--json"}).out);
  ASSERT_EQ(ps.size(), 1u);
  EXPECT_EQ(ps[0]["ip"], ips[0]);
  EXPECT_EQ(ps[0]["runtimeState"], "running");
  EXPECT_TRUE(stdfs::exists(net::net_state_dir("pwbr" + tag_) / "ips" / ips[0]));
  (void)fs::remove_all(state2);
}

TEST_F(CliTest, MalformedSpecNamesTheField) {
  auto spec = state_ / "bad.yaml";
  ASSERT_TRUE(fs::make_dirs(state_).ok());
  ASSERT_TRUE(fs::write_file(spec, "name: bad\nrootfs: {directory: /}\ncommand: [\"/bin/true\"]\n"
                                   "readinessProbe:\n  httpGet: {path: /, port: 70000}\n").ok());
  auto r = prewarm({"bake", spec.string()});
  EXPECT_EQ(code(r), 1);
  EXPECT_NE(r.err.find("readinessProbe.httpGet.port"), std::string::npos) << r.err;
}

TEST_F(CliTest, UnknownImageAndInstanceAreClearErrors) {
  auto run = prewarm({"run", "nosuchimage"});
  EXPECT_EQ(code(run), 1);
  EXPECT_NE(run.err.find("no image named 'nosuchimage'"), std::string::npos) << run.err;
  auto rm = prewarm({"rm", "nosuchinstance"});
  EXPECT_EQ(code(rm), 1);
  EXPECT_NE(rm.err.find("no instance nosuchinstance"), std::string::npos) << rm.err;
  auto missing_spec = prewarm({"bake", "/nonexistent/spec.yaml"});
  EXPECT_EQ(code(missing_spec), 1);
  EXPECT_NE(missing_spec.err.find("/nonexistent/spec.yaml"), std::string::npos) << missing_spec.err;
}

// What killed bakes, imports and unpackings left in images/ (a bake's holds a whole checkpoint)
// goes at gc, and gc says how much; a staging dir a live operation holds stays.
TEST_F(CliTest, GcRemovesStagingDirsOfKilledOperations) {
  ASSERT_EQ(code(prewarm({"images"})), 0);
  const stdfs::path images = state_ / "images";
  std::vector<stdfs::path> stale{images / ".bake-app-dead0001", images / ".old-app-dead0001",
                                 images / ".import-app-dead01"};
  for (const auto& d : stale) {
    ASSERT_TRUE(fs::make_dirs(d / "checkpoint", 0700).ok());
    ASSERT_TRUE(fs::write_file(d / "checkpoint" / "pages-1.img", std::string(1000, 's')).ok());
  }
  auto live = fs::StagingDir::create(images, ".bake-app-");
  ASSERT_TRUE(live.ok()) << live.error().message();
  ASSERT_TRUE(fs::write_file(live->path() / "pages-1.img", "live").ok());

  auto gc = prewarm({"gc"});
  ASSERT_EQ(code(gc), 0) << gc.err;
  EXPECT_NE(gc.out.find("removed 3 staging dir(s)"), std::string::npos) << gc.out;
  EXPECT_NE(gc.out.find("(3000 bytes) freed"), std::string::npos) << gc.out;
  for (const auto& d : stale) EXPECT_FALSE(stdfs::exists(d)) << d;
  EXPECT_TRUE(stdfs::exists(live->path() / "pages-1.img"));
}

// Not root: the verbs that run containers say so up front and make nothing; the others say
// the state dir is root-only, and work on a state dir of the user's own.
TEST_F(CliTest, NonRootIsToldToRunAsRoot) {
  if (::access(kSetpriv, X_OK) != 0) GTEST_SKIP() << kSetpriv << " is missing: cannot drop root";
  for (std::vector<std::string> args :
       {std::vector<std::string>{"bake", PREWARM_EXAMPLE_TINY_SPEC}, {"run", "counter"}, {"ps"},
        {"rm", "--all"}, {"gc"}}) {
    auto r = prewarm_as_nobody(args);
    EXPECT_EQ(code(r), 1) << args[0];
    EXPECT_NE(r.err.find("this command must run as root (it uses CRIU, namespaces and mounts)"),
              std::string::npos) << args[0] << ": " << r.err;
    EXPECT_EQ(r.err.find("chmod"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(stdfs::exists(state_)) << "made before refusing";

  ASSERT_EQ(code(prewarm({"images"})), 0);  // root makes the (root-only) state dir
  auto images = prewarm_as_nobody({"images"});
  EXPECT_EQ(code(images), 1);
  EXPECT_NE(images.err.find("state dir " + state_.string() + " is not accessible to uid 65534"),
            std::string::npos) << images.err;
  EXPECT_NE(images.err.find("run prewarm as root"), std::string::npos) << images.err;

  const stdfs::path own = state_.string() + "-nobody";
  ASSERT_TRUE(fs::make_dirs(own, 0700).ok());
  ASSERT_EQ(::chown(own.c_str(), 65534, 65534), 0);
  auto mine = prewarm_as_nobody({"--state-dir", own.string(), "images"});
  EXPECT_EQ(code(mine), 0) << mine.err;
  (void)fs::remove_all(own);
}

// A bake whose app dies before it is ready leaves nothing of its instance behind.
TEST_F(CliTest, FailedBakeLeavesNoInstanceBehind) {
  name_ = "dies-" + tag_;
  ASSERT_TRUE(fs::make_dirs(state_).ok());
  const auto rootfs = stdfs::path(PREWARM_EXAMPLE_TINY_SPEC).parent_path() / "rootfs";
  auto spec = state_ / "dies.yaml";
  ASSERT_TRUE(fs::write_file(spec, "name: " + name_ + "\nrootfs: {directory: \"" +
                                       rootfs.string() +
                                       "\"}\ncommand: [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
                                       "readinessProbe:\n  tcpSocket: {port: 8080}\n"
                                       "  periodMilliseconds: 10\n  failureThreshold: 50\n")
                  .ok());
  auto bake = prewarm({"bake", spec.string()});
  EXPECT_EQ(code(bake), 1) << bake.out;
  std::string left;
  for (const auto& e : stdfs::directory_iterator(state_ / "instances"))
    left += e.path().filename().string() + " ";
  EXPECT_EQ(left, "") << bake.err;
  for (const auto& e : stdfs::directory_iterator(state_ / "images"))
    ADD_FAILURE() << "left in images/: " << e.path();
}

// Image names are checked before any path is made of them.
TEST_F(CliTest, InvalidImageNamesAreRefusedBeforeAnyPathIsBuilt) {
  ASSERT_TRUE(fs::make_dirs(state_ / "images").ok());
  // Bait a path escape would find: a manifest one level above images/.
  ASSERT_TRUE(fs::write_file(state_ / "manifest.json", "{}").ok());
  for (const std::string bad : {"../x", "/etc", "a/b", "..", "../../../../etc"}) {
    const std::string out = (state_ / "out.tar").string();
    for (std::vector<std::string> args :
         {std::vector<std::string>{"inspect", bad}, {"rmi", bad}, {"run", bad},
          {"export", bad, "-o", out}, {"push", bad, "localhost:1/x:y", "--plain-http"},
          {"verify", bad}}) {
      auto r = prewarm(args);
      SCOPED_TRACE(args[0] + " " + bad);
      EXPECT_EQ(code(r), 1);
      EXPECT_NE(r.err.find("image name must be lowercase letters, digits and '-'"),
                std::string::npos) << r.err;
      EXPECT_NE(r.err.find("'" + bad + "'"), std::string::npos) << r.err;
      EXPECT_FALSE(stdfs::exists(out));
    }
  }
  EXPECT_TRUE(stdfs::exists(state_ / "manifest.json"));
  EXPECT_FALSE(stdfs::exists(state_ / "x"));
  EXPECT_FALSE(stdfs::exists(state_ / "images" / "a"));
}

// The disk fills up while CRIU dumps: the error carries CRIU's reason and log lines, and names no
// file the failed bake's cleanup deleted; nothing of the bake is left.
TEST_F(CliTest, DumpOnAFullDiskSaysWhyAndPointsToNoDeletedLog) {
  name_ = "full-" + tag_;
  ASSERT_TRUE(fs::make_dirs(state_, 0700).ok());
  ASSERT_EQ(::mount("pwfull", state_.c_str(), "tmpfs", 0, "size=16m,mode=0700"), 0)
      << std::strerror(errno);
  struct Unmount {
    stdfs::path dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{state_};
  const auto rootfs = stdfs::path(PREWARM_EXAMPLE_TINY_SPEC).parent_path() / "rootfs";
  auto spec = stdfs::path("/var/tmp") / (name_ + ".yaml");
  // The warm-up fills the state dir through the app's overlay (it is on the tmpfs) but for
  // 64 KiB, more than CRIU's log needs and less than the app's pages.
  ASSERT_TRUE(fs::write_file(spec, "name: " + name_ + "\nrootfs: {directory: \"" + rootfs.string() +
                                       "\"}\ncommand: [\"/bin/counter\"]\n"
                                       "ports: [{name: http, containerPort: 8080}]\n"
                                       "readinessProbe:\n  httpGet: {path: /healthz, port: http}\n"
                                       "  periodMilliseconds: 10\n  failureThreshold: 500\n"
                                       "warmup:\n  - exec:\n      command: [\"/bin/sh\", \"-c\", "
                                       "\"head -c 65536 /dev/zero > /tmp/slack; dd if=/dev/zero "
                                       "of=/tmp/fill bs=65536 2>/dev/null; rm /tmp/slack; true\"]\n")
                  .ok());
  fs::RemoveOnExit spec_guard(spec);
  auto bake = prewarm({"bake", spec.string()});
  EXPECT_EQ(code(bake), 1) << bake.out;
  EXPECT_NE(bake.err.find("checkpoint of " + name_), std::string::npos) << bake.err;
  EXPECT_NE(bake.err.find("No space left on device"), std::string::npos) << bake.err;
  EXPECT_NE(bake.err.find("dump.log"), std::string::npos) << bake.err;
  // Every path under the state dir the error names must still be there.
  std::regex path_re(std::regex_replace(state_.string(), std::regex("[.]"), "\\.") +
                     "/[^ :\n]*");
  for (std::sregex_iterator it(bake.err.begin(), bake.err.end(), path_re), end; it != end; ++it)
    EXPECT_TRUE(stdfs::exists(it->str())) << "the error points to " << it->str()
                                          << ", which is gone:\n" << bake.err;
  EXPECT_TRUE(stdfs::is_empty(state_ / "instances")) << bake.err;
  EXPECT_TRUE(stdfs::is_empty(state_ / "images")) << bake.err;
}

TEST_F(CliTest, DoctorPassesOnAPreparedHost) {
  auto r = prewarm({"doctor"});
  EXPECT_EQ(code(r), 0) << r.out;
  EXPECT_NE(r.out.find("criu"), std::string::npos);
  EXPECT_EQ(r.out.find("FAIL"), std::string::npos) << r.out;
}

TEST_F(CliTest, DoctorSaysWhatIsMissing) {
  env_.push_back("PREWARM_CRIU=/nonexistent/criu");
  auto r = prewarm({"doctor"});
  EXPECT_EQ(code(r), 1);
  EXPECT_NE(r.out.find("FAIL criu"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("setup.sh"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace prewarm::testing

namespace prewarm::testing {
namespace {

// prewarm killed (SIGKILL) at different points of `run --count 2`: the next command undoes what
// the dead one left half-made (netns, veth, IP, overlay, cgroups, CRIU and what it restored,
// backend state), keeps what it had finished, and nothing leaks (TearDown checks).
TEST_F(CliTest, KilledRunIsRecoveredByTheNextCommand) {
  name_ = "counter-" + tag_;
  auto bake = prewarm({"bake", PREWARM_EXAMPLE_TINY_SPEC, "--name", name_});
  ASSERT_EQ(code(bake), 0) << bake.err;
  int recovered = 0;
  // CRIU's scratch dirs for the host check, which a kill can leave behind.
  auto scratch = [] {
    std::set<std::string> names;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(stdfs::temp_directory_path(), ec))
      if (e.path().filename().string().rfind("prewarm-criu-", 0) == 0 && e.is_directory(ec))
        names.insert(e.path().filename().string());
    return names;
  };
  const auto scratch_before = scratch();
  for (int delay_ms : {0, 3, 6, 10, 15, 25, 40, 70, 120}) {
    SCOPED_TRACE("killed after " + std::to_string(delay_ms) + " ms");
    // A fresh host check each time, so that some kills land in it.
    for (const auto& e : stdfs::directory_iterator(state_ / "stamps"))
      if (e.path().filename().string().rfind("host-ok-", 0) == 0) stdfs::remove(e.path());
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm", "run", name_, "--count", "2"};
    o.env = env_;
    auto child = spawn(o);
    ASSERT_TRUE(child.ok()) << child.error().message();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    child->kill(SIGKILL);
    ASSERT_TRUE(child->wait(std::chrono::seconds(10)).ok());

    auto ps = prewarm({"ps", "--json"});
    ASSERT_EQ(code(ps), 0) << ps.err;
    if (ps.err.find("left half-made") != std::string::npos) ++recovered;
    auto list = json::parse(ps.out);
    for (const auto& i : list) {
      // Only instances that were ready survive, and they run.
      EXPECT_EQ(i["state"], "ready") << i.dump();
      EXPECT_EQ(i["runtimeState"], "running") << i.dump();
    }
  }
  // Some kills must have hit a start in the middle, or this tested nothing.
  EXPECT_GT(recovered, 0);
  auto rm = prewarm({"rm", "--all"});
  EXPECT_EQ(code(rm), 0) << rm.err;
  EXPECT_TRUE(stdfs::is_empty(state_ / "instances"));
  // The host check's scratch dirs that killed runs left are gone after gc (as is every staging
  // dir no live prewarm holds; each host check also clears them).
  auto gc = prewarm({"gc"});
  EXPECT_EQ(code(gc), 0) << gc.err;
  std::vector<std::string> left;
  for (const auto& n : scratch())
    if (!scratch_before.count(n)) left.push_back(n);
  EXPECT_TRUE(left.empty()) << left.size() << " scratch dir(s) left, e.g. /tmp/" << left.front();
}

}  // namespace
}  // namespace prewarm::testing
