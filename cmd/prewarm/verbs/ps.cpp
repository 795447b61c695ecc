// prewarm ps [--json]
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "daemon_client.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

void add_ps(CLI::App& app, Globals& g) {
  auto as_json = std::make_shared<bool>(false);
  auto* c = app.add_subcommand("ps", "list instances");
  c->add_flag("--json", *as_json, "JSON output");
  c->callback([&g, as_json] {
    if (auto d = DaemonClient::find(g)) {
      auto r = d->call("GET", "/v1/instances");
      if (!r.ok()) return void(g.rc = fail(r.error()));
      if (r->status != 200) return void(g.rc = fail(DaemonClient::error_of(*r)));
      if (*as_json) {
        nlohmann::json out = nlohmann::json::array();
        for (auto j : r->body) {
          j["runtimeState"] = j.value("process", "");
          out.push_back(j);
        }
        std::printf("%s\n", out.dump(2).c_str());
        return;
      }
      std::printf("%-24s %-16s %-15s %-14s %-8s %-8s %s\n", "ID", "IMAGE", "IP", "STATE",
                  "PROCESS", "STARTED", "CREATED");
      for (const auto& j : r->body)
        std::printf("%-24s %-16s %-15s %-14s %-8s %-8s %s\n", j.value("id", "").c_str(),
                    j.value("image", "").c_str(), j.value("ip", "").c_str(), j.value("state", "").c_str(),
                    j.value("process", "").c_str(), j.value("startedBy", "").c_str(),
                    j.value("created", "").c_str());
      return;
    }
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
                       {"created", s.record.created},
                       {"error", s.record.error}});
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
