// Runtime implemented by driving the runc binary; failures carry runc's and CRIU's own words.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "base/fault.h"
#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "oci/cgroup.h"
#include "oci/private_tmp.h"
#include "oci/runtime.h"

namespace prewarm::oci {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

constexpr auto kRuncTimeout = std::chrono::minutes(5);

std::string path_env() {
  std::string p = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  if (const char* cur = std::getenv("PATH")) p += std::string(":") + cur;
  return "PATH=" + p;
}

}  // namespace

// runc --log writes JSON lines; the error ones say why runc failed.
std::string runc_log_errors(const std::filesystem::path& log) {
  auto text = fs::read_file(log, 8 << 20);
  if (!text.ok()) return {};
  std::string out;
  size_t start = 0;
  while (start < text->size()) {
    size_t nl = text->find('\n', start);
    if (nl == std::string::npos) nl = text->size();
    auto line = json::parse(text->substr(start, nl - start), nullptr, false);
    start = nl + 1;
    if (line.is_discarded() || !line.is_object()) continue;
    if (line.value("level", "") != "error") continue;
    if (!out.empty()) out += "; ";
    out += line.value("msg", "");
  }
  return out;
}

namespace {

class Runc final : public Runtime {
 public:
  explicit Runc(std::string binary) : binary_(std::move(binary)) {}

  std::string name() const override { return "runc"; }

  Status run(const std::string& id, const std::filesystem::path& bundle, int stdio_fd) override {
    auto log = bundle / "runc.log";
    // stdin: a pipe at EOF, not the host's /dev/null. CRIU cannot dump a file from a mount the
    // container does not see (runc only reopens /dev/null inside when it makes /dev itself);
    // a pipe it records by key, and a restore gives it a fresh read end.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return Error::sys("pipe", errno);
    UniqueFd read_end(p[0]);
    ::close(p[1]);
    return invoke_detached({"run", "--detach", "--bundle", bundle.string(), id}, log, stdio_fd,
                           {}, "runc run " + id, read_end.get());
  }

  Status checkpoint(const std::string& id, const CheckpointOptions& o) override {
    std::vector<std::string> args = {"checkpoint", "--image-path", o.image_dir.string(),
                                     "--work-path", o.work_dir.string()};
    if (o.tcp_established) args.push_back("--tcp-established");
    if (o.leave_running) args.push_back("--leave-running");
    args.push_back(id);
    auto log = o.work_dir / "runc.log";
    return invoke_detached(args, log, -1, o.work_dir / "dump.log", "checkpoint of " + id);
  }

  Result<Restored> restore(const std::string& id, const std::filesystem::path& bundle,
                           const RestoreOptions& o) override {
    std::vector<std::string> args = {"restore", "--detach", "--bundle", bundle.string(),
                                     "--image-path", o.image_dir.string(), "--work-path",
                                     o.work_dir.string()};
    if (o.tcp_established) args.push_back("--tcp-established");
    if (o.lazy_pages) args.push_back("--lazy-pages");
    args.push_back(id);
    auto log = o.work_dir / "runc.log";
    {
      // The CRIU runc starts inherits a private /tmp: killed mid-restore (runc killed, then the
      // container removed), it leaves no /tmp/.criu.mntns.* on the host.
      PW_ASSIGN(auto private_tmp, PrivateTmpForThread::enter());
      std::vector<std::string> criu_env;
      if (o.huge_pages) criu_env.emplace_back(criu::kFillHugePagesEnv);
      // CRIU ignores the populate patch's variable with lazy pages.
      if (o.populate) criu_env.emplace_back(criu::kFillPopulateEnv);
      if (fault_armed("criu.kill_under_runc")) {
        PW_ASSIGN(std::string conf, kill_criu_at_post_restore(o.work_dir));
        criu_env.push_back("CRIU_CONFIG_FILE=" + conf);
      }
      PW_TRY(invoke_detached(args, log, o.stdio_fd, o.work_dir / "restore.log", "restore of " + id,
                             -1, criu_env));
    }
    auto s = state(id);
    if (!s.ok()) {
      (void)remove(id);
      return std::move(s).error().with_context("restore of " + id);
    }
    Restored r;
    r.pid = s->pid;
    // runc resumes the tasks itself: the hook can only run now.
    r.hook_before_resume = false;
    if (o.before_resume) {
      Status st = o.before_resume(r.pid);
      if (!st.ok()) {
        (void)remove(id);
        return std::move(st).error();
      }
    }
    if (o.leave_frozen) {
      r.ran_before_frozen = true;
      if (Status st = pause(id); !st.ok()) {
        (void)remove(id);
        return std::move(st).error().with_context("restore of " + id);
      }
    }
    return r;
  }

  Result<ContainerState> state(const std::string& id) override {
    auto r = run_runc({"state", id});
    if (!r.ok()) {
      if (r.error().message().find("does not exist") != std::string::npos)
        return Error(ErrorKind::kNotFound, "no container " + id);
      return std::move(r).error();
    }
    const std::string& out = *r;
    auto j = json::parse(out, nullptr, false);
    if (j.is_discarded()) return Error("runc state " + id + ": unparsable output");
    return parse_state(j);
  }

  Result<int> exec(const std::string& id, const std::vector<std::string>& cmd,
                   milliseconds timeout) override {
    SpawnOptions o;
    o.argv = {binary_, "exec", id};
    o.argv.insert(o.argv.end(), cmd.begin(), cmd.end());
    o.env = {path_env()};
    PW_ASSIGN(RunResult r, run_capture(o, timeout));
    if (WIFEXITED(r.status)) return WEXITSTATUS(r.status);
    return Error("runc exec in " + id + " " + r.describe());
  }

  Status kill(const std::string& id, int signal) override {
    auto r = run_runc({"kill", id, std::to_string(signal)});
    if (!r.ok()) return std::move(r).error();
    return {};
  }

  Status pause(const std::string& id) override {
    auto r = run_runc({"pause", id});
    if (!r.ok()) return std::move(r).error();
    return {};
  }

  Status resume(const std::string& id) override {
    auto r = run_runc({"resume", id});
    if (!r.ok()) return std::move(r).error();
    return {};
  }

  Status remove(const std::string& id) override {
    SpawnOptions o;
    o.argv = {binary_, "delete", "--force", id};
    o.env = {path_env()};
    PW_ASSIGN(RunResult r, run_capture(o, kRuncTimeout));
    // runc 1.1 answers 0 (or "does not exist") for a state dir without state.json, and
    // leaves it: what is left goes here either way.
    if (r.success() || r.err.find("does not exist") != std::string::npos) return remove_orphan(id);
    return Error("runc delete " + id + " " + r.describe() + ": " + r.err);
  }

  // What a runc killed mid-restore leaves for an id it no longer knows (no state.json): its
  // state dir with CRIU's root bind-mounted inside, and the cgroups CRIU restored into
  // (named as prewarm names them, /prewarm-<id>), with whatever CRIU left running.
  static Status remove_orphan(const std::string& id) {
    if (id.empty() || id[0] == '.' || id.find('/') != std::string::npos)
      return Error(ErrorKind::kInvalidInput, "invalid container id '" + id + "'");
    // runc's default state root for root, which prewarm does not change.
    const std::filesystem::path dir = std::filesystem::path("/run/runc") / id;
    PW_TRY(CgroupSet("prewarm-" + id).destroy());
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) return {};
    PW_TRY(fs::unmount_under(dir));
    return fs::remove_all(dir);
  }

  Result<std::vector<ContainerState>> list() override {
    PW_ASSIGN(std::string out, run_runc({"list", "--format", "json"}));
    std::vector<ContainerState> states;
    auto j = json::parse(out, nullptr, false);
    // runc prints "null" when it has no containers.
    if (j.is_null()) return states;
    if (!j.is_array())
      return Error(ErrorKind::kRuntime, "runc list: unparsable output: " + out.substr(0, 200));
    for (const auto& c : j) states.push_back(parse_state(c));
    return states;
  }

  Result<std::string> version() override {
    PW_ASSIGN(std::string out, run_runc({"--version"}));
    // "runc version 1.1.5+ds1\ncommit: ..."
    auto first = out.substr(0, out.find('\n'));
    auto sp = first.rfind(' ');
    return sp == std::string::npos ? first : first.substr(sp + 1);
  }

 private:
  static ContainerState parse_state(const json& j) {
    ContainerState s;
    s.id = j.value("id", "");
    s.status = j.value("status", "");
    s.pid = j.value("pid", 0);
    s.bundle = j.value("bundle", "");
    return s;
  }

  Result<std::string> run_runc(std::vector<std::string> args) {
    args.insert(args.begin(), binary_);
    SpawnOptions o;
    o.argv = args;
    o.env = {path_env()};
    PW_ASSIGN(RunResult r, run_capture(o, kRuncTimeout));
    if (!r.success()) {
      std::string err = r.err;
      while (!err.empty() && err.back() == '\n') err.pop_back();
      return Error(ErrorKind::kRuntime,
                   join_argv(args) + " " + r.describe() + (err.empty() ? "" : ": " + err));
    }
    return std::move(r.out);
  }

  // The fault suite: the CRIU runc starts dies with the tasks restored and stopped, as
  // criu.kill_at_post_restore does under the direct backend. CRIU reads a config file named by
  // CRIU_CONFIG_FILE (runc hands its environment on) and runs its action scripts beside runc's
  // RPC notifications; the script is CRIU's child, so its parent is the CRIU to kill. Returns
  // the config file's path.
  static Result<std::string> kill_criu_at_post_restore(const std::filesystem::path& dir) {
    const auto script = dir / "fault-kill-criu.sh";
    const auto conf = dir / "fault-criu.conf";
    PW_TRY(fs::write_file(script,
                          "#!/bin/sh\n"
                          "[ \"$CRTOOLS_SCRIPT_ACTION\" = post-restore ] && kill -KILL \"$PPID\"\n"
                          "exit 0\n",
                          0755));
    PW_TRY(fs::write_file(conf, "action-script " + script.string() + "\n"));
    return conf.string();
  }

  // Runs runc with the instance's stdio on `stdio_fd`. runc's own complaints go to its --log
  // file; when CRIU was involved, the relevant lines of its log are attached to the error.
  Status invoke_detached(std::vector<std::string> args, const std::filesystem::path& log,
                         int stdio_fd, const std::filesystem::path& criu_log,
                         const std::string& what, int stdin_fd = -1,
                         const std::vector<std::string>& criu_env = {}) {
    ::unlink(log.c_str());
    args.insert(args.begin(), {binary_, "--log", log.string(), "--log-format", "json"});
    // The CRIU prewarm checked and uses, not whichever `criu` is first on PATH.
    if (std::string criu = criu::criu_binary(); !criu.empty())
      args.insert(args.begin() + 5, {"--criu", criu});
    SpawnOptions o;
    o.argv = args;
    o.env = {path_env()};
    // runc hands its environment on to the criu it runs.
    o.env.insert(o.env.end(), criu_env.begin(), criu_env.end());
    o.stdin_fd = stdin_fd;
    o.stdout_fd = stdio_fd;
    o.stderr_fd = stdio_fd;
    PW_ASSIGN(Child child, spawn(o));
    // The fault suite: runc dies while it restores (CRIU, its child, runs on).
    if (fault_armed("runc.kill_in_restore") &&
        std::find(args.begin(), args.end(), "restore") != args.end()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      child.kill(SIGKILL);
    }
    PW_ASSIGN(int status, child.wait(kRuncTimeout));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    RunResult r{status, {}, {}};
    std::string why = runc_log_errors(log);
    Error e(ErrorKind::kRuntime,
            what + " failed: runc " + r.describe() + (why.empty() ? "" : ": " + why));
    if (!criu_log.empty()) {
      std::string tail = criu::relevant_log_tail(criu_log);
      if (!tail.empty())
        return std::move(e).with_detail(criu::criu_log_heading(criu_log) + tail);
    }
    return e;
  }

  std::string binary_;
};

}  // namespace

std::unique_ptr<Runtime> make_runc(const std::string& binary) {
  std::string bin = binary;
  if (bin.empty()) bin = find_executable("runc");
  if (bin.empty()) bin = "runc";
  return std::make_unique<Runc>(bin);
}

}  // namespace prewarm::oci
