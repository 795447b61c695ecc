// prewarm rmi NAME...
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_rmi(CLI::App& app, Globals& g) {
  auto names = std::make_shared<std::vector<std::string>>();
  auto* c = app.add_subcommand("rmi", "remove images (their blobs go at the next gc)");
  c->add_option("names", *names, "image names")->required();
  c->callback([&g, names] {
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    for (const auto& n : *names) {
      Status st = images::remove_image(*ctx, n);
      if (!st.ok()) {
        g.rc = fail(st.error());
        continue;
      }
      std::printf("%s\n", n.c_str());
    }
  });
}

}  // namespace prewarm::cli
