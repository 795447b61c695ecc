// prewarm pool NAME --size N [--paging P] [--json]
// prewarm claim NAME [--hostname H] [--json]
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "daemon_client.h"
#include "images/load.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {
namespace {

// The context (recovery done) and the image, opened as `run` opens them.
struct Opened {
  engine::Context ctx;
  images::LoadedImage img;
};
Result<std::unique_ptr<Opened>> open_image(const Globals& g, const std::string& name,
                                           const std::string& paging, bool quiet) {
  auto o = std::make_unique<Opened>();
  PW_ASSIGN(o->ctx, open_context(g, quiet, Recover::kYes));
  images::LoadOptions lo;
  lo.paging = paging;
  PW_ASSIGN(o->img, images::load_image(o->ctx, name, lo));
  return o;
}

}  // namespace

void add_pool(CLI::App& app, Globals& g) {
  struct Args {
    std::string image, paging;
    int size = 1;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "pool", "keep instances of an image restored ahead of time: frozen (no CPU), network "
              "attached, not yet given their hostname; `prewarm claim` makes one ready");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("--size,-n", a->size,
                "parked instances to have: as many as are missing are restored, concurrently")
      ->required();
  c->add_option("--paging", a->paging, "lazy, eager or auto, as for `prewarm run`")
      ->check(CLI::IsMember({"lazy", "eager", "auto"}));
  c->add_flag("--json", a->json, "print the parked instances as JSON");
  c->callback([&g, a] {
    if (a->size < 0)
      return void(g.rc = fail(Error(ErrorKind::kInvalidInput, "--size must not be negative")));
    if (auto d = DaemonClient::find(g)) {
      // The daemon keeps the pool (and refills it): its min becomes --size.
      auto cur = d->call("GET", "/v1/pools/" + a->image);
      int max = 16;
      if (cur.ok() && cur->status == 200) max = cur->body.value("max", 16);
      nlohmann::json body = {{"min", a->size}, {"max", std::max(max, a->size)}};
      if (!a->paging.empty()) body["paging"] = a->paging;
      auto r = d->call("PUT", "/v1/pools/" + a->image, body);
      if (!r.ok()) return void(g.rc = fail(r.error()));
      if (r->status != 200) return void(g.rc = fail(DaemonClient::error_of(*r)));
      if (a->json) {
        std::printf("%s\n", r->body.dump(2).c_str());
        return;
      }
      std::printf("prewarmd keeps %d instance(s) of %s parked (max %d; %d parked now)\n", a->size,
                  a->image.c_str(), r->body.value("max", 0), r->body.value("parked", 0));
      return;
    }
    auto opened = open_image(g, a->image, a->paging, a->json);
    if (!opened.ok()) return void(g.rc = fail(opened.error()));
    const engine::Context& ctx = (*opened)->ctx;
    const images::LoadedImage& img = (*opened)->img;
    lifecycle::Instances instances(ctx);
    auto have = instances.parked(img);
    if (!have.ok()) return void(g.rc = fail(have.error()));
    const int missing = a->size - static_cast<int>(have->size());
    lifecycle::StartOptions o;
    o.park = true;
    o.paging = a->paging;
    nlohmann::json out = nlohmann::json::array();
    if (missing > 0) {
      ctx.say("parking " + std::to_string(missing) + " instance(s) of " + a->image + " (" +
               std::to_string(have->size()) + " parked already)");
      for (auto& s : instances.start_many(img, missing, o)) {
        if (!s.ok()) {
          g.rc = fail(s.error());
          continue;
        }
        if (a->json) out.push_back(started_json(*s));
        else print_started(*s);
      }
    } else if (!a->json) {
      std::printf("%zu instance(s) of %s parked already\n", have->size(), a->image.c_str());
    }
    if (a->json) std::printf("%s\n", out.dump(2).c_str());
  });
}

void add_claim(CLI::App& app, Globals& g) {
  struct Args {
    std::string image, hostname, paging;
    bool json = false, no_restore = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand(
      "claim", "make a parked instance of an image ready (its hostname, thawed, probed); "
               "with none parked, restore one as `run` does");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("--hostname", a->hostname, "the instance's hostname (default: its id)");
  c->add_flag("--no-restore", a->no_restore,
              "fail (not found) when nothing is parked instead of restoring an instance");
  c->add_option("--paging", a->paging, "for a restore when nothing is parked, as for `run`")
      ->check(CLI::IsMember({"lazy", "eager", "auto"}));
  c->add_flag("--json", a->json, "print the instance as JSON (claimed: whether it was parked)");
  c->callback([&g, a] {
    if (auto d = DaemonClient::find(g)) {
      auto r = d->call("POST", "/v1/pools/" + a->image + "/claim", {{"hostname", a->hostname}});
      if (!r.ok()) return void(g.rc = fail(r.error()));
      bool claimed = r->status == 200;
      if (r->status == 404 && !a->no_restore) {
        // No pool for it: a restore by the daemon, as `run` would.
        nlohmann::json body = {{"image", a->image}, {"hostname", a->hostname}};
        if (!a->paging.empty()) body["paging"] = a->paging;
        r = d->call("POST", "/v1/instances", body);
        if (!r.ok()) return void(g.rc = fail(r.error()));
        if (r->status == 201 && r->body.is_array() && !r->body.empty()) {
          nlohmann::json one = r->body[0];
          r->body = one;
          r->status = one.contains("error") ? 500 : 200;
        }
      }
      if (r->status != 200) return void(g.rc = fail(DaemonClient::error_of(*r)));
      r->body["claimed"] = claimed && r->body.value("claimed", true);
      if (a->json) std::printf("%s\n", r->body.dump(2).c_str());
      else print_instance(r->body);
      return;
    }
    auto opened = open_image(g, a->image, a->paging, a->json);
    if (!opened.ok()) return void(g.rc = fail(opened.error()));
    const engine::Context& ctx = (*opened)->ctx;
    const images::LoadedImage& img = (*opened)->img;
    lifecycle::Instances instances(ctx);
    lifecycle::StartOptions o;
    o.hostname = a->hostname;
    o.paging = a->paging;
    auto s = instances.claim(img, o);
    bool claimed = s.ok();
    if (!s.ok() && s.error().kind() == ErrorKind::kNotFound && !a->no_restore) {
      ctx.say("no parked instance of " + a->image + "; restoring one");
      s = instances.start(img, o);
    }
    if (!s.ok()) return void(g.rc = fail(s.error()));
    if (a->json) {
      auto j = started_json(*s);
      j["claimed"] = claimed;
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    print_started(*s);
  });
}

}  // namespace prewarm::cli
