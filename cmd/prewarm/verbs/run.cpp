// prewarm run NAME [--count N] [--cold] [--paging P] [--json] [--foreground [--hostname H]]
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "daemon_client.h"
#include "images/load.h"
#include "k8s/in_pod.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

void add_run(CLI::App& app, Globals& g) {
  struct Args {
    std::string image;
    int count = 1;
    bool cold = false, json = false, foreground = false;
    std::string hostname, outcome_file = k8s::InPodOptions{}.outcome_file;
    std::string paging;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("run", "start instances of a baked image");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("--count,-n", a->count, "number of instances, started concurrently");
  c->add_flag("--cold", a->cold, "cold-start instead of restoring");
  c->add_option("--paging", a->paging,
                "how a restore gets the app's memory: lazy (the working set before the app "
                "resumes, the rest served on demand and copied in the background), eager (all of "
                "it before), or auto (lazy for large checkpoints; default: the spec's "
                "restore.paging, else PREWARM_PAGING, else auto)")
      ->check(CLI::IsMember({"lazy", "eager", "auto"}));
  c->add_flag("--json", a->json, "print the started instances as JSON (with their timings)");
  c->add_flag("--foreground", a->foreground,
              "run one instance in this container's own network namespace and cgroup and stay "
              "in the foreground until it exits (a pod container's entrypoint: output, signals "
              "and exit status are the app's)");
  c->add_option("--hostname", a->hostname, "with --foreground: the app's hostname (default: this "
                                           "container's)");
  c->add_option("--outcome-file", a->outcome_file,
                "with --foreground: where to write whether the app was restored, and why not "
                "(JSON; default /run/prewarm/outcome.json)");
  c->callback([&g, a] {
    if (a->foreground) {
      if (a->count != 1 || a->json)
        return void(g.rc = fail(Error(ErrorKind::kInvalidInput,
                                      "--foreground runs one instance and prints no JSON")));
      // No recovery here: other pods on this node share the store, and their instances live in
      // mount namespaces this one does not see.
      auto ctx = open_context(g);
      if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
      k8s::InPodOptions o;
      o.image = a->image;
      o.hostname = a->hostname;
      o.cold = a->cold;
      o.outcome_file = a->outcome_file;
      o.paging = a->paging;
      auto rc = k8s::run_in_pod(*ctx, o);
      if (!rc.ok()) return void(g.rc = fail(rc.error()));
      g.rc = *rc;
      return;
    }
    if (a->count < 1) return void(g.rc = fail(Error(ErrorKind::kInvalidInput,
                                                    "--count must be at least 1")));
    if (auto d = DaemonClient::find(g)) {
      nlohmann::json body = {{"image", a->image}, {"count", a->count},
                             {"mode", a->cold ? "cold" : "restore"}};
      if (!a->paging.empty()) body["paging"] = a->paging;
      auto r = d->call("POST", "/v1/instances", body);
      if (!r.ok()) return void(g.rc = fail(r.error()));
      if (r->status != 201) return void(g.rc = fail(DaemonClient::error_of(*r)));
      for (const auto& j : r->body) {
        if (j.contains("error")) {
          DaemonClient::Answer one{500, j};
          g.rc = fail(DaemonClient::error_of(one));
          continue;
        }
        if (!a->json) print_instance(j);
      }
      if (a->json) std::printf("%s\n", r->body.dump(2).c_str());
      return;
    }
    auto ctx = open_context(g, a->json, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    // A lazy restore of an image not unpacked here needs only part of it (a lazy copy).
    images::LoadOptions lo;
    if (!a->cold) lo.paging = a->paging;
    auto img = images::load_image(*ctx, a->image, lo);
    if (!img.ok()) return void(g.rc = fail(img.error()));
    lifecycle::StartOptions o;
    o.mode = a->cold ? lifecycle::StartMode::kCold : lifecycle::StartMode::kRestore;
    o.paging = a->paging;
    auto results = lifecycle::Instances(*ctx).start_many(*img, a->count, o);
    nlohmann::json out = nlohmann::json::array();
    for (auto& s : results) {
      if (!s.ok()) {
        g.rc = fail(s.error());
        if (a->json)
          out.push_back({{"error", s.error().to_string()},
                         {"kind", error_kind_name(s.error().kind())}});
        continue;
      }
      if (a->json) {
        out.push_back(started_json(*s));
        continue;
      }
      print_started(*s);
    }
    if (a->json) std::printf("%s\n", out.dump(2).c_str());
  });
}

}  // namespace prewarm::cli
