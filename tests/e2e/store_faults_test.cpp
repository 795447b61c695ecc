// Interrupted and hostile operations through the real CLI, each with its own state dir. The
// store is the source of truth and images/NAME only its unpacked copy: a prewarm killed between
// the two (PREWARM_FAULT) or a copy edited by hand must never start something the store does
// not hold. Pulls from a real registry (or a server that never answers) are bounded in what
// they write and how long they wait.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "registry/registry.h"
#include "support/engine_fixture.h"
#include "support/registry_server.h"
#include "support/subnets.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

int code(const RunResult& r) { return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1; }

class StoreFaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = skip_reason(); !why.empty()) GTEST_SKIP() << why;
    tag_ = "f" + fs::random_hex(3);
    state_ = stdfs::path("/var/tmp") / ("prewarm-faults-" + tag_);
    env_ = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=pwbr" + tag_,
            "PREWARM_SUBNET=" + testing::free_test_subnet(tag_.substr(1))};
    name_ = "counter-" + tag_;
    spec_dir_ = std::make_unique<TempDir>("prewarm-faults-spec");
  }

  void TearDown() override {
    if (state_.empty()) return;
    auto rm = prewarm({"rm", "--all"});
    EXPECT_EQ(code(rm), 0) << rm.err;
    EXPECT_EQ(bridge_ports("pwbr" + tag_), "") << "veths left on the bridge";
    remove_test_bridge("pwbr" + tag_);
    EXPECT_EQ(leftovers(name_ + "-"), "");
    if (registry_) registry_->stop();
    if (HasFailure()) {
      std::fprintf(stderr, "state dir kept for inspection: %s\n", state_.c_str());
    } else {
      (void)fs::remove_all(state_);
    }
  }

  RunResult prewarm(std::vector<std::string> args, const std::string& fault = "",
                    std::vector<std::string> env = {},
                    std::chrono::milliseconds timeout = std::chrono::minutes(5)) {
    SpawnOptions o;
    o.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.env = env_;
    if (!fault.empty()) o.env.push_back("PREWARM_FAULT=" + fault);
    o.env.insert(o.env.end(), env.begin(), env.end());
    auto r = run_capture(o, timeout);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : RunResult{};
  }

  // Bakes the tiny example as `name`, its /etc/prewarm-example saying `version`.
  void bake(const std::string& name, const std::string& version) {
    std::string spec = slurp(PREWARM_EXAMPLE_TINY_SPEC);
    std::string changed = std::regex_replace(spec, std::regex("content: \"tiny\\\\n\""),
                                             "content: \"" + version + "\\n\"");
    ASSERT_NE(changed, spec);
    const stdfs::path file = spec_dir_->path() / (version + ".yaml");
    ASSERT_TRUE(fs::write_file(file, changed).ok());
    auto r = prewarm({"bake", file.string(), "--name", name});
    ASSERT_EQ(code(r), 0) << r.err;
  }

  // Starts `image` and returns what its instance's /etc/prewarm-example says.
  std::string run_version(const std::string& image) {
    auto run = prewarm({"run", image, "--json"});
    EXPECT_EQ(code(run), 0) << run.err;
    auto list = json::parse(run.out, nullptr, false);
    if (!list.is_array() || list.size() != 1u) {
      ADD_FAILURE() << run.out;
      return {};
    }
    const std::string id = list[0]["id"];
    return slurp(state_ / "instances" / id / "rootfs" / "etc" / "prewarm-example");
  }

  std::string store_digest(const std::string& name) {
    json index = json::parse(slurp(state_ / "store" / "index.json"), nullptr, false);
    for (const auto& m : index["manifests"])
      if (m["annotations"].value("org.opencontainers.image.ref.name", "") == name)
        return m["digest"];
    return "";
  }

  size_t instances() { return json::parse(prewarm({"ps", "--json"}).out).size(); }

  void start_registry() {
    registry_dir_ = std::make_unique<TempDir>("prewarm-faults-registry");
    registry_ = std::make_unique<RegistryServer>();
    auto st = registry_->start(registry_dir_->path());
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }

  // Files in the store's blob directory, downloads in progress included.
  std::vector<std::string> blob_files() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(state_ / "store" / "blobs" / "sha256", ec))
      out.push_back(e.path().filename().string());
    return out;
  }

  std::string tag_, name_;
  stdfs::path state_;
  std::vector<std::string> env_;
  std::unique_ptr<TempDir> spec_dir_;
  std::unique_ptr<TempDir> registry_dir_;
  std::unique_ptr<RegistryServer> registry_;
};

// A pull replacing an image, killed right after the store's index names the new version: the
// old unpacked copy must not run under the new digest, nor pass verify.
TEST_F(StoreFaultsTest, StaleUnpackedCopyIsUnpackedAgain) {
  if (auto why = registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  start_registry();
  if (HasFatalFailure()) return;
  bake(name_, "one");
  if (HasFatalFailure()) return;
  bake(name_ + "-two", "two");
  if (HasFatalFailure()) return;
  const std::string ref = "127.0.0.1:" + std::to_string(registry_->port()) + "/prewarm/two:v1";
  auto push = prewarm({"push", name_ + "-two", ref});
  ASSERT_EQ(code(push), 0) << push.err;

  auto pull = prewarm({"pull", ref, "--name", name_}, "store.after_index_update");
  ASSERT_EQ(code(pull), 137) << pull.out << pull.err;
  const std::string now = store_digest(name_);
  EXPECT_EQ(now, store_digest(name_ + "-two"));

  auto verify = prewarm({"verify"});
  EXPECT_NE(code(verify), 0) << verify.out;
  EXPECT_NE(verify.err.find("unpacked " + name_ + ": "), std::string::npos) << verify.err;
  EXPECT_NE(verify.err.find("is stale"), std::string::npos) << verify.err;

  EXPECT_EQ(run_version(name_), "two\n");
  auto ps = json::parse(prewarm({"ps", "--json"}).out, nullptr, false);
  ASSERT_TRUE(ps.is_array() && ps.size() == 1u) << ps.dump();
  EXPECT_EQ(ps[0]["image"], name_);
  auto verified = prewarm({"verify"});
  EXPECT_EQ(code(verified), 0) << verified.err;
}

// rmi killed after the index update: the unpacked copy it left must not start, and gc removes it.
TEST_F(StoreFaultsTest, CopyLeftByInterruptedRmiIsRefusedAndCollected) {
  bake(name_, "one");
  if (HasFatalFailure()) return;
  auto rmi = prewarm({"rmi", name_}, "rmi.after_index_update");
  ASSERT_EQ(code(rmi), 137) << rmi.out << rmi.err;
  ASSERT_TRUE(stdfs::exists(state_ / "images" / name_ / "manifest.json"));
  EXPECT_EQ(store_digest(name_), "");

  auto run = prewarm({"run", name_});
  EXPECT_NE(code(run), 0) << run.out;
  EXPECT_NE(run.err.find("is not in the store"), std::string::npos) << run.err;
  EXPECT_EQ(instances(), 0u);
  auto verify = prewarm({"verify"});
  EXPECT_NE(code(verify), 0) << verify.out;
  EXPECT_NE(verify.err.find("interrupted rmi"), std::string::npos) << verify.err;

  auto gc = prewarm({"gc"});
  EXPECT_EQ(code(gc), 0) << gc.err;
  EXPECT_FALSE(stdfs::exists(state_ / "images" / name_));
  EXPECT_EQ(code(prewarm({"verify"})), 0);
}

// manifest.json vouches for every other file of the copy, so it must be the store's own.
TEST_F(StoreFaultsTest, EditedUnpackedManifestIsRefused) {
  bake(name_, "one");
  if (HasFatalFailure()) return;
  const stdfs::path manifest = state_ / "images" / name_ / "manifest.json";
  json m = json::parse(slurp(manifest));
  std::string spec = m["spec"];
  std::string edited = std::regex_replace(spec, std::regex("/bin/counter"), "/bin/sh");
  ASSERT_NE(edited, spec);
  m["spec"] = edited;
  ASSERT_TRUE(fs::write_file(manifest, m.dump(), 0600).ok());

  auto verify = prewarm({"verify"});
  EXPECT_NE(code(verify), 0) << verify.out;
  EXPECT_NE(verify.err.find("manifest.json is not the manifest.json the store holds"),
            std::string::npos) << verify.err;
  for (auto args : {std::vector<std::string>{"run", name_},
                    std::vector<std::string>{"run", name_, "--cold"}}) {
    auto run = prewarm(args);
    EXPECT_NE(code(run), 0) << run.out;
    EXPECT_NE(run.err.find("it was edited"), std::string::npos) << run.err;
  }
  EXPECT_EQ(instances(), 0u);
}

// A manifest declaring a pack larger than the store would ever read is refused before any of
// it is downloaded (it used to be written whole, then refused).
TEST_F(StoreFaultsTest, OversizedLayerIsRefusedBeforeDownloading) {
  if (auto why = registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  start_registry();
  if (HasFatalFailure()) return;
  TempDir files("prewarm-faults-blobs");
  const std::string config = "{}";
  ASSERT_TRUE(fs::write_file(files.path() / "config", config).ok());
  ASSERT_TRUE(fs::write_file(files.path() / "layer", std::string((65 << 20), '\0')).ok());
  auto blob = [&](const std::string& f, const std::string& type, uint64_t size) {
    std::string data = slurp(files.path() / f);
    return registry::Blob{"sha256:" + sha256_hex(data), size, type, files.path() / f};
  };
  registry::Blob c = blob("config", "application/vnd.prewarm.checkpoint.config.v1+json", 2);
  registry::Blob l = blob("layer", "application/vnd.prewarm.checkpoint.pack.v1.zstd", 65 << 20);
  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"artifactType", "application/vnd.prewarm.checkpoint.v1"},
      {"config", {{"mediaType", c.media_type}, {"digest", c.digest}, {"size", c.size}}},
      {"layers", json::array({{{"mediaType", l.media_type}, {"digest", l.digest}, {"size", l.size}}})}};
  const std::string ref = "127.0.0.1:" + std::to_string(registry_->port()) + "/prewarm/big:v1";
  auto parsed = registry::parse_reference(ref);
  ASSERT_TRUE(parsed.ok());
  auto pushed = registry::push(*parsed, {c, l}, manifest.dump(),
                               "application/vnd.oci.image.manifest.v1+json", {});
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();

  auto pull = prewarm({"pull", ref, "--name", name_});
  EXPECT_EQ(code(pull), 1) << pull.out;
  EXPECT_NE(pull.err.find(l.digest + " declares " + std::to_string(65 << 20) + " bytes"),
            std::string::npos) << pull.err;
  EXPECT_NE(pull.err.find("before downloading"), std::string::npos) << pull.err;
  EXPECT_EQ(blob_files(), std::vector<std::string>()) << "downloaded before refusing";
  EXPECT_FALSE(stdfs::exists(state_ / "images" / name_));
}

// A registry that accepts connections and never answers: the pull fails after the configured
// stall timeout (PREWARM_REGISTRY_TIMEOUT), not after minutes of retries.
TEST_F(StoreFaultsTest, StalledRegistryFailsAfterItsTimeout) {
  UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(server.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(server.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(server.get(), 16), 0);  // the kernel accepts; nobody ever answers
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(server.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string ref = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/prewarm/x:v1";

  auto t0 = std::chrono::steady_clock::now();
  auto pull = prewarm({"pull", ref, "--name", name_}, "", {"PREWARM_REGISTRY_TIMEOUT=2"},
                      std::chrono::seconds(60));
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(code(pull), 1) << pull.out << pull.err;
  EXPECT_LT(seconds, 15.0) << pull.err;
  EXPECT_NE(pull.err.find("PREWARM_REGISTRY_TIMEOUT"), std::string::npos) << pull.err;
  EXPECT_EQ(blob_files(), std::vector<std::string>());
}

}  // namespace
}  // namespace prewarm::testing
