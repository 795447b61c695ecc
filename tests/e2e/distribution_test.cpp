// Checkpoint images travelling between two prewarm nodes through a real OCI registry: node A
// bakes and pushes, node B pulls and restores. Corrupted, cut and tampered transfers fail by
// digest and leave nothing behind. Both nodes are state dirs of the real CLI on this host, each
// with its own bridge and subnet; the registry is docker-registry started per test.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "probe/probe.h"
#include "registry/registry.h"
#include "support/engine_fixture.h"
#include "support/oci_image.h"
#include "support/registry_server.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

// One prewarm installation: a state dir, its bridge and subnet, given to the CLI by env.
struct Node {
  std::string tag;
  int subnet_third = 0;
  stdfs::path state;
  std::vector<std::string> env;
  std::string bridge() const { return "pwbr" + tag; }
  stdfs::path blob(const std::string& digest) const {
    return state / "store" / "blobs" / "sha256" / digest.substr(7);
  }
};

Node make_node(int avoid_third) {
  Node n;
  n.tag = "d" + fs::random_hex(3);
  // The other node's bridge may not be made yet, so its subnet is avoided by hand.
  n.subnet_third = testing::free_test_octet(std::stoul(n.tag.substr(1), nullptr, 16));
  if (n.subnet_third == avoid_third) n.subnet_third = testing::free_test_octet(avoid_third + 1);
  n.state = stdfs::path("/var/tmp") / ("prewarm-dist-" + n.tag);
  n.env = {"PREWARM_STATE_DIR=" + n.state.string(), "PREWARM_BRIDGE=" + n.bridge(),
           "PREWARM_SUBNET=" + testing::test_subnet(n.subnet_third)};
  return n;
}

int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

struct Descriptor {
  std::string digest;
  uint64_t size = 0;
};

// The layers (chunk blobs) of an image in a node's store, from index.json and the manifest.
std::vector<Descriptor> store_layers(const Node& n, const std::string& name) {
  std::vector<Descriptor> out;
  json index = json::parse(slurp(n.state / "store" / "index.json"), nullptr, false);
  if (!index.is_object()) return out;
  for (const auto& m : index["manifests"]) {
    if (m["annotations"].value("org.opencontainers.image.ref.name", "") != name) continue;
    json manifest = json::parse(slurp(n.blob(m["digest"].get<std::string>())), nullptr, false);
    if (!manifest.is_object()) return out;
    for (const auto& l : manifest["layers"])
      out.push_back({l["digest"].get<std::string>(), l["size"].get<uint64_t>()});
  }
  return out;
}

// Files in the store's blob directory (temporary downloads, named ".tmp-…", apart).
std::vector<std::string> blob_files(const Node& n, bool temporary = false) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(n.state / "store" / "blobs" / "sha256", ec)) {
    std::string f = e.path().filename().string();
    if ((f[0] == '.') == temporary) out.push_back(f);
  }
  return out;
}

// The pack holding the middle of the largest pages file of name_ on node A: heap memory, which
// a lazy restore serves on demand (no working-set page lies there).
std::string pack_in_the_middle_of_the_pages(const Node& a, const std::string& name) {
  json index = json::parse(slurp(a.state / "store" / "index.json"), nullptr, false);
  for (const auto& m : index["manifests"]) {
    if (m["annotations"].value("org.opencontainers.image.ref.name", "") != name) continue;
    json manifest = json::parse(slurp(a.blob(m["digest"].get<std::string>())), nullptr, false);
    json config = json::parse(slurp(a.blob(manifest["config"]["digest"].get<std::string>())), nullptr, false);
    json best;
    for (const auto& f : config["files"])
      if (f["path"].get<std::string>().starts_with("checkpoint/pages-") &&
          (best.is_null() || f["size"].get<uint64_t>() > best["size"].get<uint64_t>()))
        best = f;
    if (best.is_null()) return {};
    const uint64_t middle = best["size"].get<uint64_t>() / 2;
    for (const auto& c : best["chunks"])
      if (c["offset"].get<uint64_t>() + c["length"].get<uint64_t>() > middle)
        return c["digest"].get<std::string>();
  }
  return {};
}

// Whether a pull of `name` runs on node n: it holds STATE/pulls/NAME.lock.
bool pulling(const Node& n, const std::string& name) {
  UniqueFd fd(::open((n.state / "pulls" / (name + ".lock")).c_str(), O_RDONLY | O_CLOEXEC));
  return fd.valid() && ::flock(fd.get(), LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
}

class DistributionTest : public ::testing::Test {
 protected:
  static constexpr int kPort = 8080;  // the tiny example's HTTP port

  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    if (auto why = registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
    a_ = make_node(0);
    b_ = make_node(a_.subnet_third);
    name_ = "counter-" + a_.tag;
    pulled_ = name_ + "-b";
    registry_dir_ = std::make_unique<TempDir>("prewarm-dist-registry");
    registry_ = std::make_unique<RegistryServer>();
    auto st = registry_->start(registry_dir_->path());
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }

  void TearDown() override {
    if (a_.state.empty()) return;
    for (const Node* n : {&a_, &b_}) {
      auto rm = prewarm(*n, {"rm", "--all"});
      EXPECT_EQ(code(rm), 0) << rm.err;
      EXPECT_EQ(bridge_ports(n->bridge()), "") << "veths left on " << n->bridge();
      remove_test_bridge(n->bridge());
      EXPECT_EQ(leftovers(n->state.filename().string()), "");
    }
    EXPECT_EQ(leftovers(name_ + "-"), "") << "left behind by instances of " << name_;
    proxy_.reset();
    if (registry_) {
      if (HasFailure()) std::fprintf(stderr, "registry log:\n%s\n", registry_->log().c_str());
      pid_t pid = registry_->pid();
      registry_->stop();
      if (pid > 0) {
        EXPECT_EQ(slurp("/proc/" + std::to_string(pid) + "/cmdline").find("docker-registry"),
                  std::string::npos) << "docker-registry (pid " << pid << ") still running";
      }
    }
    stdfs::path registry_path = registry_dir_ ? registry_dir_->path() : stdfs::path();
    registry_dir_.reset();
    if (!registry_path.empty()) {
      EXPECT_FALSE(stdfs::exists(registry_path));
    }
    for (const Node* n : {&a_, &b_}) {
      if (HasFailure()) {
        std::fprintf(stderr, "state dir kept for inspection: %s\n", n->state.c_str());
        continue;
      }
      (void)fs::remove_all(n->state);
      EXPECT_FALSE(stdfs::exists(n->state));
    }
  }

  RunResult prewarm(const Node& n, std::vector<std::string> args) {
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.env = n.env;
    auto r = run_capture(o, std::chrono::minutes(5));
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }

  std::unique_ptr<TempDir> spec_dir_;

  std::string ref(uint16_t port, const std::string& tag = "v1") const {
    return "127.0.0.1:" + std::to_string(port) + "/prewarm/counter:" + tag;
  }

  // The tiny example's spec with its rootfs as a tarball (a base prewarm builds and finds by
  // digest on any node; a directory base is not allowed to images from elsewhere) and one file
  // taken from a host file, written to spec_dir_. The tarball is made reproducibly, so every
  // test shares one cache entry.
  stdfs::path tarball_spec(const std::string& host_file_text = "from-the-baking-host\n",
                           const std::string& spec_file = PREWARM_EXAMPLE_TINY_SPEC) {
    spec_dir_ = std::make_unique<TempDir>("prewarm-dist-spec");
    const stdfs::path dir = spec_dir_->path();
    std::string spec = slurp(spec_file);
    std::smatch m;
    EXPECT_TRUE(std::regex_search(spec, m, std::regex("directory: \"([^\"]+)\"")));
    auto tar = run_checked({"tar", "-C", m[1].str(), "--sort=name", "--mtime=@0", "--owner=0",
                            "--group=0", "--numeric-owner", "-cf", (dir / "base.tar").string(),
                            "."});
    EXPECT_TRUE(tar.ok()) << tar.error().to_string();
    spec = std::regex_replace(spec, std::regex("directory: \"[^\"]+\""), "tarball: \"base.tar\"");
    spec = std::regex_replace(spec, std::regex("files:\n"),
                              "files:\n  - path: /etc/from-host\n    source: host-file\n");
    EXPECT_TRUE(fs::write_file(dir / "host-file", host_file_text).ok());
    EXPECT_TRUE(fs::write_file(dir / "spec.yaml", spec).ok());
    return dir / "spec.yaml";
  }

  // Bakes the tiny example (tarball_spec(), or `spec`) on node A under name_.
  void bake_on_a(stdfs::path spec = {}) {
    if (spec.empty()) spec = tarball_spec();
    auto bake = prewarm(a_, {"bake", spec.string(), "--name", name_});
    ASSERT_EQ(code(bake), 0) << bake.err;
  }

  // Pushes name_ from node A; returns {blobs uploaded, blobs already there}.
  std::pair<int, int> push_from_a() {
    auto push = prewarm(a_, {"push", name_, ref(registry_->port())});
    EXPECT_EQ(code(push), 0) << push.err;
    std::smatch m;
    std::regex line("pushed " + name_ + " to " + std::regex_replace(ref(registry_->port()),
                                                                    std::regex("\\."), "\\.") +
                    ": ([0-9]+) blob\\(s\\) uploaded \\([0-9.]+ MB\\), ([0-9]+) already there");
    if (!std::regex_search(push.out, m, line)) {
      ADD_FAILURE() << "no 'pushed' line in: " << push.out;
      return {-1, -1};
    }
    return {std::stoi(m[1]), std::stoi(m[2])};
  }

  RunResult pull_on_b(uint16_t port) {
    return prewarm(b_, {"pull", ref(port), "--name", pulled_});
  }

  // Starts one instance of `image` on node B; returns the body of GET / on it (the restored
  // counter), after checking it was restored, not cold-started.
  std::string run_on_b(const std::string& image) {
    auto run = prewarm(b_, {"run", image});
    EXPECT_EQ(code(run), 0) << run.err;
    std::smatch m;
    std::regex line("(" + image + "-[0-9a-f]{8}) +([0-9.]+) +ready in .* (restore|cold)( \\(lazy\\))?\n");
    if (!std::regex_search(run.out, m, line)) {
      ADD_FAILURE() << "no instance line in: " << run.out;
      return {};
    }
    EXPECT_EQ(m[3], "restore") << run.out;
    auto r = probe::http_get(m[2].str(), kPort, "/", {}, std::chrono::milliseconds(3000));
    EXPECT_TRUE(r.ok()) << r.error().to_string();
    if (!r.ok()) return {};
    EXPECT_NE(r->body.find("hostname=" + m[1].str()), std::string::npos) << r->body;
    return r->body;
  }

  // 64 bytes from the middle of the largest layer of name_ on node A, found in no other blob
  // there: a proxy that acts where they pass hits that blob's body and nothing else.
  std::pair<Descriptor, std::string> needle_in_a_layer() {
    auto layers = store_layers(a_, name_);
    EXPECT_FALSE(layers.empty());
    Descriptor big;
    for (const auto& l : layers)
      if (l.size > big.size) big = l;
    std::string data = slurp(a_.blob(big.digest));
    if (data.size() < 256) {
      ADD_FAILURE() << "largest layer " << big.digest << " has only " << data.size() << " bytes";
      return {};
    }
    std::string needle = data.substr(data.size() / 2, 64);
    for (const auto& f : blob_files(a_)) {
      if (f == big.digest.substr(7)) continue;
      EXPECT_EQ(slurp(a_.blob("sha256:" + f)).find(needle), std::string::npos)
          << "needle not unique: also in " << f;
    }
    return {big, needle};
  }

  // Bakes the 64 MiB heap example (a tarball base) on A and pushes it; starts `prewarm pull`
  // of it on B (its output to `said`) through a proxy that holds back the pack holding the
  // middle of the heap, with restores lazy by default there; returns once the pull holds its
  // lock.
  Child start_held_pull(const stdfs::path& said) {
    bake_on_a(tarball_spec("", PREWARM_EXAMPLE_HEAP_SPEC_DIR "/heap-64.yaml"));
    if (HasFatalFailure()) return {};
    push_from_a();
    const std::string held = pack_in_the_middle_of_the_pages(a_, name_);
    EXPECT_FALSE(held.empty());
    proxy_ = std::make_unique<TcpProxy>(registry_->port());
    proxy_->hold_requests_containing("/blobs/" + held);
    b_.env.push_back("PREWARM_LAZY_MIN_MB=0");
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm", "pull", ref(proxy_->port()), "--name", pulled_};
    o.env = b_.env;
    UniqueFd fd(::open(said.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    o.stderr_fd = o.stdout_fd = fd.get();
    auto pull = spawn(o);
    if (!pull.ok()) {
      ADD_FAILURE() << pull.error().to_string();
      return {};
    }
    for (int i = 0; i < 500 && !pulling(b_, pulled_); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!pulling(b_, pulled_)) ADD_FAILURE() << "the pull never took its lock: " << slurp(said);
    return std::move(pull).value();
  }

  Node a_, b_;
  std::string name_, pulled_;
  std::unique_ptr<TempDir> registry_dir_;
  std::unique_ptr<RegistryServer> registry_;
  std::unique_ptr<TcpProxy> proxy_;
};

TEST_F(DistributionTest, PulledCheckpointRestoresWithItsStateOnAnotherNode) {
  auto before = prewarm(b_, {"images"});
  EXPECT_EQ(before.out.find(pulled_), std::string::npos) << before.out;
  bake_on_a();
  if (HasFatalFailure()) return;
  auto [uploaded, already] = push_from_a();
  EXPECT_GE(uploaded, 2);  // config and pack(s)
  EXPECT_EQ(already, 0);

  auto pull = pull_on_b(registry_->port());
  ASSERT_EQ(code(pull), 0) << pull.err;
  EXPECT_NE(pull.out.find("pulled " + ref(registry_->port()) + " as " + pulled_ + ": " +
                          std::to_string(uploaded) + " blob(s) downloaded"),
            std::string::npos) << pull.out;
  auto images = prewarm(b_, {"images"});
  ASSERT_EQ(code(images), 0) << images.err;
  EXPECT_TRUE(std::regex_search(images.out, std::regex(pulled_ + " .* yes +sha256:")))
      << images.out;

  // The warm-up's five requests were checkpointed on A: B's first request is the sixth.
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  auto ps = prewarm(b_, {"ps", "--json"});
  ASSERT_EQ(code(ps), 0) << ps.err;
  auto list = json::parse(ps.out);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["startedBy"], "restore");
  EXPECT_EQ(list[0]["image"], pulled_);
  EXPECT_EQ(json::parse(prewarm(a_, {"ps", "--json"}).out).size(), 0u);
}

// Issue 10: a node that pulls an image its restores take lazily (every image here, with
// PREWARM_LAZY_MIN_MB=0; by default those of 256 MiB of memory or more) does not unpack it:
// a lazy copy holds the small files and the working set, and the restore's other pages come
// straight from the pulled packs.
TEST_F(DistributionTest, LazyImagesArePulledWithoutUnpackingAndRestoreFromThePacks) {
  bake_on_a();
  if (HasFatalFailure()) return;
  push_from_a();
  b_.env.push_back("PREWARM_LAZY_MIN_MB=0");
  auto pull = pull_on_b(registry_->port());
  ASSERT_EQ(code(pull), 0) << pull.err;
  EXPECT_FALSE(stdfs::exists(b_.state / "images" / pulled_)) << "unpacked anyway";
  auto images = prewarm(b_, {"images"});
  EXPECT_TRUE(std::regex_search(images.out, std::regex(pulled_ + " .* no +sha256:"))) << images.out;
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  EXPECT_FALSE(stdfs::exists(b_.state / "images" / pulled_)) << "unpacked by the restore";
  // rmi takes the lazy copy with the image.
  ASSERT_EQ(code(prewarm(b_, {"rm", "--all"})), 0);
  ASSERT_EQ(code(prewarm(b_, {"rmi", pulled_})), 0);
  std::error_code ec;
  EXPECT_TRUE(stdfs::is_empty(b_.state / "lazy-copies", ec)) << "lazy copy left";
}

// Issue 10: a restore that starts while the pull is still bringing the image. The 64 MiB heap
// example (incompressible: 32 packs) is pulled through a proxy that holds back the download of
// one pack of heap pages. The pull makes the lazy copy first and says the image can be
// restored; a restore then answers with the checkpointed state while that pack is still held
// and the image is not yet in the store's index; once the pack arrives the pull ends, and the
// whole heap checks out (every page served, the held ones from the pack that came last).
TEST_F(DistributionTest, RestoresWhileThePullIsStillBringingItsPages) {
  TempDir out("prewarm-dist-pull-out");
  const stdfs::path said_file = out.path() / "err";
  Child pull = start_held_pull(said_file);
  if (HasFailure()) return;

  // `run` waits for the pull's first part by itself.
  auto run = prewarm(b_, {"run", pulled_});
  ASSERT_EQ(code(run), 0) << run.err << "\npull: " << slurp(said_file);
  EXPECT_NE(run.err.find("still being pulled; restoring lazily"), std::string::npos) << run.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(run.out, m, std::regex("(" + pulled_ + "-[0-9a-f]{8}) +([0-9.]+) +ready in .* restore \\(lazy\\)")))
      << run.out;
  const std::string ip = m[2];
  auto first = probe::http_get(ip, kPort, "/", {}, std::chrono::milliseconds(3000));
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  EXPECT_NE(first->body.find("count=4 "), std::string::npos) << first->body;
  // All of that with the pack still held: the pull runs, the image is not indexed yet.
  EXPECT_GE(proxy_->held(), 1);
  EXPECT_FALSE(process_is_zombie(pull.pid()));
  EXPECT_EQ(::kill(pull.pid(), 0), 0) << "the pull ended: " << slurp(said_file);
  EXPECT_EQ(slurp(b_.state / "store" / "index.json").find(pulled_), std::string::npos);

  proxy_->release_held();
  auto status = pull.wait(std::chrono::minutes(2));
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << slurp(said_file);
  const std::string said = slurp(said_file);
  EXPECT_NE(said.find("can be restored now (lazily); pulling its other"), std::string::npos) << said;
  auto check = probe::http_get(ip, kPort, "/check", {}, std::chrono::milliseconds(30000));
  ASSERT_TRUE(check.ok()) << check.error().to_string();
  EXPECT_EQ(check->status, 200) << check->body;
  EXPECT_NE(check->body.find(" ok"), std::string::npos) << check->body;
  auto images = prewarm(b_, {"images"});
  EXPECT_NE(images.out.find(pulled_), std::string::npos) << images.out;
  EXPECT_FALSE(stdfs::exists(b_.state / "pulls" / (pulled_ + ".json")));
}

// The pull stops (killed) before the held pack arrives: the restored instance cannot get those
// pages, so it is stopped and `ps` says why; a later `run` finds no image and no pull, and a
// pull again completes the image from what the first one kept.
TEST_F(DistributionTest, APullKilledBeforeItsPagesArriveStopsTheInstanceAndSaysWhy) {
  TempDir out("prewarm-dist-pull-out");
  Child pull = start_held_pull(out.path() / "err");
  if (HasFailure()) return;
  auto run = prewarm(b_, {"run", pulled_});
  ASSERT_EQ(code(run), 0) << run.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(run.out, m, std::regex("(" + pulled_ + "-[0-9a-f]{8}) +([0-9.]+) +ready in")))
      << run.out;
  const std::string id = m[1];

  pull.kill(SIGKILL);
  (void)pull.wait(std::chrono::seconds(10));
  // The heap's pages never come: the instance is stopped, with the reason.
  json ps;
  for (int i = 0; i < 200; ++i) {
    ps = json::parse(prewarm(b_, {"ps", "--json"}).out, nullptr, false);
    if (ps.is_array() && ps.size() == 1 && ps[0].value("runtimeState", "") != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(ps.is_array() && ps.size() == 1) << ps.dump();
  EXPECT_NE(ps[0].value("runtimeState", ""), "running") << ps.dump(2);
  EXPECT_NE(ps[0].value("error", "").find("the pull that was to bring it has stopped"),
            std::string::npos)
      << ps.dump(2);
  ASSERT_EQ(code(prewarm(b_, {"rm", id})), 0);
  proxy_->release_held();
  auto again = prewarm(b_, {"run", pulled_});
  EXPECT_NE(code(again), 0);
  EXPECT_NE(again.err.find("no image named"), std::string::npos) << again.err;
  auto repull = pull_on_b(proxy_->port());
  ASSERT_EQ(code(repull), 0) << repull.err;
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=4 "), std::string::npos) << body;
}

// Untrusted images (issue 8): an image from elsewhere must not reach the host. Its files are
// the contents captured at bake, never a host path looked up again where it starts.
// rootfs: {image: REF} (issue 9): the tiny example baked from a container image in the registry
// on node A, whose checkpoint records the image; node B, with a cache of its own, restores it
// after pulling the base by the recorded digest, and says which base it lacks when it cannot.
TEST_F(DistributionTest, BakedFromAContainerImageRestoresWhereTheBaseIsPulledByDigest) {
  for (Node* n : {&a_, &b_}) n->env.push_back("PREWARM_CACHE_DIR=" + (n->state / "cache").string());
  // The tiny example's rootfs as a one-layer image, pushed with the registry client.
  auto tar = testing::tar_of_dir(stdfs::path(PREWARM_EXAMPLE_TINY_SPEC).parent_path() / "rootfs");
  ASSERT_TRUE(tar.ok()) << tar.error().to_string();
  auto layer = testing::make_layer(*tar, image::Compression::kGzip);
  ASSERT_TRUE(layer.ok()) << layer.error().to_string();
  const testing::TestImage img = testing::make_image({*layer});
  const std::string image_ref =
      "127.0.0.1:" + std::to_string(registry_->port()) + "/prewarm/tiny-rootfs:v1";
  auto parsed = registry::parse_reference(image_ref);
  ASSERT_TRUE(parsed.ok());
  spec_dir_ = std::make_unique<TempDir>("prewarm-dist-spec");
  auto pushed = testing::push_image(*parsed, img, spec_dir_->path() / "blobs", {});
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  std::string spec = std::regex_replace(slurp(PREWARM_EXAMPLE_TINY_SPEC),
                                        std::regex("directory: \"[^\"]+\""),
                                        "image: \"" + image_ref + "\"");
  const stdfs::path spec_file = spec_dir_->path() / "spec.yaml";
  ASSERT_TRUE(fs::write_file(spec_file, spec).ok());

  bake_on_a(spec_file);
  if (HasFatalFailure()) return;
  auto inspect = prewarm(a_, {"inspect", name_});
  ASSERT_EQ(code(inspect), 0) << inspect.err;
  json m = json::parse(inspect.out);
  EXPECT_EQ(m["rootfs"]["id"], "image:" + img.manifest_digest());
  EXPECT_EQ(m["rootfs"]["image"]["reference"], image_ref);
  EXPECT_EQ(m["rootfs"]["image"]["manifestDigest"], img.manifest_digest());
  EXPECT_EQ(m["rootfs"]["image"]["configDigest"], img.config_digest());
  EXPECT_TRUE(stdfs::is_directory(a_.state / "cache" / "rootfs" / "image" /
                                  img.manifest_digest().substr(7)));
  push_from_a();
  auto pull = pull_on_b(registry_->port());
  ASSERT_EQ(code(pull), 0) << pull.err;

  // The rootfs image gone from the registry: B cannot get the base, and says which it lacks.
  registry::http::Client client(registry::http::TransportOptions{
      "", std::chrono::milliseconds(2000), std::chrono::milliseconds(5000),
      std::chrono::milliseconds(5000)});
  registry::http::Request del;
  del.method = "DELETE";
  del.url = registry_->url() + "/v2/prewarm/tiny-rootfs/manifests/" + img.manifest_digest();
  auto deleted = client.perform(del);
  ASSERT_TRUE(deleted.ok()) << deleted.error().to_string();
  ASSERT_EQ(deleted->status, 202) << deleted->body;
  auto missing = prewarm(b_, {"run", pulled_});
  EXPECT_NE(code(missing), 0) << missing.out;
  EXPECT_NE(missing.err.find("its base rootfs image:" + img.manifest_digest() +
                             " is not on this host"),
            std::string::npos)
      << missing.err;
  EXPECT_NE(missing.err.find("not found"), std::string::npos) << missing.err;

  // Pushed again (the same digest): B pulls the base pinned to that digest and restores the
  // warm counter.
  pushed = testing::push_image(*parsed, img, spec_dir_->path() / "blobs", {});
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  EXPECT_TRUE(stdfs::is_directory(b_.state / "cache" / "rootfs" / "image" /
                                  img.manifest_digest().substr(7)));
}

TEST_F(DistributionTest, SpecFilesTravelAsContentsNotHostPaths) {
  stdfs::path spec = tarball_spec("captured-at-bake\n");
  bake_on_a(spec);
  if (HasFatalFailure()) return;
  // The host file changes after the bake: neither node may read it again.
  ASSERT_TRUE(fs::write_file(spec.parent_path() / "host-file", "changed-later\n").ok());
  push_from_a();
  auto pull = pull_on_b(registry_->port());
  ASSERT_EQ(code(pull), 0) << pull.err;
  for (const Node* n : {&a_, &b_}) {
    const std::string image = n == &a_ ? name_ : pulled_;
    auto run = prewarm(*n, {"run", image, "--cold", "--json"});
    ASSERT_EQ(code(run), 0) << run.err;
    auto list = json::parse(run.out, nullptr, false);
    ASSERT_TRUE(list.is_array() && list.size() == 1u) << run.out;
    const std::string id = list[0]["id"];
    EXPECT_EQ(slurp(n->state / "instances" / id / "rootfs" / "etc" / "from-host"),
              "captured-at-bake\n");
  }
  auto inspect = prewarm(b_, {"inspect", pulled_});
  EXPECT_EQ(inspect.out.find("host-file"), std::string::npos) << inspect.out;
}

// An image whose stored spec still names a host file (made by hand, or by an attacker) is
// refused before anything is started; so is one whose base is a host directory, when it was
// not made on this node.
TEST_F(DistributionTest, ImagesFromElsewhereCannotNameHostPaths) {
  bake_on_a(PREWARM_EXAMPLE_TINY_SPEC);  // a directory base: fine where it was baked
  if (HasFatalFailure()) return;
  push_from_a();
  auto pull = pull_on_b(registry_->port());
  ASSERT_EQ(code(pull), 0) << pull.err;
  auto run = prewarm(b_, {"run", pulled_});
  EXPECT_NE(code(run), 0) << run.out;
  EXPECT_NE(run.err.find("is a host directory, and the image was not made on this host"),
            std::string::npos) << run.err;
  auto cold = prewarm(b_, {"run", pulled_, "--cold"});
  EXPECT_NE(code(cold), 0) << cold.out;
  EXPECT_EQ(json::parse(prewarm(b_, {"ps", "--json"}).out).size(), 0u);
  auto on_a = prewarm(a_, {"run", name_});
  EXPECT_EQ(code(on_a), 0) << on_a.err;

  // A prewarm archive whose manifest's spec places /etc/hostname from the host.
  TempDir work("prewarm-dist-tamper");
  const stdfs::path tar = work.path() / "image.tar", tree = work.path() / "tree";
  ASSERT_EQ(code(prewarm(a_, {"export", name_, "-o", tar.string()})), 0);
  ASSERT_TRUE(fs::make_dirs(tree).ok());
  ASSERT_TRUE(run_checked({"tar", "-C", tree.string(), "-xf", tar.string()}).ok());
  const stdfs::path manifest = tree / "prewarm" / "manifest.json";
  json m = json::parse(slurp(manifest));
  std::string spec = m["spec"];
  spec = std::regex_replace(spec, std::regex("rootfs:\n  directory: \"[^\"]+\""),
                            "rootfs:\n  tarball: \"/nonexistent.tar\"");
  // The files travel beside the YAML (specFiles), which has none: the tampered YAML lists its
  // own, and the list beside it is emptied.
  ASSERT_EQ(spec.find("\nfiles:"), std::string::npos) << spec;
  ASSERT_FALSE(m["specFiles"].empty());
  spec += "files:\n  - path: \"/etc/leak\"\n    source: \"/etc/hostname\"\n";
  m["spec"] = spec;
  m["specFiles"] = json::array();
  ASSERT_TRUE(fs::write_file(manifest, m.dump()).ok());
  ::unlink(tar.c_str());
  ASSERT_TRUE(run_checked({"tar", "-C", tree.string(), "-cf", tar.string(), "."}).ok());
  auto imported = prewarm(b_, {"import", tar.string(), "--name", "tampered-" + b_.tag});
  if (code(imported) == 0) {
    auto tampered = prewarm(b_, {"run", "tampered-" + b_.tag, "--cold"});
    EXPECT_NE(code(tampered), 0) << tampered.out;
    EXPECT_NE(tampered.err.find("from host file /etc/hostname"), std::string::npos)
        << tampered.err;
    EXPECT_EQ(prewarm(b_, {"rmi", "tampered-" + b_.tag}).err, "");
  } else {
    EXPECT_NE(imported.err, "") << "refused at import, with a reason";
  }
  EXPECT_EQ(json::parse(prewarm(b_, {"ps", "--json"}).out).size(), 0u);
}

// The format CRI-O and Podman restore from: an ordinary OCI image, one layer holding the
// checkpoint archive, annotations marking it. Node B pulls it like any image and restores it.
TEST_F(DistributionTest, CheckpointImageFormatRoundTripsThroughTheRegistry) {
  bake_on_a();
  if (HasFatalFailure()) return;
  const std::string crio_ref = ref(registry_->port(), "crio");
  auto push = prewarm(a_, {"push", name_, crio_ref, "--format", "cri-o"});
  ASSERT_EQ(code(push), 0) << push.err;
  EXPECT_NE(push.out.find(": 2 blob(s) uploaded"), std::string::npos) << push.out;

  // What any OCI client sees.
  auto got = probe::http_get("127.0.0.1", registry_->port(), "/v2/prewarm/counter/manifests/crio",
                             {{"Accept", "application/vnd.oci.image.manifest.v1+json"}},
                             std::chrono::milliseconds(5000));
  ASSERT_TRUE(got.ok()) << got.error().to_string();
  ASSERT_EQ(got->status, 200) << got->body;
  json m = json::parse(got->body, nullptr, false);
  ASSERT_TRUE(m.is_object()) << got->body;
  EXPECT_EQ(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
  ASSERT_EQ(m["layers"].size(), 1u);
  EXPECT_EQ(m["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd");
  EXPECT_GT(m["layers"][0]["size"].get<uint64_t>(), 1000u);
  EXPECT_EQ(m["annotations"]["io.kubernetes.cri-o.annotations.checkpoint.name"], name_);
  EXPECT_EQ(m["annotations"]["io.podman.annotations.checkpoint.runtime.name"], "runc");
  EXPECT_EQ(m["annotations"]["org.criu.checkpoint.engine.name"], "prewarm");

  auto pull = prewarm(b_, {"pull", crio_ref, "--name", pulled_});
  ASSERT_EQ(code(pull), 0) << pull.err;
  EXPECT_NE(pull.err.find("a prewarm checkpoint image of '" + name_ + "'"), std::string::npos)
      << pull.err;
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  auto verify = prewarm(b_, {"verify"});
  EXPECT_EQ(code(verify), 0) << verify.err;
  // The pull's scratch files are gone.
  for (const auto& e : stdfs::directory_iterator(b_.state))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp-", 0), std::string::npos) << e.path();
}

// An ordinary container image is refused by name before any of it is downloaded.
TEST_F(DistributionTest, OrdinaryContainerImageIsRefusedBeforeDownloading) {
  TempDir files("prewarm-plain-image");
  const std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}})";
  ASSERT_TRUE(fs::write_file(files.path() / "config", config).ok());
  ASSERT_TRUE(fs::write_file(files.path() / "layer", std::string(4096, 'x')).ok());
  auto blob = [&](const std::string& f, const std::string& type) {
    std::string data = slurp(files.path() / f);
    return registry::Blob{"sha256:" + sha256_hex(data), data.size(), type, files.path() / f};
  };
  registry::Blob c = blob("config", "application/vnd.oci.image.config.v1+json");
  registry::Blob l = blob("layer", "application/vnd.oci.image.layer.v1.tar");
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config", {{"mediaType", c.media_type}, {"digest", c.digest}, {"size", c.size}}},
                   {"layers", json::array({{{"mediaType", l.media_type},
                                            {"digest", l.digest},
                                            {"size", l.size}}})}};
  auto ref_text = ref(registry_->port(), "plain");
  auto parsed = registry::parse_reference(ref_text);
  ASSERT_TRUE(parsed.ok());
  auto pushed = registry::push(*parsed, {c, l}, manifest.dump(),
                               "application/vnd.oci.image.manifest.v1+json", {});
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();

  auto pull = prewarm(b_, {"pull", ref_text, "--name", pulled_});
  EXPECT_EQ(code(pull), 1) << pull.out;
  EXPECT_NE(pull.err.find("not a checkpoint image"), std::string::npos) << pull.err;
  EXPECT_TRUE(blob_files(b_).empty()) << "downloaded before refusing";
  EXPECT_TRUE(blob_files(b_, true).empty());
  EXPECT_FALSE(stdfs::exists(b_.state / "images" / pulled_));
}

TEST_F(DistributionTest, SecondPushUploadsNoBlobs) {
  bake_on_a();
  if (HasFatalFailure()) return;
  auto [first, none] = push_from_a();
  EXPECT_GT(first, 0);
  EXPECT_EQ(none, 0);
  auto [second, already] = push_from_a();
  EXPECT_EQ(second, 0);
  EXPECT_EQ(already, first);
}

TEST_F(DistributionTest, CorruptedBlobFailsThePullByDigestAndKeepsNoImage) {
  bake_on_a();
  if (HasFatalFailure()) return;
  push_from_a();
  auto [layer, needle] = needle_in_a_layer();
  ASSERT_FALSE(needle.empty());
  proxy_ = std::make_unique<TcpProxy>(registry_->port());
  proxy_->flip_download_matching(needle);

  auto pull = pull_on_b(proxy_->port());
  std::printf("corrupted pull: %s", pull.err.c_str());
  EXPECT_EQ(code(pull), 1) << pull.out;
  EXPECT_GE(proxy_->flips(), 1);
  EXPECT_NE(pull.err.find("sha256:"), std::string::npos) << pull.err;
  EXPECT_NE(pull.err.find(layer.digest), std::string::npos) << pull.err;

  auto images = prewarm(b_, {"images"});
  ASSERT_EQ(code(images), 0) << images.err;
  EXPECT_EQ(images.out.find(pulled_), std::string::npos) << images.out;
  EXPECT_EQ(std::count(images.out.begin(), images.out.end(), '\n'), 1) << images.out;
  EXPECT_FALSE(stdfs::exists(b_.state / "images" / pulled_));
  EXPECT_FALSE(stdfs::exists(b_.blob(layer.digest))) << "the corrupted blob was stored";
  for (const auto& f : blob_files(b_, true)) std::printf("  left for resuming: %s\n", f.c_str());

  // Nothing bad stayed behind: a direct pull then gets a store that verifies.
  auto again = pull_on_b(registry_->port());
  ASSERT_EQ(code(again), 0) << again.err;
  auto verify = prewarm(b_, {"verify"});
  EXPECT_EQ(code(verify), 0) << verify.err;
}

TEST_F(DistributionTest, PullCutMidBlobRecoversOrSucceedsWhenRepeated) {
  bake_on_a();
  if (HasFatalFailure()) return;
  push_from_a();
  auto [layer, needle] = needle_in_a_layer();
  ASSERT_FALSE(needle.empty());
  proxy_ = std::make_unique<TcpProxy>(registry_->port());
  proxy_->cut_download_in(needle);

  auto pull = pull_on_b(proxy_->port());
  EXPECT_EQ(proxy_->cuts(), 1);
  if (code(pull) == 0) {
    std::printf("the cut pull recovered by itself: %s", pull.out.c_str());
  } else {
    std::printf("cut pull failed: %s", pull.err.c_str());
    EXPECT_NE(pull.err.find("sha256:"), std::string::npos) << pull.err;
    EXPECT_FALSE(stdfs::exists(b_.state / "images" / pulled_));
    auto again = pull_on_b(registry_->port());
    ASSERT_EQ(code(again), 0) << again.err;
  }
  auto verify = prewarm(b_, {"verify"});
  EXPECT_EQ(code(verify), 0) << verify.err;
  std::string body = run_on_b(pulled_);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
}

TEST_F(DistributionTest, RmiThenGcFreesTheImagesBlobs) {
  bake_on_a();
  if (HasFatalFailure()) return;
  auto layers = store_layers(a_, name_);
  ASSERT_FALSE(layers.empty());
  size_t blobs = blob_files(a_).size();
  EXPECT_EQ(blobs, layers.size() + 2);  // manifest, config, unique chunks

  auto rmi = prewarm(a_, {"rmi", name_});
  ASSERT_EQ(code(rmi), 0) << rmi.err;
  EXPECT_FALSE(stdfs::exists(a_.state / "images" / name_));
  EXPECT_EQ(prewarm(a_, {"images"}).out.find(name_), std::string::npos);

  std::regex line("removed ([0-9]+) blob\\(s\\), [0-9.]+ MB freed; [0-9]+ temporary file\\(s\\) "
                  "removed; ([0-9]+) recent unreferenced blob\\(s\\) kept");
  auto gc = [&]() -> std::pair<size_t, size_t> {
    auto r = prewarm(a_, {"gc"});
    EXPECT_EQ(code(r), 0) << r.err;
    std::smatch m;
    if (!std::regex_search(r.out, m, line)) {
      ADD_FAILURE() << "no gc line in: " << r.out;
      return {0, 0};
    }
    return {std::stoul(m[1]), std::stoul(m[2])};
  };
  // Every writer holds a store lease while its blobs are unreferenced, so gc frees the
  // image's blobs right away.
  auto [removed, kept] = gc();
  EXPECT_EQ(removed, blobs);
  EXPECT_EQ(kept, 0u);
  EXPECT_EQ(blob_files(a_).size(), 0u);
  auto [again, none] = gc();
  EXPECT_EQ(again, 0u);
  EXPECT_EQ(none, 0u);

  // Scratch dirs of killed checkpoint-image transfers go; one a live transfer holds stays.
  const stdfs::path stale = a_.state / ".tmp-pull-dead0001";
  ASSERT_TRUE(fs::make_dirs(stale, 0700).ok());
  auto live = fs::StagingDir::create(a_.state, ".tmp-push-");
  ASSERT_TRUE(live.ok()) << live.error().message();
  for (const auto& d : {stale, live->path()})
    ASSERT_TRUE(fs::write_file(d / "layer", "partial").ok());
  gc();
  EXPECT_FALSE(stdfs::exists(stale));
  EXPECT_TRUE(stdfs::exists(live->path() / "layer"));
}

TEST_F(DistributionTest, TamperedBlobIsNamedByVerifyAndRefusedByRun) {
  bake_on_a();
  if (HasFatalFailure()) return;
  auto layers = store_layers(a_, name_);
  ASSERT_FALSE(layers.empty());
  Descriptor victim = layers[layers.size() / 2];
  {
    std::fstream f(a_.blob(victim.digest), std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << a_.blob(victim.digest);
    auto at = static_cast<std::streamoff>(victim.size / 2);
    f.seekg(at);
    char c = 0;
    f.get(c);
    f.seekp(at);
    f.put(static_cast<char>(c ^ 0x01));
    ASSERT_TRUE(f.good());
  }

  auto verify = prewarm(a_, {"verify"});
  std::printf("verify: %s", verify.err.c_str());
  EXPECT_NE(code(verify), 0) << verify.out;
  EXPECT_NE(verify.err.find(victim.digest), std::string::npos) << verify.err;

  // The unpacked copy is still good; without it, run must unpack from the store.
  ASSERT_TRUE(fs::remove_all(a_.state / "images" / name_).ok());
  auto run = prewarm(a_, {"run", name_});
  std::printf("run: %s", run.err.c_str());
  EXPECT_EQ(code(run), 1) << run.out;
  EXPECT_NE(run.err.find(victim.digest), std::string::npos) << run.err;
  auto ps = prewarm(a_, {"ps", "--json"});
  ASSERT_EQ(code(ps), 0) << ps.err;
  EXPECT_EQ(json::parse(ps.out).size(), 0u) << ps.out;
  EXPECT_FALSE(stdfs::exists(a_.state / "images" / name_));
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(a_.state / "images", ec))
    ADD_FAILURE() << "left in images/: " << e.path();
  EXPECT_EQ(leftovers(name_ + "-"), "");
  EXPECT_EQ(bridge_ports(a_.bridge()), "");
}

}  // namespace
}  // namespace prewarm::testing
