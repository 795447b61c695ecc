// prewarm inspect NAME
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "image/image.h"
#include "spec/names.h"

namespace prewarm::cli {

void add_inspect(CLI::App& app, Globals& g) {
  auto name = std::make_shared<std::string>();
  auto* c = app.add_subcommand("inspect", "verify an image and show its manifest");
  c->add_option("name", *name, "image name")->required();
  c->callback([&g, name] {
    if (Status st = spec::check_name(*name, "image name"); !st.ok())
      return void(g.rc = fail(st.error()));
    auto ctx = open_context(g, true);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    image::VerifyOptions vo;
    vo.force_full = true;
    vo.stamp_dir = ctx->stamps_dir();
    auto m = image::open_verified(ctx->image_dir(*name), vo);
    if (!m.ok()) return void(g.rc = fail(m.error()));
    auto j = nlohmann::json::parse(image::to_json(*m));
    j["verified"] = true;
    j["dir"] = ctx->image_dir(*name).string();
    std::printf("%s\n", j.dump(2).c_str());
  });
}

}  // namespace prewarm::cli
