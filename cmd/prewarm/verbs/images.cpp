// prewarm images
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_images(CLI::App& app, Globals& g) {
  auto* c = app.add_subcommand("images", "list checkpoint images");
  c->callback([&g] {
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto l = images::list_images(*ctx);
    if (!l.ok()) return void(g.rc = fail(l.error()));
    std::printf("%-24s %-24s %10s %10s  %-8s %s\n", "NAME", "CREATED", "SIZE", "STORED",
                "UNPACKED", "DIGEST");
    for (const auto& i : *l) {
      if (!i.problem.empty()) {
        std::printf("%-24s (unreadable: %s)\n", i.name.c_str(), i.problem.c_str());
        continue;
      }
      std::printf("%-24s %-24s %8.1fMB %8.1fMB  %-8s %s\n", i.name.c_str(), i.created.c_str(),
                  static_cast<double>(i.raw_bytes) / 1e6,
                  static_cast<double>(i.stored_bytes) / 1e6, i.unpacked ? "yes" : "no",
                  i.manifest_digest.substr(0, 19).c_str());
    }
  });
}

}  // namespace prewarm::cli
