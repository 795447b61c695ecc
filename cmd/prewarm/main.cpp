// prewarm CLI: argument parsing and one engine call per verb.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
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
#include "engine/images.h"
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

// Applies op to each name, printing the names it succeeded for; 1 when any failed.
int for_each_name(const std::vector<std::string>& names,
                  const std::function<Status(const std::string&)>& op) {
  int rc = 0;
  for (const auto& n : names) {
    Status st = op(n);
    if (!st.ok()) {
      rc = fail(st.error());
    } else {
      std::printf("%s\n", n.c_str());
    }
  }
  return rc;
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
  std::printf("  stored: %.1f MB compressed, %.1f MB new (%.0f%% already in the store)\n",
              static_cast<double>(r->stored_bytes_total) / 1e6,
              static_cast<double>(r->stored_bytes_new) / 1e6, r->dedup_ratio * 100);
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
      if (!r.restore_note.empty()) std::printf("  note: %s\n", r.restore_note.c_str());
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
  return for_each_name(ids, [&](const std::string& id) -> Status {
    if (!all && !std::filesystem::exists(ctx->instance_dir(id)))
      return Error("no instance " + id + " (see `prewarm ps`)");
    return engine::remove_instance(*ctx, id);
  });
}

int cmd_images(const std::string& state_dir) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  auto l = engine::list_images(*ctx);
  if (!l.ok()) return fail(l.error());
  std::printf("%-24s %-24s %10s %10s  %-8s %s\n", "NAME", "CREATED", "SIZE", "STORED", "UNPACKED",
              "DIGEST");
  for (const auto& i : *l) {
    if (!i.problem.empty()) {
      std::printf("%-24s (unreadable: %s)\n", i.name.c_str(), i.problem.c_str());
      continue;
    }
    std::printf("%-24s %-24s %8.1fMB %8.1fMB  %-8s %s\n", i.name.c_str(), i.created.c_str(),
                static_cast<double>(i.raw_bytes) / 1e6, static_cast<double>(i.stored_bytes) / 1e6,
                i.unpacked ? "yes" : "no", i.manifest_digest.substr(0, 19).c_str());
  }
  return 0;
}

int cmd_rmi(const std::string& state_dir, const std::vector<std::string>& names) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  return for_each_name(names, [&](const std::string& n) { return engine::remove_image(*ctx, n); });
}

int cmd_gc(const std::string& state_dir, bool drop_partials) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  auto r = engine::collect_garbage(*ctx, drop_partials);
  if (!r.ok()) return fail(r.error());
  std::printf("removed %llu blob(s), %.1f MB freed; %llu temporary file(s) removed; %llu recent "
              "unreferenced blob(s) kept\n",
              static_cast<unsigned long long>(r->removed_blobs),
              static_cast<double>(r->bytes_freed) / 1e6,
              static_cast<unsigned long long>(r->removed_temp_files),
              static_cast<unsigned long long>(r->kept_young_blobs));
  if (r->kept_temp_files > 0)
    std::printf("kept %llu partial download(s), %.1f MB, so interrupted pulls can resume; they "
                "go after an hour, or now with `prewarm gc --partials`\n",
                static_cast<unsigned long long>(r->kept_temp_files),
                static_cast<double>(r->kept_temp_bytes) / 1e6);
  return 0;
}

int cmd_verify(const std::string& state_dir, const std::string& name) {
  auto ctx = context(state_dir, true);
  if (!ctx.ok()) return fail(ctx.error());
  auto r = engine::verify_images(*ctx, name);
  if (!r.ok()) return fail(r.error());
  std::printf("%s\n", r->c_str());
  return 0;
}

struct RegistryFlags {
  bool plain_http = false;
  std::string ca_file;
};

registry::Options registry_opts(const engine::Context& ctx, const RegistryFlags& f,
                                registry::Stats* stats) {
  registry::Options o = engine::registry_options(ctx);
  o.stats = stats;
  if (f.plain_http) o.insecure_http = true;
  o.ca_file = f.ca_file;
  return o;
}

int cmd_push(const std::string& state_dir, const std::string& name, const std::string& ref,
             const std::string& format, const RegistryFlags& f) {
  auto ctx = context(state_dir);
  if (!ctx.ok()) return fail(ctx.error());
  registry::Stats stats;
  auto o = registry_opts(*ctx, f, &stats);
  Status st = format == "cri-o" ? engine::push_checkpoint_image(*ctx, name, ref, o)
                                : engine::push_image(*ctx, name, ref, o);
  if (!st.ok()) return fail(st.error());
  std::printf("pushed %s to %s: %llu blob(s) uploaded (%.1f MB), %llu already there\n",
              name.c_str(), ref.c_str(), static_cast<unsigned long long>(stats.blobs_uploaded),
              static_cast<double>(stats.bytes_uploaded) / 1e6,
              static_cast<unsigned long long>(stats.blobs_skipped));
  return 0;
}

int cmd_pull(const std::string& state_dir, const std::string& ref, const std::string& name,
             const std::string& rootfs, const RegistryFlags& f) {
  auto ctx = context(state_dir);
  if (!ctx.ok()) return fail(ctx.error());
  registry::Stats stats;
  auto o = registry_opts(*ctx, f, &stats);
  auto r = engine::pull_image(*ctx, ref, name, o, rootfs);
  if (!r.ok()) return fail(r.error());
  std::printf("pulled %s as %s: %llu blob(s) downloaded (%.1f MB)\n", ref.c_str(), r->c_str(),
              static_cast<unsigned long long>(stats.blobs_downloaded),
              static_cast<double>(stats.bytes_downloaded) / 1e6);
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

  std::vector<std::string> rmi_names;
  auto* rmi = app.add_subcommand("rmi", "remove images (their blobs go at the next gc)");
  rmi->add_option("names", rmi_names, "image names")->required();
  auto* gc = app.add_subcommand("gc", "remove store blobs no image references");
  bool drop_partials = false;
  gc->add_flag("--partials", drop_partials,
               "also remove partial downloads kept for resuming interrupted pulls");
  std::string verify_name;
  auto* verify = app.add_subcommand("verify", "re-hash the store's blobs and unpacked images");
  verify->add_option("name", verify_name, "one image (default: all)");

  RegistryFlags rflags;
  std::string ref, pull_name, push_format = "prewarm", pull_rootfs;
  auto* push = app.add_subcommand("push", "push an image to an OCI registry");
  push->add_option("name", image, "image name")->required();
  push->add_option("ref", ref, "REGISTRY/REPO:TAG")->required();
  push->add_option("--format", push_format,
                   "prewarm: chunked, deduplicated (default); cri-o: a checkpoint image CRI-O and "
                   "Podman restore from (one archive layer)")
      ->check(CLI::IsMember({"prewarm", "cri-o"}));
  auto* pull = app.add_subcommand("pull", "pull an image from an OCI registry");
  pull->add_option("ref", ref, "REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...")->required();
  pull->add_option("--name", pull_name, "local image name (default: the repository's last part)");
  pull->add_option("--rootfs", pull_rootfs,
                   "for a CRI-O/Podman/containerd checkpoint image: the root filesystem of the "
                   "container image it was made from");
  for (auto* c : {push, pull}) {
    c->add_flag("--plain-http", rflags.plain_http,
                "plain HTTP (default only for localhost and 127.0.0.1)");
    c->add_option("--ca-file", rflags.ca_file, "CA certificate(s) to verify the registry with");
  }

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

  std::string archive, compression = "none", import_name, import_rootfs;
  auto* exp = app.add_subcommand("export", "write an image as a Kubernetes/CRI-O checkpoint archive");
  exp->add_option("name", image, "image name")->required();
  exp->add_option("-o,--output", archive, "archive file (.tar)")->required();
  exp->add_option("--compress", compression, "none (kubelet, CRI-O), gzip or zstd (podman)");
  auto* imp = app.add_subcommand("import", "import a checkpoint archive (prewarm, kubelet, CRI-O, "
                                           "Podman)");
  imp->add_option("archive", archive, "archive file")->required();
  imp->add_option("--name", import_name, "image name (default: the file's name)");
  imp->add_option("--rootfs", import_rootfs,
                  "root filesystem of the container image a foreign archive was made from");

  engine::StoreBenchOptions sbo;
  auto* store_bench = bench->add_subcommand("store", "store and registry: sizes, dedup, "
                                                      "restore from the store, push/pull");
  store_bench->add_option("spec", sbo.spec_file, "AppSpec YAML file")->required();
  store_bench->add_option("--runs", sbo.runs, "restore samples (default 5)");
  store_bench->add_option("--registry", sbo.registry, "REGISTRY/REPO for push and pull");
  store_bench->add_option("--variant-env", sbo.variant_env,
                          "KEY=VALUE: also bake the app configured so, to measure what a "
                          "related app on the same base shares");
  store_bench->add_flag("--json", bench_json, "print JSON (the only format)");

  CLI11_PARSE(app, argc, argv);
  if (verbose) log::set_level(log::Level::kDebug);

  if (*bake) return cmd_bake(state_dir, spec, name);
  if (*run) return cmd_run(state_dir, image, count, cold);
  if (*ps) return cmd_ps(state_dir, as_json);
  if (*rm) return cmd_rm(state_dir, ids, all);
  if (*images) return cmd_images(state_dir);
  if (*inspect) return cmd_inspect(state_dir, image);
  if (*doctor) return cmd_doctor();
  if (*rmi) return cmd_rmi(state_dir, rmi_names);
  if (*gc) return cmd_gc(state_dir, drop_partials);
  if (*verify) return cmd_verify(state_dir, verify_name);
  if (*push) return cmd_push(state_dir, image, ref, push_format, rflags);
  if (*pull) return cmd_pull(state_dir, ref, pull_name, pull_rootfs, rflags);
  if (*startup) return cmd_bench(state_dir, bo);
  if (*exp || *imp) {
    auto ctx = context(state_dir, true);
    if (!ctx.ok()) return fail(ctx.error());
    if (*exp) {
      Status st = engine::export_image(*ctx, image, archive, compression);
      if (!st.ok()) return fail(st.error());
      std::printf("exported %s to %s\n", image.c_str(), archive.c_str());
      return 0;
    }
    auto r = engine::import_image(*ctx, archive, import_name, import_rootfs);
    if (!r.ok()) return fail(r.error());
    std::printf("imported %s as %s%s\n", archive.c_str(), r->name.c_str(),
                r->foreign ? " (made by another engine)" : "");
    for (const auto& w : r->warnings) std::printf("  note: %s\n", w.c_str());
    return 0;
  }
  if (*store_bench) {
    auto ctx = context(state_dir);
    if (!ctx.ok()) return fail(ctx.error());
    auto r = engine::bench_store(*ctx, sbo);
    if (!r.ok()) return fail(r.error());
    std::printf("%s\n", r->c_str());
    return 0;
  }
  return 1;
}
