// The runc wrapper: command line, dispatch, and the calls that only go to runc.
#include "k8s/oci_runtime.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/subprocess.h"
#include "k8s/pod_restore.h"

namespace prewarm::k8s {
namespace {

namespace stdfs = std::filesystem;
using json = nlohmann::json;

// Replaces this process with runc, same arguments. Returns only on failure.
int exec_runc(const std::vector<std::string>& args) {
  const std::string runc = runc_binary();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(runc.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(runc.c_str(), argv.data());
  std::fprintf(stderr, "prewarm-runtime: cannot run %s: %s\n", runc.c_str(), std::strerror(errno));
  return 127;
}

// Runs runc with the same arguments and waits: for calls after which prewarm has to clean up.
int run_runc(const std::vector<std::string>& args) {
  SpawnOptions o;
  o.argv = {runc_binary()};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.stdin_fd = STDIN_FILENO;
  o.stdout_fd = STDOUT_FILENO;
  o.stderr_fd = STDERR_FILENO;
  auto child = spawn(o);
  if (!child.ok()) {
    std::fprintf(stderr, "prewarm-runtime: %s\n", child.error().message().c_str());
    return 127;
  }
  auto status = child->wait();
  if (!status.ok()) return 1;
  if (WIFEXITED(*status)) return WEXITSTATUS(*status);
  return 128 + (WIFSIGNALED(*status) ? WTERMSIG(*status) : 0);
}

// Whether `runc state ID` (with the shim's global options) finds the container.
bool runc_knows(const std::vector<std::string>& globals, const std::string& id) {
  std::vector<std::string> args = globals;
  args.insert(args.end(), {"state", id});
  SpawnOptions o;
  o.argv = {runc_binary()};
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  auto child = spawn(o);
  if (!child.ok()) return true;  // can't tell: keep what is there
  auto status = child->wait();
  return !status.ok() || (WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
}

}  // namespace


std::string outcome_json(const PodOutcome& o) {
  json j = {{"containerId", o.container_id},
            {"checkpoint", o.checkpoint},
            {"restored", o.restored},
            {"restoreMs", o.restore_ms}};
  if (!o.image.empty()) j["image"] = o.image;
  if (!o.reason.empty()) j["reason"] = o.reason;
  if (o.pull_ms > 0) j["pullMs"] = o.pull_ms;
  if (!o.pid.empty()) j["pid"] = o.pid;
  for (const auto& [k, v] : {std::pair{"runtime", &o.runtime}, {"cgroup", &o.cgroup},
                             {"bundle", &o.bundle}, {"created", &o.created}})
    if (!v->empty()) j[k] = *v;
  return j.dump() + "\n";
}

Result<PodOutcome> read_outcome(const std::string& id) {
  if (id.empty() || id.find('/') != std::string::npos || id[0] == '.')
    return Error(ErrorKind::kInvalidInput, "container id '" + id + "' is not usable");
  auto text = fs::read_file(stdfs::path(kPodStateDir) / (id + ".json"), 1 << 20);
  if (!text.ok()) return Error(ErrorKind::kNotFound, "no outcome for " + id);
  json j = json::parse(*text, nullptr, false);
  if (!j.is_object()) return Error(ErrorKind::kInvalidInput, "outcome of " + id + " is not JSON");
  PodOutcome o;
  auto str = [&](const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  o.container_id = str("containerId");
  o.checkpoint = str("checkpoint");
  o.image = str("image");
  o.restored = j.value("restored", false);
  o.reason = str("reason");
  o.pid = str("pid");
  o.runtime = str("runtime");
  o.cgroup = str("cgroup");
  o.bundle = str("bundle");
  o.created = str("created");
  return o;
}

int runtime_main(const std::vector<std::string>& args) {
  auto call = parse_runc_call(args);
  // Whatever prewarm does not understand is runc's to answer (and to refuse).
  if (!call || call->id.empty()) return exec_runc(args);
  const RuncCall& c = *call;
  if (c.command == "create" && !c.bundle.empty()) {
    if (restore_if_asked(c)) {
      // The shim waits for this process to end. Everything is written and closed; leaving
      // without running exit-time destructors skips the gRPC library's shutdown (it joins its
      // threads: ~20 ms here, a sixth of a pod's restore).
      std::fflush(nullptr);
      ::_exit(0);
    }
    return exec_runc(args);
  }
  if (c.command == "start" && was_restored(c.id)) return 0;  // it runs already
  // Containers restored by direct CRIU are not runc's: their calls are answered here.
  if (auto o = read_outcome(c.id); o.ok() && o->restored && o->runtime == "criu")
    return direct_call(c, *o);
  if (c.command == "delete") {
    int rc = run_runc(args);
    // Once runc no longer knows the container, what prewarm made for it goes too.
    if (rc == 0 || !runc_knows(c.globals, c.id)) release_pod_container(c.id);
    return rc;
  }
  return exec_runc(args);
}

}  // namespace prewarm::k8s
