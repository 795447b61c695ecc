// The shim's runc calls for a pod container that direct CRIU restored: runc knows nothing of
// it, so state, kill, delete, exec, ps, pause, resume and update are answered here, with
// runc's output and exit codes, from the direct backend's state and the container's cgroup.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <map>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/subprocess.h"
#include "engine/context.h"
#include "k8s/pod_restore.h"
#include "oci/cgroup.h"
#include "oci/criu_direct.h"

namespace prewarm::k8s {
namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

int fail(const std::string& what) {
  // runc's own words on stderr; the shim puts them in the error it returns.
  std::fprintf(stderr, "%s\n", what.c_str());
  return 1;
}

// "15", "TERM", "SIGTERM" → 15; 0 when unknown.
int parse_signal(std::string s) {
  if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit)) return std::atoi(s.c_str());
  if (s.rfind("SIG", 0) == 0) s = s.substr(3);
  static const std::map<std::string, int> names = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"STOP", SIGSTOP},
      {"CONT", SIGCONT}, {"WINCH", SIGWINCH}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}};
  auto it = names.find(s);
  return it == names.end() ? 0 : it->second;
}

// The arguments after the command without its options (and their values).
std::vector<std::string> positional(const std::vector<std::string>& args,
                                    std::initializer_list<const char*> with_value) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.empty() || a[0] != '-') {
      out.push_back(a);
      continue;
    }
    if (a.find('=') != std::string::npos) continue;
    for (const char* v : with_value)
      if (a == v) ++i;
  }
  return out;
}

std::string option(const std::vector<std::string>& args, std::initializer_list<const char*> names) {
  for (size_t i = 0; i < args.size(); ++i)
    for (const char* n : names) {
      if (args[i] == n && i + 1 < args.size()) return args[i + 1];
      std::string eq = std::string(n) + "=";
      if (args[i].rfind(eq, 0) == 0) return args[i].substr(eq.size());
    }
  return {};
}

bool has_flag(const std::vector<std::string>& args, const char* flag) {
  return std::find(args.begin(), args.end(), flag) != args.end();
}

// `runc exec --process P.json --detach --pid-file F ID`: the process joins the container's
// cgroups, namespaces and root (nsenter), with the process's environment, cwd and user. Its
// pid (nsenter's, which exits with the command's status) goes to the pid file; this returns at
// once, and the shim, a subreaper, collects the exit status.
int exec_detached(const RuncCall& c, const PodOutcome& o, pid_t init) {
  const std::string process_file = option(c.args, {"--process", "-p"});
  const std::string pid_file = option(c.args, {"--pid-file"});
  if (process_file.empty()) return fail("exec: only --process is supported here");
  auto text = fs::read_file(process_file, 1 << 20);
  if (!text.ok()) return fail("exec: " + text.error().message());
  json p = json::parse(*text, nullptr, false);
  if (!p.is_object() || !p.contains("args") || !p["args"].is_array() || p["args"].empty())
    return fail("exec: " + process_file + " has no args");
  if (p.value("terminal", false) || !option(c.args, {"--console-socket"}).empty())
    return fail("exec with a terminal is not supported in a container prewarm restored with "
                "direct CRIU (set PREWARM_RUNTIME=runc on the node to allow it)");
  std::vector<std::string> env, args;
  if (p.contains("env") && p["env"].is_array())
    for (const auto& e : p["env"])
      if (e.is_string()) env.push_back(e.get<std::string>());
  for (const auto& a : p["args"]) args.push_back(a.is_string() ? a.get<std::string>() : "");
  const json user = p.value("user", json::object());
  auto argv = oci::enter_argv(init, o.cgroup, env, p.value("cwd", std::string("/")), args,
                              std::pair<uid_t, gid_t>(user.value("uid", 0), user.value("gid", 0)));
  if (!argv.ok()) return fail("exec: " + argv.error().message());
  SpawnOptions so;
  so.argv = std::move(argv).value();
  so.stdin_fd = STDIN_FILENO;
  so.stdout_fd = STDOUT_FILENO;
  so.stderr_fd = STDERR_FILENO;
  auto child = spawn(so);
  if (!child.ok()) return fail("exec: " + child.error().message());
  const pid_t pid = child->pid();
  child->detach();
  if (!pid_file.empty()) {
    if (Status st = fs::write_file_atomic(pid_file, std::to_string(pid), 0644); !st.ok())
      return fail("exec: " + st.error().message());
  }
  // Without --detach runc waits for the process and exits with its status.
  if (!has_flag(c.args, "--detach") && !has_flag(c.args, "-d")) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return 0;
}

// `runc update --resources FILE|- ID` for the cgroup v1 memory and CPU limits the kubelet
// changes.
int update(const RuncCall& c, const PodOutcome& o) {
  std::string from = option(c.args, {"--resources", "-r"});
  std::string text;
  if (from.empty() || from == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    auto t = fs::read_file(from, 1 << 20);
    if (!t.ok()) return fail("update: " + t.error().message());
    text = *t;
  }
  json r = json::parse(text, nullptr, false);
  if (!r.is_object()) return fail("update: resources are not JSON");
  auto write = [&](const char* hierarchy, const char* file, const json& v) -> bool {
    if (!v.is_number()) return true;
    auto path = oci::CgroupSet(o.cgroup).in(hierarchy) / file;
    if (!stdfs::exists(path)) return true;
    return fs::write_file(path, std::to_string(v.get<long long>()), 0644).ok();
  };
  bool ok = true;
  if (r.contains("memory") && r["memory"].is_object())
    ok &= write("memory", "memory.limit_in_bytes", r["memory"].value("limit", json()));
  if (r.contains("cpu") && r["cpu"].is_object()) {
    ok &= write("cpu", "cpu.shares", r["cpu"].value("shares", json()));
    ok &= write("cpu", "cpu.cfs_period_us", r["cpu"].value("period", json()));
    ok &= write("cpu", "cpu.cfs_quota_us", r["cpu"].value("quota", json()));
  }
  return ok ? 0 : fail("update: could not write the cgroup limits of " + o.cgroup);
}

}  // namespace

int direct_call(const RuncCall& c, const PodOutcome& o) {
  auto ctx = engine::make_context();
  if (!ctx.ok()) return fail(ctx.error().message());
  auto rt = ctx->runtime_named("criu");
  auto st = rt->state(c.id);
  const bool running = st.ok() && (st->status == "running" || st->status == "paused");
  if (c.command == "state") {
    json j = {{"ociVersion", "1.0.2"},
              {"id", c.id},
              {"pid", running ? st->pid : 0},
              {"status", st.ok() ? st->status : "stopped"},
              {"bundle", o.bundle},
              {"rootfs", (stdfs::path(o.bundle) / "rootfs").string()},
              {"created", o.created},
              {"owner", ""}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (c.command == "kill") {
    auto pos = positional(c.args, {});
    int sig = pos.size() > 1 ? parse_signal(pos[1]) : SIGTERM;
    if (sig <= 0) return fail("invalid signal " + pos[1]);
    if (has_flag(c.args, "--all") || has_flag(c.args, "-a")) {
      for (pid_t p : oci::CgroupSet(o.cgroup).pids()) ::kill(p, sig);
      return 0;
    }
    if (!running) return fail("container not running");
    Status s = rt->kill(c.id, sig);
    return s.ok() ? 0 : fail(s.error().message());
  }
  if (c.command == "delete") {
    const bool force = has_flag(c.args, "--force") || has_flag(c.args, "-f");
    if (running && !force)
      return fail("cannot delete container " + c.id + " that is not stopped: " + st->status);
    Status s = rt->remove(c.id);
    release_pod_container(c.id);
    return s.ok() ? 0 : fail(s.error().message());
  }
  if (c.command == "exec") {
    if (!running) return fail("cannot exec in a stopped container");
    return exec_detached(c, o, st->pid);
  }
  if (c.command == "ps") {
    json pids = json::array();
    for (pid_t p : oci::CgroupSet(o.cgroup).pids()) pids.push_back(p);
    std::printf("%s\n", pids.dump().c_str());
    return 0;
  }
  if (c.command == "pause" || c.command == "resume") {
    Status s = c.command == "pause" ? rt->pause(c.id) : rt->resume(c.id);
    return s.ok() ? 0 : fail(s.error().message());
  }
  if (c.command == "update") return update(c, o);
  return fail("runc " + c.command + " is not supported for container " + c.id +
              ", which prewarm restored with direct CRIU");
}

}  // namespace prewarm::k8s
