// prewarm gc [--partials]
#include <cstdio>

#include "cli.h"
#include "criu/criu.h"
#include "images/images.h"
#include "lifecycle/instance.h"

namespace prewarm::cli {

void add_gc(CLI::App& app, Globals& g) {
  auto partials = std::make_shared<bool>(false);
  auto* c = app.add_subcommand(
      "gc", "remove store blobs no image references, and what killed operations left");
  c->add_flag("--partials", *partials,
              "also remove partial downloads kept for resuming interrupted pulls");
  c->callback([&g, partials] {
    auto ctx = open_context(g, true, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto in_use = lifecycle::digests_in_use(*ctx);
    if (!in_use.ok()) return void(g.rc = fail(in_use.error()));
    auto r = images::collect_garbage(*ctx, *in_use, *partials);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    const store::GcResult& sr = r->store;
    std::printf("removed %llu blob(s), %.1f MB freed; %llu temporary file(s) removed; %llu "
                "recent unreferenced blob(s) kept\n",
                static_cast<unsigned long long>(sr.removed_blobs),
                static_cast<double>(sr.bytes_freed) / 1e6,
                static_cast<unsigned long long>(sr.removed_temp_files),
                static_cast<unsigned long long>(sr.kept_young_blobs));
    std::printf("removed %llu staging dir(s) of killed bakes, imports and transfers, %.1f MB "
                "(%llu bytes) freed\n",
                static_cast<unsigned long long>(r->staging.dirs),
                static_cast<double>(r->staging.bytes) / 1e6,
                static_cast<unsigned long long>(r->staging.bytes));
    if (r->criu_scratch.dirs > 0)
      std::printf("removed %llu CRIU scratch dir(s) of killed host checks from %s\n",
                  static_cast<unsigned long long>(r->criu_scratch.dirs),
                  criu::scratch_parent().c_str());
    if (sr.kept_temp_files > 0)
      std::printf("kept %llu partial download(s), %.1f MB, so interrupted pulls can resume; they "
                  "go after an hour, or now with `prewarm gc --partials`\n",
                  static_cast<unsigned long long>(sr.kept_temp_files),
                  static_cast<double>(sr.kept_temp_bytes) / 1e6);
  });
}

}  // namespace prewarm::cli
