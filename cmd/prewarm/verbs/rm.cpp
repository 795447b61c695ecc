// prewarm rm ID... | --all
#include <cstdio>

#include "cli.h"
#include "daemon_client.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

void add_rm(CLI::App& app, Globals& g) {
  struct Args {
    std::vector<std::string> ids;
    bool all = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("rm", "stop and remove instances");
  c->add_option("ids", a->ids, "instance ids");
  c->add_flag("--all,-a", a->all, "remove every instance");
  c->callback([&g, a] {
    if (auto d = DaemonClient::find(g)) {
      std::vector<std::string> ids = a->ids;
      if (a->all) {
        auto l = d->call("GET", "/v1/instances");
        if (!l.ok()) return void(g.rc = fail(l.error()));
        for (const auto& j : l->body) ids.push_back(j.value("id", ""));
      } else if (ids.empty()) {
        return void(g.rc = fail(Error(ErrorKind::kInvalidInput, "rm: give instance ids, or --all")));
      }
      for (const auto& id : ids) {
        auto r = d->call("DELETE", "/v1/instances/" + id);
        if (!r.ok()) return void(g.rc = fail(r.error()));
        if (r->status != 200 && !(a->all && r->status == 404)) {
          g.rc = fail(DaemonClient::error_of(*r));
          continue;
        }
        std::printf("%s\n", id.c_str());
      }
      return;
    }
    auto ctx = open_context(g, true, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    lifecycle::Instances instances(*ctx);
    std::vector<std::string> ids = a->ids;
    if (a->all) {
      auto l = instances.list();
      if (!l.ok()) return void(g.rc = fail(l.error()));
      for (const auto& s : *l) ids.push_back(s.record.id);
    } else if (ids.empty()) {
      return void(g.rc = fail(Error(ErrorKind::kInvalidInput, "rm: give instance ids, or --all")));
    }
    for (const auto& id : ids) {
      Status st = instances.remove(id);
      // With --all, one that went away meanwhile is what was asked for.
      if (!st.ok() && !(a->all && st.error().kind() == ErrorKind::kNotFound)) {
        g.rc = fail(st.error());
        continue;
      }
      std::printf("%s\n", id.c_str());
    }
  });
}

}  // namespace prewarm::cli
