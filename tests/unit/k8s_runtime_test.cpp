// The runc command lines containerd's runc shim and CRI-O give the prewarm runtime.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "k8s/oci_runtime.h"

namespace prewarm::k8s {
namespace {

RuncCall parse_ok(std::vector<std::string> argv) {
  auto r = parse_runc_call(argv);
  EXPECT_TRUE(r.has_value());
  return r ? *r : RuncCall{};
}

TEST(RuncCall, ShimCreate) {
  RuncCall c = parse_ok({"--root", "/run/containerd/runc/k8s.io", "--log",
                         "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/log.json",
                         "--log-format", "json", "create", "--bundle",
                         "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc", "--pid-file",
                         "/run/x/init.pid", "abc"});
  EXPECT_EQ(c.command, "create");
  EXPECT_EQ(c.id, "abc");
  EXPECT_EQ(c.bundle, "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc");
  EXPECT_EQ(c.pid_file, "/run/x/init.pid");
  EXPECT_EQ(c.console_socket, "");
  EXPECT_EQ(c.globals.size(), 6u);
  EXPECT_EQ(c.globals[1], "/run/containerd/runc/k8s.io");
}

TEST(RuncCall, EqualsFormsFlagsAndConsole) {
  RuncCall c = parse_ok({"--root=/r", "--systemd-cgroup", "--debug", "create", "-b", "/b",
                         "--console-socket=/s.sock", "--no-pivot", "--preserve-fds", "2", "id1"});
  EXPECT_EQ(c.globals, (std::vector<std::string>{"--root=/r", "--systemd-cgroup", "--debug"}));
  EXPECT_EQ(c.bundle, "/b");
  EXPECT_EQ(c.console_socket, "/s.sock");
  EXPECT_EQ(c.id, "id1");
}

TEST(RuncCall, IdBeforeArguments) {
  EXPECT_EQ(parse_ok({"--root", "/r", "kill", "abc", "15"}).id, "abc");
  EXPECT_EQ(parse_ok({"--root", "/r", "kill", "--all", "abc", "9"}).id, "abc");
  RuncCall e = parse_ok({"--root", "/r", "exec", "--process", "/tmp/p.json", "--detach",
                         "--pid-file", "/tmp/p.pid", "abc"});
  EXPECT_EQ(e.command, "exec");
  EXPECT_EQ(e.id, "abc");
  EXPECT_EQ(parse_ok({"--root", "/r", "start", "abc"}).id, "abc");
  EXPECT_EQ(parse_ok({"--root", "/r", "delete", "--force", "abc"}).id, "abc");
  EXPECT_EQ(parse_ok({"--root", "/r", "state", "abc"}).id, "abc");
  EXPECT_EQ(parse_ok({"features"}).command, "features");
}

TEST(RuncCall, NoCommand) {
  EXPECT_FALSE(parse_runc_call({}).has_value());
  EXPECT_FALSE(parse_runc_call({"--root", "/r"}).has_value());
  EXPECT_FALSE(parse_runc_call({"--version"}).has_value());  // runc answers those itself
}

TEST(PodOutcome, Json) {
  PodOutcome o;
  o.container_id = "c1";
  o.checkpoint = "pyservice";
  o.image = "pyservice";
  o.restored = false;
  o.reason = "no such image";
  o.restore_ms = 1.5;
  auto j = nlohmann::json::parse(outcome_json(o));
  EXPECT_EQ(j["containerId"], "c1");
  EXPECT_EQ(j["restored"], false);
  EXPECT_EQ(j["reason"], "no such image");
  EXPECT_FALSE(j.contains("pullMs"));
  o.restored = true;
  o.reason.clear();
  o.pull_ms = 30;
  j = nlohmann::json::parse(outcome_json(o));
  EXPECT_EQ(j["restored"], true);
  EXPECT_FALSE(j.contains("reason"));
  EXPECT_EQ(j["pullMs"], 30);
}

}  // namespace
}  // namespace prewarm::k8s
