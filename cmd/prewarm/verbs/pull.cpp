// prewarm pull REGISTRY/REPO:TAG [--name N] [--rootfs DIR] [--plain-http] [--ca-file F]
#include <cstdio>

#include "cli.h"
#include "images/images.h"

namespace prewarm::cli {

void add_pull(CLI::App& app, Globals& g) {
  struct Args {
    std::string ref, name, rootfs;
    RegistryFlags registry;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("pull", "pull an image from an OCI registry");
  c->add_option("ref", a->ref, "REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...")->required();
  c->add_option("--name", a->name, "local image name (default: the repository's last part)");
  c->add_option("--rootfs", a->rootfs,
                "for a CRI-O/Podman/containerd checkpoint image: the root filesystem of the "
                "container image it was made from");
  a->registry.add_to(c);
  c->callback([&g, a] {
    auto ctx = open_context(g);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    registry::Stats stats;
    registry::Options o = registry_options(*ctx, a->registry, &stats);
    auto r = images::pull_image(*ctx, a->ref, a->name, o, a->rootfs);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("pulled %s as %s: %llu blob(s) downloaded (%.1f MB)\n", a->ref.c_str(),
                r->c_str(), static_cast<unsigned long long>(stats.blobs_downloaded),
                static_cast<double>(stats.bytes_downloaded) / 1e6);
  });
}

}  // namespace prewarm::cli
