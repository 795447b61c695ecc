// prewarm ps [--json]
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

void add_ps(CLI::App& app, Globals& g) {
  auto as_json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("ps", "list instances");
  c->add_flag("--json", *as_json, "JSON output");
  c->callback([&g, as_json] {
    auto ctx = open_context(g, true, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto l = lifecycle::list_instances(*ctx);
    if (!l.ok()) return void(g.rc = fail(l.error()));
    if (*as_json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : *l)
        out.push_back({{"id", s.record.id},
                       {"image", s.record.image},
                       {"ip", s.record.ip},
                       {"hostname", s.record.hostname},
                       {"state", std::string(lifecycle::state_name(s.record.state))},
                       {"runtimeState", s.runtime_state},
                       {"pid", s.pid},
                       {"runtime", s.record.runtime},
                       {"startedBy", s.record.started_by},
                       {"created", s.record.created}});
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    std::printf("%-24s %-16s %-15s %-14s %-8s %-8s %s\n", "ID", "IMAGE", "IP", "STATE",
                "PROCESS", "STARTED", "CREATED");
    for (const auto& s : *l)
      std::printf("%-24s %-16s %-15s %-14s %-8s %-8s %s\n", s.record.id.c_str(),
                  s.record.image.c_str(), s.record.ip.c_str(),
                  std::string(lifecycle::state_name(s.record.state)).c_str(),
                  s.runtime_state.c_str(), s.record.started_by.c_str(), s.record.created.c_str());
  });
}

}  // namespace prewarm::cli
