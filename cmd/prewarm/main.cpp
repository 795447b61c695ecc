// prewarm CLI: global flags, then one verb (cmd/prewarm/verbs/*.cpp, one file each).
#include <CLI/CLI.hpp>

#include "base/log.h"
#include "cli.h"

int main(int argc, char** argv) {
  using namespace prewarm;
  CLI::App app{"prewarm: start slow containerized apps in milliseconds by restoring a warm "
               "checkpoint"};
  app.require_subcommand(1);
  cli::Globals g;
  app.add_option("--state-dir", g.state_dir,
                 "state directory (default /var/lib/prewarm, or $PREWARM_STATE_DIR)");
  app.add_option("--runtime", g.runtime,
                 "restore backend: criu (direct, default) or runc (or $PREWARM_RUNTIME)");
  app.add_flag("-v,--verbose", g.verbose, "debug output");
  app.parse_complete_callback([&] {
    if (g.verbose) log::set_level(log::Level::kDebug);
  });
  for (auto add : {cli::add_bake, cli::add_run, cli::add_ps, cli::add_rm, cli::add_images,
                   cli::add_inspect, cli::add_rmi, cli::add_gc, cli::add_verify, cli::add_push,
                   cli::add_pull, cli::add_export, cli::add_import, cli::add_doctor,
                   cli::add_bench})
    add(app, g);
  CLI11_PARSE(app, argc, argv);
  return g.rc;
}
