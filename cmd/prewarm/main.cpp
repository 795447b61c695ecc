// prewarm CLI: argument parsing and one engine call per verb.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <future>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/log.h"
#include "engine/bake.h"
#include "engine/bench.h"
#include "engine/context.h"
#include "engine/doctor.h"
#include "engine/instance.h"
#include "image/image.h"

namespace {

using namespace prewarm;
using nlohmann::json;

int fail(const Error& e) {
  std::fprintf(stderr, "prewarm: %s\n", e.to_string().c_str());
  return 1;
}

Result<engine::Context> context(const std::string& state_dir, bool quiet = false) {
  auto ctx = engine::make_context(state_dir);
  if (ctx.ok() && !quiet) ctx->progress = [](const std::string& m) { log::info(m); };
  return ctx;
}

std::string fmt_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 10000 ? "%.0f ms" : "%.1f s", ms < 10000 ? ms : ms / 1000);
  return buf;
}

int cmd_bake(const std::string& state_dir, const std::string& spec, const std::string& name) {
  auto ctx = context(state_dir);
  if (!ctx.ok()) return fail(ctx.error());
  engine::BakeOptions o;
  o.name = name;
  auto r = engine::bake(*ctx, spec, o);
  if (!r.ok()) return fail(r.error());
  std::printf("baked %s -> %s (%.1f MB)\n", r->name.c_str(), r->dir.c_str(),
              static_cast<double>(r->image_bytes) / 1e6);
  for (const char* k : {"rootfs", "start", "ready", "warmup", "quiesce", "checkpoint", "seal", "total"})
    if (r->timings_s.count(k)) std::printf("  %-11s %8.3f s\n", k, r->timings_s.at(k));
  if (r->tcp_established) std::printf("  (open TCP connections were checkpointed)\n");
  return 0;
}

int cmd_run(const std::string& state_dir, const std::string& name, int count, bool cold) {
  if (count < 1) return fail(Error("--count must be at least 1"));
  auto ctx = context(state_dir);
  if (!ctx.ok()) return fail(ctx.error());
  auto img = engine::load_image(*ctx, name);
  if (!img.ok()) return fail(img.error());
  std::mutex mu;
  int failed = 0;
  std::vector<std::future<void>> futs;
  for (int i = 0; i < count; ++i)
    futs.push_back(std::async(std::launch::async, [&] {
      auto s = engine::start_instance(*ctx, *img,
                                      cold ? engine::StartMode::kCold : engine::StartMode::kRestore);
      std::lock_guard lock(mu);
      if (!s.ok()) {
        ++failed;
        std::fprintf(stderr, "prewarm: %s\n", s.error().to_string().c_str());
        return;
      }
      const auto& r = s->record;
      std::printf("%-24s %-15s ready in %-9s %s\n", r.id.c_str(), r.ip.c_str(),
                  fmt_ms(s->timings.total_ms).c_str(), r.started_by.c_str());
      if (!r.fallback_reason.empty())
        std::printf("  restore was not possible, cold-started instead: %s\n",
                    r.fallback_reason.c_str());
      std::fflush(stdout);
    }));
  for (auto& f : futs) f.get();
  return failed ? 1 : 0;
}

int cmd_ps(const std::string& state_dir, bool as_json) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  auto l = engine::list_instances(*ctx);
  if (!l.ok()) return fail(l.error());
  if (as_json) {
    json out = json::array();
    for (const auto& s : *l)
      out.push_back({{"id", s.record.id}, {"image", s.record.image}, {"ip", s.record.ip},
                     {"hostname", s.record.hostname}, {"state", s.state}, {"pid", s.pid},
                     {"startedBy", s.record.started_by}, {"created", s.record.created}});
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-24s %-16s %-15s %-8s %-8s %s\n", "ID", "IMAGE", "IP", "STATE", "STARTED", "CREATED");
  for (const auto& s : *l)
    std::printf("%-24s %-16s %-15s %-8s %-8s %s\n", s.record.id.c_str(), s.record.image.c_str(),
                s.record.ip.c_str(), s.state.c_str(), s.record.started_by.c_str(),
                s.record.created.c_str());
  return 0;
}

int cmd_rm(const std::string& state_dir, std::vector<std::string> ids, bool all) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  if (all) {
    auto l = engine::list_instances(*ctx);
    if (!l.ok()) return fail(l.error());
    for (const auto& s : *l) ids.push_back(s.record.id);
  } else if (ids.empty()) {
    return fail(Error("rm: give instance ids, or --all"));
  }
  int rc = 0;
  for (const auto& id : ids) {
    if (!all && !std::filesystem::exists(ctx->instance_dir(id))) {
      std::fprintf(stderr, "prewarm: no instance %s (see `prewarm ps`)\n", id.c_str());
      rc = 1;
      continue;
    }
    Status st = engine::remove_instance(*ctx, id);
    if (!st.ok()) {
      rc = 1;
      fail(st.error());
    } else {
      std::printf("%s\n", id.c_str());
    }
  }
  return rc;
}

int cmd_images(const std::string& state_dir) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  std::printf("%-20s %-21s %10s  %s\n", "NAME", "CREATED", "SIZE", "ROOTFS");
  std::error_code ec;
  std::vector<std::filesystem::path> dirs;
  for (const auto& e : std::filesystem::directory_iterator(ctx->images_dir(), ec))
    if (e.path().filename().string().front() != '.') dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& d : dirs) {
    auto text = fs::read_file(d / image::kManifestFile, image::kMaxManifestBytes);
    auto m = text.ok() ? image::parse_manifest(*text) : Result<image::Manifest>(text.error());
    if (!m.ok()) {
      std::printf("%-20s (unreadable: %s)\n", d.filename().c_str(), m.error().message().c_str());
      continue;
    }
    uint64_t bytes = 0;
    for (const auto& f : m->files) bytes += f.size;
    std::printf("%-20s %-21s %8.1fMB  %s\n", m->name.c_str(), m->created.c_str(),
                static_cast<double>(bytes) / 1e6, m->rootfs_id.c_str());
  }
  return 0;
}

int cmd_inspect(const std::string& state_dir, const std::string& name) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  image::VerifyOptions vo;
  vo.force_full = true;
  vo.stamp_dir = ctx->stamps_dir();
  auto m = image::open_verified(ctx->image_dir(name), vo);
  if (!m.ok()) return fail(m.error());
  json j = json::parse(image::to_json(*m));
  j["verified"] = true;
  j["dir"] = ctx->image_dir(name).string();
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

int cmd_doctor() {
  int bad = 0;
  for (const auto& c : engine::run_doctor()) {
    std::printf("%-4s %-17s %s\n", c.ok ? "ok" : "FAIL", c.name.c_str(), c.detail.c_str());
    if (!c.ok) ++bad;
  }
  if (bad) std::printf("\n%d problem(s) found.\n", bad);
  return bad ? 1 : 0;
}

int cmd_bench(const std::string& state_dir, const engine::BenchOptions& o) {
  auto ctx = context(state_dir);
  if (!ctx.ok()) return fail(ctx.error());
  auto r = engine::bench_startup(*ctx, o);
  if (!r.ok()) return fail(r.error());
  std::printf("%s\n", r->c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prewarm: start slow containerized apps in milliseconds by restoring a warm "
               "checkpoint"};
  app.require_subcommand(1);
  std::string state_dir;
  bool verbose = false;
  app.add_option("--state-dir", state_dir, "state directory (default /var/lib/prewarm, or $PREWARM_STATE_DIR)");
  app.add_flag("-v,--verbose", verbose, "debug output");

  std::string spec, name;
  auto* bake = app.add_subcommand("bake", "run the app once, warm it up and checkpoint it");
  bake->add_option("spec", spec, "AppSpec YAML file")->required();
  bake->add_option("--name", name, "image name (default: the spec's name)");

  std::string image;
  int count = 1;
  bool cold = false;
  auto* run = app.add_subcommand("run", "start instances of a baked image");
  run->add_option("name", image, "image name")->required();
  run->add_option("--count,-n", count, "number of instances, started concurrently");
  run->add_flag("--cold", cold, "cold-start instead of restoring");

  bool as_json = false;
  auto* ps = app.add_subcommand("ps", "list instances");
  ps->add_flag("--json", as_json, "JSON output");

  std::vector<std::string> ids;
  bool all = false;
  auto* rm = app.add_subcommand("rm", "stop and remove instances");
  rm->add_option("ids", ids, "instance ids");
  rm->add_flag("--all,-a", all, "remove every instance");

  auto* images = app.add_subcommand("images", "list checkpoint images");
  auto* inspect = app.add_subcommand("inspect", "verify an image and show its manifest");
  inspect->add_option("name", image, "image name")->required();
  auto* doctor = app.add_subcommand("doctor", "check this host for what prewarm needs");

  engine::BenchOptions bo;
  bool bench_json = false;
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto* startup = bench->add_subcommand("startup", "cold start vs restore vs plain runc restore");
  startup->add_option("spec", bo.spec_file, "AppSpec YAML file")->required();
  startup->add_option("--runs", bo.runs, "samples of each kind (default 5)");
  startup->add_option("--concurrency", bo.concurrency, "also start K at once (default 1: off)");
  startup->add_flag("--skip-cold", bo.skip_cold, "do not measure cold starts");
  startup->add_flag("--json", bench_json, "print JSON (the only format)");

  CLI11_PARSE(app, argc, argv);
  if (verbose) log::set_level(log::Level::kDebug);

  if (*bake) return cmd_bake(state_dir, spec, name);
  if (*run) return cmd_run(state_dir, image, count, cold);
  if (*ps) return cmd_ps(state_dir, as_json);
  if (*rm) return cmd_rm(state_dir, ids, all);
  if (*images) return cmd_images(state_dir);
  if (*inspect) return cmd_inspect(state_dir, image);
  if (*doctor) return cmd_doctor();
  if (*startup) return cmd_bench(state_dir, bo);
  return 1;
}
