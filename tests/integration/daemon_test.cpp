// prewarmd, the real daemon binary, with real CRIU and runc: API round trips, claims from a
// warm pool (own hostname and IP, the checkpoint's state), 50 claims with refill, a SIGKILL in
// the middle of a refill and a restart (nothing leaked, nothing lost), TCP without the bearer
// token refused, and its metrics read by a real Prometheus parser.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include <yaml-cpp/yaml.h>

#include "bake/bake.h"
#include "base/subprocess.h"
#include "lifecycle/instance.h"
#include "probe/probe.h"
#include "support/engine_fixture.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

struct Answer {
  int status = 0;
  std::string body;
  json j() const { return json::parse(body, nullptr, false); }
};

// One request, "Connection: close", over a unix socket (path) or TCP (port > 0).
Answer call(const std::string& socket_path, int port, const std::string& method,
            const std::string& path, const std::string& body = "",
            const std::string& extra_headers = "") {
  Answer a;
  int fd = -1;
  if (port > 0) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return a;
    }
  } else {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd);
      return a;
    }
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: prewarmd\r\nConnection: close\r\n" +
                    extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  (void)!::write(fd, req.data(), req.size());
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (resp.size() < 12) return a;
  a.status = std::atoi(resp.c_str() + 9);
  size_t head = resp.find("\r\n\r\n");
  a.body = head == std::string::npos ? "" : resp.substr(head + 4);
  return a;
}

std::string get_app(const std::string& ip) {
  auto r = probe::http_get(ip, 8080, "/", {}, std::chrono::milliseconds(3000));
  return r.ok() ? r->body : "ERROR " + r.error().message();
}

class DaemonTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    if (IsSkipped()) return;
    socket_ = (state_ / "prewarmd.sock").string();
    bake::BakeOptions o;
    o.name = "pd-" + tag_;
    o.working_set = false;
    track(o.name);
    auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
    ASSERT_TRUE(baked.ok()) << baked.error().to_string();
    image_ = o.name;
  }
  void TearDown() override {
    stop_daemon(SIGTERM);
    EngineTest::TearDown();
  }

  void start_daemon(std::vector<std::string> extra = {}) {
    SpawnOptions so;
    so.argv = {PREWARM_BINARY_DIR "/cmd/prewarmd/prewarmd", "--socket", socket_};
    for (auto& e : extra) so.argv.push_back(e);
    so.env = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=" + ctx_.net.bridge,
              "PREWARM_SUBNET=" + ctx_.net.subnet};
    log_ = UniqueFd(::open((state_ / "prewarmd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    so.stderr_fd = log_.get();
    auto child = spawn(so);
    ASSERT_TRUE(child.ok()) << child.error().to_string();
    daemon_ = std::move(child).value();
    ASSERT_TRUE(wait_for([&] { return call(socket_, 0, "GET", "/v1/health").status == 200; }, 20s))
        << slurp(state_ / "prewarmd.log");
  }
  void stop_daemon(int sig) {
    if (daemon_.pid() <= 0) return;
    daemon_.kill(sig);
    (void)daemon_.wait(std::chrono::seconds(30));
    daemon_ = Child();
  }
  Answer api(const std::string& method, const std::string& path, const json& body = nullptr) {
    return call(socket_, 0, method, path, body.is_null() ? "" : body.dump());
  }
  json pool() { return api("GET", "/v1/pools/" + image_).j(); }

  std::string socket_, image_;
  Child daemon_;
  UniqueFd log_;
};

TEST_F(DaemonTest, ApiRoundTripsClaimsEventsAndMetrics) {
  start_daemon();
  auto health = api("GET", "/v1/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.j()["status"], "ok");
  auto images = api("GET", "/v1/images").j();
  bool listed = false;
  for (const auto& i : images) listed |= i["name"] == image_;
  EXPECT_TRUE(listed) << images.dump();

  // Instances: start two, inspect, remove.
  auto started = api("POST", "/v1/instances", {{"image", image_}, {"count", 2}});
  ASSERT_EQ(started.status, 201) << started.body;
  ASSERT_EQ(started.j().size(), 2u);
  const std::string id = started.j()[0]["id"];
  EXPECT_EQ(started.j()[0]["state"], "ready");
  EXPECT_NE(get_app(started.j()[0]["ip"]).find("count=6 "), std::string::npos);
  auto one = api("GET", "/v1/instances/" + id);
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(one.j()["process"], "running");
  for (const auto& s : started.j()) EXPECT_EQ(api("DELETE", "/v1/instances/" + s["id"].get<std::string>()).status, 200);
  EXPECT_EQ(api("GET", "/v1/instances/" + id).status, 404);

  // A pool: parked instances, then a claim with a hostname.
  auto set = api("PUT", "/v1/pools/" + image_, {{"min", 2}, {"max", 10}});
  ASSERT_EQ(set.status, 200) << set.body;
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 2; }, 30s)) << pool().dump();
  auto claimed = api("POST", "/v1/pools/" + image_ + "/claim", {{"hostname", "web-" + tag_}});
  ASSERT_EQ(claimed.status, 200) << claimed.body;
  EXPECT_EQ(claimed.j()["claimed"], true);
  EXPECT_EQ(claimed.j()["state"], "ready");
  std::string body = get_app(claimed.j()["ip"]);
  EXPECT_NE(body.find("count=6 "), std::string::npos) << body;
  EXPECT_NE(body.find("hostname=web-" + tag_), std::string::npos) << body;
  // Refilled behind the claim.
  EXPECT_TRUE(wait_for([&] { return pool()["parked"] == 2 && pool()["claimed"] == 1; }, 30s)) << pool().dump();

  // The event stream (not followed) has what happened, in order.
  auto events = api("GET", "/v1/events?follow=false");
  ASSERT_EQ(events.status, 200);
  std::vector<std::string> types;
  uint64_t last = 0;
  std::istringstream lines(events.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    json e = json::parse(line);
    EXPECT_GT(e["seq"].get<uint64_t>(), last);
    last = e["seq"];
    types.push_back(e["type"]);
  }
  for (const char* t : {"daemon.started", "instance.started", "instance.removed", "pool.set",
                        "instance.parked", "instance.claimed"})
    EXPECT_NE(std::find(types.begin(), types.end(), t), types.end()) << t;

  // Metrics, read by the Prometheus client library's own parser.
  auto metrics = api("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  spit(state_ / "metrics.txt", metrics.body);
  const std::string script =
      "import sys\n"
      "from prometheus_client.parser import text_string_to_metric_families\n"
      "fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}\n"
      "claims = [s.value for s in fams['prewarm_claim_seconds'].samples if s.name == 'prewarm_claim_seconds_count']\n"
      "assert fams['prewarm_claim_seconds'].type == 'histogram', fams['prewarm_claim_seconds'].type\n"
      "assert claims == [1.0], claims\n"
      "parked = [s.value for s in fams['prewarm_pool_parked'].samples]\n"
      "starts = {s.labels['how']: s.value for s in fams['prewarm_starts'].samples if s.name == 'prewarm_starts_total'}\n"
      "assert starts.get('start') == 2.0 and starts.get('claim') == 1.0, starts\n"
      "print(len(fams), parked)\n";
  spit(state_ / "parse.py", script);
  SpawnOptions py;
  py.argv = {"/usr/bin/python3", (state_ / "parse.py").string(), (state_ / "metrics.txt").string()};
  auto parsed = run_capture(py);
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->success()) << parsed->err << "\n" << metrics.body;

  EXPECT_EQ(api("DELETE", "/v1/pools/" + image_).status, 200);
  EXPECT_TRUE(wait_for([&] {
    auto l = api("GET", "/v1/instances").j();
    return l.size() == 1 && l[0]["state"] == "ready";
  }, 30s)) << "the pool's parked instances go with it, the claimed one stays";
}

TEST_F(DaemonTest, FiftyClaimsInARowWithRefill) {
  start_daemon();
  ASSERT_EQ(api("PUT", "/v1/pools/" + image_, {{"min", 3}, {"max", 60}}).status, 200);
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 3; }, 30s)) << pool().dump();
  std::set<std::string> ips, ids;
  int from_pool = 0;
  for (int i = 0; i < 50; ++i) {
    auto c = api("POST", "/v1/pools/" + image_ + "/claim");
    ASSERT_EQ(c.status, 200) << "claim " << i << ": " << c.body;
    json j = c.j();
    from_pool += j["claimed"].get<bool>();
    EXPECT_TRUE(ips.insert(j["ip"]).second) << j["ip"];
    EXPECT_TRUE(ids.insert(j["id"]).second);
    EXPECT_EQ(j["hostname"], j["id"]);
    if (i % 10 == 0) {
      std::string body = get_app(j["ip"]);
      EXPECT_NE(body.find("count=6 hostname=" + j["id"].get<std::string>()), std::string::npos) << body;
    }
  }
  // Claims come faster than restores: the first ones come from the pool, later ones may be
  // restored on the spot; every one is ready.
  EXPECT_GE(from_pool, 3);
  EXPECT_TRUE(wait_for([&] { return pool()["parked"] == 3; }, 60s)) << pool().dump();
  EXPECT_EQ(pool()["claimed"], 50);
}

TEST_F(DaemonTest, KilledMidRefillAndRestartedLosesNothingAndLeaksNothing) {
  start_daemon();
  ASSERT_EQ(api("PUT", "/v1/pools/" + image_, {{"min", 1}, {"max", 20}}).status, 200);
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 1; }, 30s));
  auto claimed = api("POST", "/v1/pools/" + image_ + "/claim");
  ASSERT_EQ(claimed.status, 200);
  const std::string ready_id = claimed.j()["id"];
  // A bigger pool, and the daemon killed while it refills.
  ASSERT_EQ(api("PUT", "/v1/pools/" + image_, {{"min", 5}, {"max", 20}}).status, 200);
  ASSERT_TRUE(wait_for([&] {
    for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir())) {
      auto rec = lifecycle::load_record(e.path());
      if (!rec.ok() || rec->state == lifecycle::InstanceState::kRestoring ||
          rec->state == lifecycle::InstanceState::kPreparing)
        return true;
    }
    return false;
  }, 30s)) << "no refill caught in flight";
  stop_daemon(SIGKILL);

  start_daemon();
  // The claimed instance is still there, ready, and serving; the pool comes back to its min.
  auto one = api("GET", "/v1/instances/" + ready_id);
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.j()["state"], "ready");
  EXPECT_NE(get_app(one.j()["ip"]).find("count=6 "), std::string::npos);
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 5; }, 60s)) << pool().dump();
  // Every instance is whole: ready or parked, with a live process; none half-made.
  auto all = api("GET", "/v1/instances").j();
  EXPECT_EQ(all.size(), 6u) << all.dump();
  for (const auto& i : all) {
    EXPECT_TRUE(i["state"] == "ready" || i["state"] == "restored") << i.dump();
    EXPECT_TRUE(i["process"] == "running" || i["process"] == "paused") << i.dump();
  }
  // TearDown removes them all and checks that no netns, veth, mount or cgroup is left.
}

TEST_F(DaemonTest, TcpNeedsTheBearerTokenAndBadInputIsRefused) {
  const std::string token = "token-" + tag_ + "-0123456789abcdef";
  spit(state_ / "token", token + "\n");
  const int port = 20000 + static_cast<int>(std::stoul(tag_.substr(1), nullptr, 16) % 20000);
  start_daemon({"--tcp", "127.0.0.1:" + std::to_string(port), "--token-file", (state_ / "token").string()});
  EXPECT_EQ(call("", port, "GET", "/v1/health").status, 401);
  EXPECT_EQ(call("", port, "GET", "/v1/instances", "", "Authorization: Bearer wrong\r\n").status, 401);
  EXPECT_EQ(call("", port, "GET", "/metrics").status, 401);
  auto ok = call("", port, "GET", "/v1/health", "", "Authorization: Bearer " + token + "\r\n");
  EXPECT_EQ(ok.status, 200) << ok.body;
  // The unix socket is root's only.
  EXPECT_EQ(stdfs::status(socket_).permissions() & stdfs::perms::all, stdfs::perms::owner_read | stdfs::perms::owner_write);

  EXPECT_EQ(api("PUT", "/v1/pools/" + image_, {{"min", 5}, {"max", 2}}).status, 400);
  EXPECT_EQ(api("PUT", "/v1/pools/no-such-image", {{"min", 1}}).status, 404);
  EXPECT_EQ(api("POST", "/v1/pools/" + image_ + "/claim").status, 404) << "no pool for it";
  EXPECT_EQ(api("POST", "/v1/instances", {{"image", "no-such-image"}}).status, 404);
  EXPECT_EQ(call(socket_, 0, "POST", "/v1/instances", "{not json").status, 400);
  EXPECT_EQ(api("POST", "/v1/instances", {{"image", image_}, {"count", 0}}).status, 400);
  EXPECT_EQ(api("GET", "/v2/health").status, 404);
  EXPECT_EQ(api("GET", "/v1/instances").j().size(), 0u) << "nothing half-made by the refused requests";
}

// Every operation api/openapi.yaml documents is one the daemon routes (asked with names that
// do not exist and empty bodies, so nothing is changed): never the router's "no such path" or
// "not an operation".
TEST_F(DaemonTest, EveryDocumentedOperationIsServed) {
  start_daemon();
  YAML::Node doc = YAML::LoadFile(PREWARM_SOURCE_DIR "/api/openapi.yaml");
  ASSERT_EQ(doc["openapi"].as<std::string>().substr(0, 2), "3.");
  int operations = 0;
  for (const auto& p : doc["paths"]) {
    std::string path = p.first.as<std::string>();
    for (const char* param : {"{name}", "{id}", "{image}"})
      if (auto at = path.find(param); at != std::string::npos) path.replace(at, std::string(param).size(), "no-such-" + tag_);
    if (path == "/v1/events") path += "?follow=false";
    for (const auto& op : p.second) {
      const std::string method = op.first.as<std::string>();
      if (method == "parameters") continue;
      ASSERT_TRUE(op.second["responses"]) << path << " " << method;
      std::string upper;
      for (char c : method) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      auto a = call(socket_, 0, upper, path, upper == "GET" || upper == "DELETE" ? "" : "{}");
      EXPECT_NE(a.status, 0) << upper << " " << path;
      EXPECT_NE(a.status, 405) << upper << " " << path << ": " << a.body;
      EXPECT_EQ(a.body.find("no such path"), std::string::npos) << upper << " " << path << ": " << a.body;
      // The status is one the document lists for it (or 200).
      EXPECT_TRUE(a.status == 200 || op.second["responses"][std::to_string(a.status)])
          << upper << " " << path << " answered " << a.status << ": " << a.body;
      ++operations;
    }
  }
  EXPECT_EQ(operations, 15);
}

// Where the daemon runs, the CLI goes through it: a pool set with `prewarm pool` is the
// daemon's (it refills it), a `prewarm claim` is the daemon's claim (its event stream says so).
TEST_F(DaemonTest, TheCliGoesThroughTheDaemonWhereItRuns) {
  start_daemon();
  auto cli = [&](std::vector<std::string> args) {
    SpawnOptions so;
    so.argv = {PREWARM_BINARY_DIR "/cmd/prewarm/prewarm"};
    for (auto& a : args) so.argv.push_back(a);
    so.env = {"PREWARM_STATE_DIR=" + state_.string(), "PREWARM_BRIDGE=" + ctx_.net.bridge,
              "PREWARM_SUBNET=" + ctx_.net.subnet, "PREWARM_DAEMON_SOCKET=" + socket_};
    auto r = run_capture(so);
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : RunResult{};
  };
  auto pool_set = cli({"pool", image_, "--size", "1"});
  ASSERT_TRUE(pool_set.success()) << pool_set.err;
  EXPECT_NE(pool_set.out.find("prewarmd keeps 1"), std::string::npos) << pool_set.out;
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 1; }, 30s)) << pool().dump();
  auto claimed = cli({"claim", image_, "--hostname", "cli-" + tag_, "--json"});
  ASSERT_TRUE(claimed.success()) << claimed.err;
  json j = json::parse(claimed.out, nullptr, false);
  EXPECT_EQ(j["claimed"], true) << claimed.out;
  EXPECT_NE(get_app(j["ip"]).find("hostname=cli-" + tag_), std::string::npos);
  auto events = api("GET", "/v1/events?follow=false");
  EXPECT_NE(events.body.find("\"instance.claimed\""), std::string::npos) << events.body;
  auto ps = cli({"ps", "--json"});
  ASSERT_TRUE(ps.success()) << ps.err;
  EXPECT_NE(ps.out.find(j["id"].get<std::string>()), std::string::npos);
  // --no-daemon works alone, on the same state.
  auto alone = cli({"--no-daemon", "ps"});
  ASSERT_TRUE(alone.success()) << alone.err;
  EXPECT_NE(alone.out.find(j["id"].get<std::string>()), std::string::npos);
  ASSERT_TRUE(cli({"pool", image_, "--size", "0"}).success());
}

// An image baked again under the same name is a new build: the pool follows it, its parked
// instances of the old build go, and claims get the new one.
TEST_F(DaemonTest, APoolFollowsItsImageWhenItIsBakedAgain) {
  start_daemon();
  ASSERT_EQ(api("PUT", "/v1/pools/" + image_, {{"min", 1}, {"max", 4}}).status, 200);
  ASSERT_TRUE(wait_for([&] { return pool()["parked"] == 1; }, 30s)) << pool().dump();
  const std::string old_digest = api("GET", "/v1/instances").j()[0]["imageDigest"];
  bake::BakeOptions o;
  o.name = image_;
  o.working_set = false;
  auto baked = bake::bake(ctx_, PREWARM_EXAMPLE_TINY_SPEC, o);
  ASSERT_TRUE(baked.ok()) << baked.error().to_string();
  auto only_new_parked = [&] {
    auto all = api("GET", "/v1/instances").j();
    if (all.size() != 1) return false;
    return all[0]["state"] == "restored" && all[0]["imageDigest"] != old_digest;
  };
  ASSERT_TRUE(wait_for(only_new_parked, 60s)) << api("GET", "/v1/instances").body;
  auto c = api("POST", "/v1/pools/" + image_ + "/claim");
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(c.j()["claimed"], true);
  EXPECT_NE(c.j()["imageDigest"], old_digest);
  EXPECT_NE(get_app(c.j()["ip"]).find("count=6 "), std::string::npos);
  EXPECT_NE(api("GET", "/v1/events?follow=false").body.find("pool.image_changed"), std::string::npos);
}

}  // namespace
}  // namespace prewarm::testing
