// prewarm self-image OUT.tar [--name NAME]
#include <cstdio>

#include "cli.h"
#include "k8s/self_image.h"

namespace prewarm::cli {

void add_self_image(CLI::App& app, Globals& g) {
  auto opts = std::make_shared<k8s::SelfImageOptions>();
  auto out = std::make_shared<std::string>();
  auto* c = app.add_subcommand(
      "self-image", "write the prewarm container image (this prewarm, runc, CRIU, busybox) as an "
                    "OCI archive, for runtime in runtime, bake Jobs and the node DaemonSet");
  c->add_option("out", *out, "the archive to write (e.g. prewarm.tar)")->required();
  c->add_option("--name", opts->name, "the image's name (default prewarm/prewarm:0.1.0)");
  c->callback([&g, opts, out] {
    auto r = k8s::write_self_image(*opts, *out);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("wrote %s: %s (%s, layer %.1f MB)\n", out->c_str(), opts->name.c_str(),
                r->manifest_digest.c_str(), static_cast<double>(r->layer_size) / 1e6);
  });
}

}  // namespace prewarm::cli
