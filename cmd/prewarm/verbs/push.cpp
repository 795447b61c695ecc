// prewarm push NAME REGISTRY/REPO:TAG [--format prewarm|cri-o] [--plain-http] [--ca-file F]
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_push(CLI::App& app, Globals& g) {
  struct Args {
    std::string image, ref, format = "prewarm";
    RegistryFlags registry;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("push", "push an image to an OCI registry");
  c->add_option("name", a->image, "image name")->required();
  c->add_option("ref", a->ref, "REGISTRY/REPO:TAG")->required();
  c->add_option("--format", a->format,
                "prewarm: chunked, deduplicated (default); cri-o: a checkpoint image CRI-O and "
                "Podman restore from (one archive layer)")
      ->check(CLI::IsMember({"prewarm", "cri-o"}));
  a->registry.add_to(c);
  c->callback([&g, a] {
    auto ctx = open_context(g);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    registry::Stats stats;
    registry::Options o = registry_options(*ctx, a->registry, &stats);
    Status st = a->format == "cri-o" ? images::push_checkpoint_image(*ctx, a->image, a->ref, o)
                                     : images::push_image(*ctx, a->image, a->ref, o);
    if (!st.ok()) return void(g.rc = fail(st.error()));
    std::printf("pushed %s to %s: %llu blob(s) uploaded (%.1f MB), %llu already there\n",
                a->image.c_str(), a->ref.c_str(),
                static_cast<unsigned long long>(stats.blobs_uploaded),
                static_cast<double>(stats.bytes_uploaded) / 1e6,
                static_cast<unsigned long long>(stats.blobs_skipped));
  });
}

}  // namespace prewarm::cli
