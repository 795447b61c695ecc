// prewarm bake SPEC.yaml [--name NAME] [--no-working-set]
#include <cstdio>

#include "bake/bake.h"
#include "cli.h"

namespace prewarm::cli {

void add_bake(CLI::App& app, Globals& g) {
  struct Args {
    std::string spec, name;
    bool no_working_set = false;
    RegistryFlags registry;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("bake", "run the app once, warm it up and checkpoint it");
  c->add_option("spec", a->spec, "AppSpec YAML file")->required();
  c->add_option("--name", a->name, "image name (default: the spec's name)");
  c->add_flag("--no-working-set", a->no_working_set,
              "skip the trial lazy restore that learns which pages the app touches until it "
              "has answered its warm-up (lazy restores copy those before the app resumes)");
  a->registry.add_to(c);  // for a rootfs image in a registry
  c->callback([&g, a] {
    auto ctx = open_context(g, false, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    bake::BakeOptions o;
    o.name = a->name;
    o.working_set = !a->no_working_set;
    o.registry = registry_options(*ctx, a->registry, nullptr);
    auto r = bake::bake(*ctx, a->spec, o);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("baked %s -> %s (%.1f MB)\n", r->name.c_str(), r->dir.c_str(),
                static_cast<double>(r->image_bytes) / 1e6);
    for (const char* k :
         {"rootfs", "start", "ready", "warmup", "quiesce", "checkpoint", "working-set", "seal",
          "total"})
      if (r->timings_s.count(k)) std::printf("  %-11s %8.3f s\n", k, r->timings_s.at(k));
    if (r->tcp_established) std::printf("  (open TCP connections were checkpointed)\n");
    if (r->working_set_pages > 0)
      std::printf("  working set: %.1f MB of %.1f MB that lazy restores may serve on demand\n",
                  static_cast<double>(r->working_set_pages) * 4096 / 1e6,
                  static_cast<double>(r->lazy_pages) * 4096 / 1e6);
    else if (!r->working_set_note.empty())
      std::printf("  no working set: %s\n", r->working_set_note.c_str());
    std::printf("  stored: %.1f MB compressed, %.1f MB new (%.0f%% already in the store)\n",
                static_cast<double>(r->stored_bytes_total) / 1e6,
                static_cast<double>(r->stored_bytes_new) / 1e6, r->dedup_ratio * 100);
  });
}

}  // namespace prewarm::cli
