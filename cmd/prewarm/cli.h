// What the verbs share: global flags, context creation, error printing. Each verb lives in
// verbs/<verb>.cpp and registers itself with add_<verb>; its callback sets Globals::rc.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "base/result.h"
#include "engine/context.h"
#include "lifecycle/instance.h"
#include <nlohmann/json_fwd.hpp>
#include "registry/registry.h"

namespace prewarm::cli {

struct Globals {
  std::string state_dir;
  std::string runtime;  // --runtime: restore backend ("" : PREWARM_RUNTIME or the default)
  bool verbose = false;
  bool no_daemon = false;  // --no-daemon: work alone even where prewarmd runs
  int rc = 0;
};

// Prints "prewarm: MESSAGE" (and the detail, e.g. CRIU's log lines) to stderr; returns 1.
int fail(const Error& e);

enum class Recover { kNo, kYes };
// The context from the environment and the global flags. With Recover::kYes, instances a
// crashed prewarm left half-made are undone first (a note on stderr says which); the verbs that
// ask for it run containers, so they need root, and a non-root user is refused up front.
Result<engine::Context> open_context(const Globals& g, bool quiet = false,
                                     Recover recover = Recover::kNo);

std::string fmt_ms(double ms);
// A started (or claimed) instance: as JSON (id, ip, pid, how it started, timings), or as the
// line `run` prints (with the fallback's reason and any note below it).
nlohmann::json started_json(const lifecycle::Started& s);
void print_started(const lifecycle::Started& s);
// The same line from such JSON (started_json's, or the daemon's).
void print_instance(const nlohmann::json& j);

// --plain-http and --ca-file, shared by push and pull.
struct RegistryFlags {
  bool plain_http = false;
  std::string ca_file;
  void add_to(CLI::App* c);
};
// The registry options of the context with the flags applied, counting into stats.
registry::Options registry_options(const engine::Context& ctx, const RegistryFlags& f,
                                   registry::Stats* stats);

void add_bake(CLI::App& app, Globals& g);
void add_run(CLI::App& app, Globals& g);
void add_ps(CLI::App& app, Globals& g);
void add_rm(CLI::App& app, Globals& g);
void add_images(CLI::App& app, Globals& g);
void add_inspect(CLI::App& app, Globals& g);
void add_rmi(CLI::App& app, Globals& g);
void add_gc(CLI::App& app, Globals& g);
void add_verify(CLI::App& app, Globals& g);
void add_push(CLI::App& app, Globals& g);
void add_pull(CLI::App& app, Globals& g);
void add_export(CLI::App& app, Globals& g);
void add_import(CLI::App& app, Globals& g);
void add_doctor(CLI::App& app, Globals& g);
void add_bench(CLI::App& app, Globals& g);
void add_self_image(CLI::App& app, Globals& g);
void add_pool(CLI::App& app, Globals& g);
void add_claim(CLI::App& app, Globals& g);
void add_serve(CLI::App& app, Globals& g);

}  // namespace prewarm::cli
