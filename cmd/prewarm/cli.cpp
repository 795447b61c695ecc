// Shared CLI plumbing.
#include "cli.h"

#include <unistd.h>

#include <cstdio>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "images/images.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

int fail(const Error& e) {
  std::fprintf(stderr, "prewarm: %s\n", e.to_string().c_str());
  return 1;
}

Result<engine::Context> open_context(const Globals& g, bool quiet, Recover recover) {
  // Said before anything is made: otherwise the first chmod or mount would fail obscurely.
  if (recover == Recover::kYes && ::geteuid() != 0)
    return Error(ErrorKind::kPermissionDenied,
                 "this command must run as root (it uses CRIU, namespaces and mounts)");
  engine::Config config = engine::config_from_env();
  if (!g.runtime.empty()) config.runtime = g.runtime;
  PW_ASSIGN(engine::Context ctx, engine::make_context(std::move(config), g.state_dir));
  if (!quiet) ctx.progress = [](const std::string& m) { log::info(m); };
  if (recover == Recover::kYes) {
    auto rep = lifecycle::Instances(ctx).recover();
    if (!rep.ok()) return std::move(rep).error().with_context("recovering instances");
    for (const auto& id : rep->removed)
      std::fprintf(stderr, "prewarm: removed %s, left half-made by a prewarm that died\n",
                   id.c_str());
    for (const auto& p : rep->problems) std::fprintf(stderr, "prewarm: recovery: %s\n", p.c_str());
  }
  return ctx;
}

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 10000 ? "%.0f ms" : "%.1f s", ms < 10000 ? ms : ms / 1000);
  return buf;
}

void RegistryFlags::add_to(CLI::App* c) {
  c->add_flag("--plain-http", plain_http, "plain HTTP (default only for localhost and 127.0.0.1)");
  c->add_option("--ca-file", ca_file, "CA certificate(s) to verify the registry with");
}

registry::Options registry_options(const engine::Context& ctx, const RegistryFlags& f,
                                   registry::Stats* stats) {
  registry::Options o = images::registry_options(ctx);
  o.stats = stats;
  if (f.plain_http) o.insecure_http = true;
  o.ca_file = f.ca_file;
  return o;
}

nlohmann::json started_json(const lifecycle::Started& s) {
  const auto& r = s.record;
  return {{"id", r.id},
          {"ip", r.ip},
          {"pid", s.pid},
          {"hostname", r.hostname},
          {"state", std::string(lifecycle::state_name(r.state))},
          {"startedBy", r.started_by},
          {"runtime", r.runtime},
          {"paging", r.paging},
          {"fallbackReason", r.fallback_reason},
          {"restoreNote", r.restore_note},
          {"readyMilliseconds", s.timings.total_ms},
          {"timingsMilliseconds", s.timings.as_map()}};
}

void print_started(const lifecycle::Started& s) { print_instance(started_json(s)); }

void print_instance(const nlohmann::json& j) {
  const bool parked = j.value("state", "") == "restored";
  std::printf("%-24s %-15s %s in %-9s %s%s\n", j.value("id", "").c_str(), j.value("ip", "").c_str(),
              parked ? "parked" : "ready", fmt_ms(j.value("readyMilliseconds", 0.0)).c_str(),
              j.value("startedBy", "").c_str(), j.value("paging", "") == "lazy" ? " (lazy)" : "");
  if (!j.value("fallbackReason", "").empty())
    std::printf("  restore was not possible, cold-started instead: %s\n",
                j.value("fallbackReason", "").c_str());
  if (!j.value("restoreNote", "").empty()) std::printf("  note: %s\n", j.value("restoreNote", "").c_str());
}

}  // namespace prewarm::cli
