// prewarm CLI: global flags, then one verb (cmd/prewarm/verbs/*.cpp, one file each).
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "base/log.h"
#include "cli.h"
#include "images/load.h"
#include "k8s/oci_runtime.h"

int main(int argc, char** argv) {
  using namespace prewarm;
  // The OCI runtime behind RuntimeClass `prewarm` speaks runc's command line, not prewarm's:
  // as `prewarm-runtime` (the name a shim's BinaryName points at) or `prewarm runtime ...`.
  std::string self = argv[0];
  self = self.substr(self.rfind('/') + 1);
  if (self == "prewarm-runtime")
    return k8s::runtime_main(std::vector<std::string>(argv + 1, argv + argc));
  if (argc > 1 && std::string(argv[1]) == "runtime")
    return k8s::runtime_main(std::vector<std::string>(argv + 2, argv + argc));
  // A lazy restore's page server (started by the restore's supervisor, not by users).
  if (argc > 1 && std::string(argv[1]) == "page-server")
    return images::page_server_main(std::vector<std::string>(argv + 2, argv + argc));
  CLI::App app{"prewarm: start slow containerized apps in milliseconds by restoring a warm "
               "checkpoint"};
  app.require_subcommand(1);
  cli::Globals g;
  app.add_option("--state-dir", g.state_dir,
                 "state directory (default /var/lib/prewarm, or $PREWARM_STATE_DIR)");
  app.add_option("--runtime", g.runtime,
                 "restore backend: criu (direct, default) or runc (or $PREWARM_RUNTIME)");
  app.add_flag("-v,--verbose", g.verbose, "debug output");
  app.add_flag("--no-daemon", g.no_daemon,
               "work alone even where prewarmd runs (run, ps, rm, pool and claim otherwise go "
               "through its API)");
  app.parse_complete_callback([&] {
    if (g.verbose) log::set_level(log::Level::kDebug);
  });
  for (auto add : {cli::add_bake, cli::add_run, cli::add_ps, cli::add_rm, cli::add_images,
                   cli::add_inspect, cli::add_rmi, cli::add_gc, cli::add_verify, cli::add_push,
                   cli::add_pull, cli::add_export, cli::add_import, cli::add_doctor,
                   cli::add_bench, cli::add_self_image, cli::add_pool, cli::add_claim, cli::add_serve})
    add(app, g);
  CLI11_PARSE(app, argc, argv);
  return g.rc;
}
