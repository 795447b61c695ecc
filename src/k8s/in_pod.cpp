// Runtime in runtime: restore in the pod container's own namespaces, then wait in the
// foreground.
#include "k8s/in_pod.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "lifecycle/sandbox.h"
#include "oci/cgroup.h"

namespace prewarm::k8s {
namespace {

namespace stdfs = std::filesystem;

void say(const std::string& line) {
  std::fprintf(stderr, "prewarm: %s\n", line.c_str());
  std::fflush(stderr);
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

std::string pod_ip() {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::string ip;
  for (auto* a = list; a && ip.empty(); a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || (a->ifa_flags & IFF_LOOPBACK))
      continue;
    char buf[INET_ADDRSTRLEN] = {};
    auto* sin = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf)) ip = buf;
  }
  ::freeifaddrs(list);
  return ip;
}

Result<int> run_in_pod(const engine::Context& ctx, const InPodOptions& o) {
  // The app (restored by CRIU or started by runc, both of which exit) is re-parented to this
  // process, so its exit status can be collected.
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return Error::sys("prctl(PR_SET_CHILD_SUBREAPER)", errno);
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGCHLD}) sigaddset(&mask, s);
  if (::sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return Error::sys("sigprocmask", errno);
  UniqueFd sfd(::signalfd(-1, &mask, SFD_CLOEXEC));
  if (sfd.get() < 0) return Error::sys("signalfd", errno);

  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, o.image));
  lifecycle::GivenSandbox given;
  given.netns_path = "/proc/" + std::to_string(::getpid()) + "/ns/net";
  given.ip = pod_ip();
  if (given.ip.empty())
    return Error(ErrorKind::kIncompatibleHost,
                 "this container's network namespace has no IPv4 address to reach the app at");
  given.cgroup_parent = oci::own_cgroup();
  lifecycle::Seams seams = lifecycle::default_seams(ctx);
  seams.sandbox = lifecycle::make_given_sandbox(given);
  lifecycle::Instances instances(ctx, std::move(seams));

  char host[256] = {};
  (void)::gethostname(host, sizeof host - 1);
  lifecycle::StartOptions so;
  so.mode = o.cold ? lifecycle::StartMode::kCold : lifecycle::StartMode::kRestore;
  so.paging = o.paging;
  so.hostname = o.hostname.empty() ? std::string(host) : o.hostname;
  so.stdio_fd = STDOUT_FILENO;  // the app's output is this container's output
  // Held while the app runs: another prewarm sharing the node's store never takes it for a
  // half-made instance.
  so.keep_lock = true;
  PW_ASSIGN(lifecycle::Started started, instances.start(img, so));
  const auto& rec = started.record;
  nlohmann::json outcome = {{"image", o.image},
                            {"instance", rec.id},
                            {"restored", rec.started_by == "restore"},
                            {"pid", started.pid},
                            {"readyMs", started.timings.total_ms}};
  if (!rec.fallback_reason.empty()) outcome["reason"] = rec.fallback_reason;
  (void)fs::make_dirs(o.outcome_file.parent_path(), 0755);
  (void)fs::write_file_atomic(o.outcome_file, outcome.dump() + "\n", 0644);
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.1f", started.timings.total_ms);
  if (rec.started_by == "restore")
    say("restored " + o.image + " as " + rec.id + ", ready in " + ms + " ms");
  else
    say("cold-started " + o.image + " as " + rec.id + ", ready in " + ms + " ms" +
        (rec.fallback_reason.empty() ? "" : "; restore was not possible: " + rec.fallback_reason));

  auto rt = ctx.runtime_named(rec.runtime);
  const pid_t app = started.pid;
  int status = 0;
  bool exited = false;
  while (!exited) {
    pollfd p{sfd.get(), POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return Error::sys("poll", errno);
    }
    signalfd_siginfo si{};
    if (::read(sfd.get(), &si, sizeof si) != sizeof si) continue;
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      // The kubelet's stop: the app decides how to end (its exit status is what we exit with).
      if (Status st = rt->kill(rec.id, static_cast<int>(si.ssi_signo)); !st.ok())
        say("forwarding signal " + std::to_string(si.ssi_signo) + ": " + st.error().message());
      continue;
    }
    // SIGCHLD: reap every orphan that came to us; the app's status is the one that counts.
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(-1, &st, WNOHANG);
      if (r <= 0) break;
      if (r == app) {
        status = st;
        exited = true;
      }
    }
  }
  started.lock.reset();
  if (Status st = instances.remove(rec.id); !st.ok())
    say("removing instance " + rec.id + ": " + st.error().message());
  return exit_code(status);
}

}  // namespace prewarm::k8s
