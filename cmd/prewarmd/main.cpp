// prewarmd: the node daemon (src/daemon/daemon.h). Runs until SIGTERM or SIGINT.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "base/log.h"
#include "daemon/daemon.h"
#include "engine/context.h"

int main(int argc, char** argv) {
  using namespace prewarm;
  CLI::App app{"prewarmd: the prewarm node daemon (API, warm pools, metrics)"};
  daemon::Options o;
  std::string state_dir;
  bool verbose = false;
  app.add_option("--socket", o.socket, "unix socket of the API (root only)")->capture_default_str();
  app.add_option("--tcp", o.tcp, "also serve the API on HOST:PORT (needs --token-file)");
  app.add_option("--token-file", o.token_file, "bearer token TCP requests must carry");
  app.add_option("--pools", o.pools_file, "YAML file of pools to keep: pools: [{image, min, max}]");
  app.add_option("--state-dir", state_dir, "state directory (default /var/lib/prewarm, or $PREWARM_STATE_DIR)");
  app.add_flag("-v,--verbose", verbose, "debug output");
  CLI11_PARSE(app, argc, argv);
  if (verbose) log::set_level(log::Level::kDebug);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "prewarmd: must run as root (it restores containers)\n");
    return 1;
  }
  // Signals go to the thread that waits for them, not to workers.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto ctx = engine::make_context(state_dir);
  if (!ctx.ok()) {
    std::fprintf(stderr, "prewarmd: %s\n", ctx.error().to_string().c_str());
    return 1;
  }
  ctx->progress = [](const std::string& line) { log::info(line); };
  daemon::Daemon d(std::move(ctx).value(), o);
  if (Status st = d.start(); !st.ok()) {
    std::fprintf(stderr, "prewarmd: %s\n", st.error().to_string().c_str());
    return 1;
  }
  log::info("prewarmd: serving on " + o.socket + (o.tcp.empty() ? "" : " and " + o.tcp));
  int sig = 0;
  sigwait(&set, &sig);
  log::info("prewarmd: stopping (signal " + std::to_string(sig) + "); instances keep running");
  d.stop();
  return 0;
}
