// prewarm bench startup|store|lazy|pool|memory|serve SPEC.yaml ...
#include <cstdio>

#include "bench/bench.h"
#include "cli.h"

namespace prewarm::cli {
namespace {

// A benchmark subcommand's action: the context (recovery first), the benchmark, its JSON.
template <typename Options>
void on_run(CLI::App* cmd, Globals& g, std::shared_ptr<Options> opts,
            Result<std::string> (*bench)(const engine::Context&, const Options&)) {
  cmd->callback([&g, opts, bench] {
    auto ctx = open_context(g, false, Recover::kYes);
    if (!ctx.ok()) return void(g.rc = fail(ctx.error()));
    auto r = bench(*ctx, *opts);
    if (!r.ok()) return void(g.rc = fail(r.error()));
    std::printf("%s\n", r->c_str());
  });
}

}  // namespace

void add_bench(CLI::App& app, Globals& g) {
  auto bo = std::make_shared<bench::BenchOptions>();
  auto sbo = std::make_shared<bench::StoreBenchOptions>();
  auto as_json = std::make_shared<bool>(false);
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto* startup = bench->add_subcommand(
      "startup", "cold start vs restore (each backend) vs plain runc restore");
  startup->add_option("spec", bo->spec_file, "AppSpec YAML file")->required();
  startup->add_option("--runs", bo->runs, "samples of each kind (default 5)");
  startup->add_option("--concurrency", bo->concurrency, "also start K at once (default 1: off)");
  startup->add_flag("--skip-cold", bo->skip_cold, "do not measure cold starts");
  startup->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(startup, g, bo, bench::bench_startup);
  auto lbo = std::make_shared<bench::LazyBenchOptions>();
  auto* lazy = bench->add_subcommand(
      "lazy", "lazy vs eager restore vs plain runc restore, per app (e.g. a heap-size sweep)");
  lazy->add_option("specs", lbo->spec_files, "AppSpec YAML files, smallest first")->required();
  lazy->add_option("--runs", lbo->runs, "samples of each kind (default 5)");
  lazy->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(lazy, g, lbo, bench::bench_lazy);
  auto pbo = std::make_shared<bench::PoolBenchOptions>();
  auto* pool = bench->add_subcommand(
      "pool", "claim → ready from a warm pool kept full in the background, vs restore → ready");
  pool->add_option("specs", pbo->spec_files, "AppSpec YAML files")->required();
  pool->add_option("--claims", pbo->claims, "claims per app (default 200)");
  pool->add_option("--pool-size", pbo->pool_size, "instances kept parked (default 4)");
  pool->add_option("--restores", pbo->restores, "restore → ready samples (default 10)");
  pool->add_option("--interval-ms", pbo->interval_ms, "pause between claims (default 20)");
  pool->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(pool, g, pbo, bench::bench_pool);
  auto mbo = std::make_shared<bench::MemoryBenchOptions>();
  auto* memory = bench->add_subcommand(
      "memory", "N instances' memory without and with KSM merging, against one instance");
  memory->add_option("spec", mbo->spec_file, "AppSpec YAML file")->required();
  memory->add_option("--instances", mbo->instances, "instances (default 16)");
  memory->add_option("--pages-to-scan", mbo->pages_to_scan,
                     "ksmd's pages per 20 ms while measuring (default 2000)");
  memory->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(memory, g, mbo, bench::bench_memory);
  auto vbo = std::make_shared<bench::ServeBenchOptions>();
  auto* serve = bench->add_subcommand(
      "serve", "prewarm serve: first request from zero and with a warm pool, vs restore and cold start");
  serve->add_option("spec", vbo->spec_file, "AppSpec YAML file")->required();
  serve->add_option("--runs", vbo->runs, "samples of each kind (default 10)");
  serve->add_flag("--skip-cold", vbo->skip_cold, "do not measure cold starts");
  serve->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(serve, g, vbo, bench::bench_serve);
  auto* store = bench->add_subcommand("store", "store and registry: sizes, dedup, restore from "
                                               "the store, push/pull");
  store->add_option("spec", sbo->spec_file, "AppSpec YAML file")->required();
  store->add_option("--runs", sbo->runs, "restore samples (default 5)");
  store->add_option("--registry", sbo->registry, "REGISTRY/REPO for push and pull");
  store->add_option("--variant-env", sbo->variant_env,
                    "KEY=VALUE: also bake the app configured so, to measure what a related app "
                    "on the same base shares");
  store->add_flag("--json", *as_json, "print JSON (the only format)");
  on_run(store, g, sbo, bench::bench_store);
}

}  // namespace prewarm::cli
