// prewarm verify [NAME]
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_verify(CLI::App& app, Globals& g) {
  auto name = std::make_shared<std::string>();
  auto* c = app.add_subcommand("verify", "re-hash the store's blobs and unpacked images");
  c->add_option("name", *name, "one image (default: all)");
  c->callback([&g, name] {
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto r = images::verify_images(*ctx, *name);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("%s\n", r->c_str());
  });
}

}  // namespace prewarm::cli
