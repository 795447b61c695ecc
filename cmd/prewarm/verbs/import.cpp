// prewarm import FILE.tar [--name N] [--rootfs DIR]
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_import(CLI::App& app, Globals& g) {
  struct Args {
    std::string archive, name, rootfs;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("import", "import a checkpoint archive (prewarm, kubelet, CRI-O, "
                                         "Podman)");
  c->add_option("archive", a->archive, "archive file")->required();
  c->add_option("--name", a->name, "image name (default: the file's name)");
  c->add_option("--rootfs", a->rootfs,
                "root filesystem of the container image a foreign archive was made from");
  c->callback([&g, a] {
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto r = images::import_image(*ctx, a->archive, a->name, a->rootfs);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("imported %s as %s%s\n", a->archive.c_str(), r->name.c_str(),
                r->foreign ? " (made by another engine)" : "");
    for (const auto& w : r->warnings) std::printf("  note: %s\n", w.c_str());
  });
}

}  // namespace prewarm::cli
