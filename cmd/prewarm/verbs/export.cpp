// prewarm export NAME -o FILE.tar [--compress none|gzip|zstd]
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_export(CLI::App& app, Globals& g) {
  struct Args {
    std::string image, archive, compression = "none";
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("export", "write an image as a Kubernetes/CRI-O checkpoint archive");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("-o,--output", a->archive, "archive file (.tar)")->required();
  c->add_option("--compress", a->compression, "none (kubelet, CRI-O), gzip or zstd (podman)");
  c->callback([&g, a] {
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    Status st = images::export_image(*ctx, a->image, a->archive, a->compression);
    if (!st.ok()) return void(g.rc = fail(st.error()));
    std::printf("exported %s to %s\n", a->image.c_str(), a->archive.c_str());
  });
}

}  // namespace prewarm::cli
