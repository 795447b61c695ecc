// prewarm-runtime: the OCI runtime of RuntimeClass `prewarm`, as a shim's BinaryName. A small
// launcher: most calls (the pause container's, containers that ask for no checkpoint, and
// every call for them afterwards) go straight to runc, without loading prewarm and its
// libraries (~1,000 page faults, ~10 ms on this VM type, per call). `create` of a container
// whose spec asks for a checkpoint, and any call for a container prewarm restored, go to
// `prewarm runtime` (src/k8s/oci_runtime.h), next to this binary.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8s/runc_call.h"

namespace {

constexpr const char* kCheckpointAnnotation = "prewarm.dev/checkpoint";
constexpr const char* kPodStateDir = "/run/prewarm/pods";

std::string dir_of_self() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "/usr/local/bin";
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/'));
}

std::string find_runc() {
  if (const char* e = std::getenv("PREWARM_RUNC"); e && *e) return e;
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string candidate = d + "/runc";
    if (!d.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "/usr/sbin/runc";
}

[[noreturn]] void exec(const std::string& binary, const std::vector<std::string>& before,
                       int argc, char** argv) {
  std::vector<char*> args;
  args.push_back(const_cast<char*>(binary.c_str()));
  for (const auto& b : before) args.push_back(const_cast<char*>(b.c_str()));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(binary.c_str(), args.data());
  std::fprintf(stderr, "prewarm-runtime: cannot run %s: %s\n", binary.c_str(), std::strerror(errno));
  std::exit(127);
}

// Whether the bundle's spec asks for a checkpoint (and is not a pod's sandbox container).
bool asks_for_checkpoint(const std::string& bundle) {
  std::ifstream in(bundle + "/config.json");
  if (!in) return false;
  nlohmann::json spec = nlohmann::json::parse(in, nullptr, false);
  if (!spec.is_object() || !spec.contains("annotations") || !spec["annotations"].is_object())
    return false;
  const auto& a = spec["annotations"];
  auto it = a.find(kCheckpointAnnotation);
  if (it == a.end() || !it->is_string() || it->get<std::string>().empty()) return false;
  auto type = a.find("io.kubernetes.cri.container-type");
  return !(type != a.end() && type->is_string() && type->get<std::string>() == "sandbox");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto call = prewarm::k8s::parse_runc_call(args);
  bool prewarms = false;
  if (call && !call->id.empty() && call->id.find('/') == std::string::npos) {
    if (call->command == "create" && !call->bundle.empty())
      prewarms = asks_for_checkpoint(call->bundle);
    else  // restored by prewarm, or a restore that died half-way (its directory is left)
      prewarms = ::access((std::string(kPodStateDir) + "/" + call->id + ".json").c_str(), F_OK) == 0 ||
                 ::access((std::string(kPodStateDir) + "/" + call->id).c_str(), F_OK) == 0;
  }
  if (prewarms) exec(dir_of_self() + "/prewarm", {"runtime"}, argc, argv);
  exec(find_runc(), {}, argc, argv);
}
