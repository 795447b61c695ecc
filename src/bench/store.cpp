// `prewarm bench store`: what the store and the registry cost and save, on a real image.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <unordered_set>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "bake/bake.h"
#include "bench/bench.h"
#include "bench/util.h"
#include "images/images.h"
#include "lifecycle/instance.h"
#include "image/image.h"
#include "spec/app_spec.h"

namespace prewarm::bench {

using namespace prewarm::images;
using bake::BakeOptions;
using bake::BakeResult;
using lifecycle::Started;
using lifecycle::StartMode;
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;


// Bytes of `tar | zstd -3` of a directory: what a plain compressed archive of the raw CRIU
// files (as `podman container checkpoint --export --compress zstd` makes) would take.
Result<uint64_t> zstd_tar_bytes(const stdfs::path& dir, const stdfs::path& out) {
  SpawnOptions o;
  o.argv = {"/bin/sh", "-c", "tar -C \"$1\" -cf - . | zstd -q -3 -T0 -o \"$2\" -f", "sh",
            dir.string(), out.string()};
  PW_ASSIGN(RunResult r, run_capture(o));
  if (!r.success()) return Error("tar | zstd " + r.describe() + ": " + r.err);
  std::error_code ec;
  uint64_t size = stdfs::file_size(out, ec);
  stdfs::remove(out, ec);
  return size;
}


// The 4 KiB memory pages in a checkpoint's pages-*.img files, by content hash.
Result<std::vector<std::string>> page_hashes(const stdfs::path& image_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(image_dir / image::kCheckpointDir, ec)) {
    std::string f = e.path().filename().string();
    if (f.rfind("pages-", 0) != 0) continue;
    PW_ASSIGN(std::string data, fs::read_file(e.path(), uint64_t{16} << 30));
    for (size_t off = 0; off + 4096 <= data.size(); off += 4096)
      out.push_back(sha256_hex(std::string_view(data).substr(off, 4096)));
  }
  if (ec) return Error::sys("read", ec.value(), image_dir.string());
  return out;
}

// Share of b's memory pages whose content also occurs in a: the most any deduplication
// below file level could save on b's memory.
Result<double> shared_pages(const stdfs::path& a, const stdfs::path& b) {
  PW_ASSIGN(std::vector<std::string> pa, page_hashes(a));
  PW_ASSIGN(std::vector<std::string> pb, page_hashes(b));
  std::unordered_set<std::string> in_a(pa.begin(), pa.end());
  size_t shared = std::count_if(pb.begin(), pb.end(), [&](const auto& h) { return in_a.count(h); });
  return pb.empty() ? 0.0 : static_cast<double>(shared) / static_cast<double>(pb.size());
}

// Compressed bytes of the blobs (packs) of image `name` that image `base` does not have: what
// storing or pushing `name` next to `base` costs, whatever else the store holds. Against what
// `name` takes alone (its chunks, compressed), that is the deduplication.
struct Overlap {
  uint64_t alone = 0, added = 0;
  double dedup() const { return alone ? 1.0 - static_cast<double>(added) / alone : 0.0; }
};
Result<Overlap> overlap(const Context& ctx, const std::string& base, const std::string& name,
                        uint64_t alone) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  // The image's layers (its packs); the config, first, is each image's own.
  auto blobs = [&](const std::string& n) -> Result<std::map<std::string, uint64_t>> {
    PW_ASSIGN(auto m, st.read_manifest(n));
    PW_ASSIGN(auto all, manifest_blobs(m.first));
    std::map<std::string, uint64_t> out;
    for (size_t i = 1; i < all.size(); ++i) out[all[i].digest] = all[i].size;
    return out;
  };
  PW_ASSIGN(auto in_base, blobs(base));
  PW_ASSIGN(auto in_name, blobs(name));
  Overlap o;
  o.alone = alone;
  for (const auto& [digest, size] : in_name)
    if (!in_base.count(digest)) o.added += size;
  return o;
}

}  // namespace

Result<std::string> bench_store(const Context& ctx, const StoreBenchOptions& opts) {
  if (opts.runs < 1) return Error("--runs must be at least 1");
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(opts.spec_file));
  json report = {{"benchmark", "store"}, {"spec", stdfs::absolute(opts.spec_file).string()},
                 {"runs", opts.runs}};

  // Two bakes of the same app: the second shows what deduplication saves.
  BakeOptions b1, b2;
  b1.name = spec.name + "-store1";
  b2.name = spec.name + "-store2";
  ctx.say("[bench] baking " + b1.name + " and " + b2.name);
  PW_ASSIGN(BakeResult first, bake::bake(ctx, opts.spec_file, b1));
  PW_ASSIGN(BakeResult second, bake::bake(ctx, opts.spec_file, b2));
  ::sync();
  PW_ASSIGN(uint64_t zstd_bytes, zstd_tar_bytes(first.dir, ctx.state_dir / "bench-zstd.tar.zst"));
  // Dedup is measured against the first bake alone, not against whatever the store held.
  PW_ASSIGN(Overlap second_vs_first,
            overlap(ctx, b1.name, b2.name, second.stored_bytes_total));
  report["bytes"] = {
      {"raw_criu_files", first.image_bytes},
      {"zstd_tar_of_raw", zstd_bytes},
      {"store_first_image", first.stored_bytes_total},
      {"store_second_bake_new", second_vs_first.added},
      {"second_bake_dedup_ratio", second_vs_first.dedup()},
  };
  PW_ASSIGN(report["bytes"]["second_bake_pages_shared"], shared_pages(first.dir, second.dir));
  std::vector<std::string> names = {b1.name, b2.name};
  if (!opts.variant_env.empty()) {
    auto eq = opts.variant_env.find('=');
    if (eq == std::string::npos || eq == 0) return Error("--variant-env wants KEY=VALUE");
    std::string key = opts.variant_env.substr(0, eq), value = opts.variant_env.substr(eq + 1);
    spec::AppSpec variant = spec;
    auto it = std::find_if(variant.env.begin(), variant.env.end(),
                           [&](const auto& kv) { return kv.first == key; });
    if (it != variant.env.end()) it->second = value;
    else variant.env.emplace_back(key, value);
    const stdfs::path variant_file = ctx.state_dir / "bench-variant.yaml";
    PW_TRY(fs::write_file_atomic(variant_file, spec::to_yaml(variant), 0600));
    BakeOptions b3;
    b3.name = spec.name + "-store3";
    ctx.say("[bench] baking " + b3.name + " with " + opts.variant_env);
    auto third = bake::bake(ctx, variant_file, b3);
    (void)fs::remove_all(variant_file);
    if (!third.ok()) return std::move(third).error().with_context("variant bake");
    names.push_back(b3.name);
    report["bytes"]["variant_env"] = opts.variant_env;
    PW_ASSIGN(Overlap variant_vs_first,
              overlap(ctx, b1.name, b3.name, third->stored_bytes_total));
    report["bytes"]["store_variant_bake_new"] = variant_vs_first.added;
    report["bytes"]["variant_bake_dedup_ratio"] = variant_vs_first.dedup();
    PW_ASSIGN(report["bytes"]["variant_bake_pages_shared"], shared_pages(first.dir, third->dir));
  }

  // Restore → ready from the raw CRIU files (the bake's own output) vs from the store. Restores
  // read the node-local decompressed copy the store keeps (made at bake, pull and import); the
  // "after eviction" case rebuilds it from the compressed, chunked blobs first, which is what a
  // restore that read the store directly every time would pay. Both come from the same runs:
  // drop the copy, rebuild it (timed), restore from it at once (timed).
  std::vector<double> raw, from_store, unpack, after_eviction;
  for (int i = 0; i < opts.runs; ++i) {
    ctx.say("[bench] raw restore sample " + std::to_string(i + 1) + "/" + std::to_string(opts.runs));
    PW_ASSIGN(Started r, timed_start(ctx, b1.name, StartMode::kRestore));
    raw.push_back(r.timings.total_ms);
  }
  for (int i = 0; i < opts.runs; ++i) {
    ctx.say("[bench] store restore sample " + std::to_string(i + 1) + "/" +
            std::to_string(opts.runs));
    PW_TRY(fs::remove_all(ctx.image_dir(b1.name)));
    ::sync();
    Stopwatch sw;
    PW_TRY(ensure_unpacked(ctx, b1.name));
    unpack.push_back(sw.millis());
    PW_ASSIGN(Started s, timed_start(ctx, b1.name, StartMode::kRestore));
    from_store.push_back(s.timings.total_ms);
    after_eviction.push_back(unpack.back() + s.timings.total_ms);
  }
  report["restore_ms"] = {
      {"from_raw_median", median(raw)},
      {"from_raw_samples", raw},
      {"from_store_median", median(from_store)},
      {"from_store_samples", from_store},
      {"from_store_vs_raw", median(from_store) / median(raw)},
      {"unpack_median", median(unpack)},
      {"unpack_samples", unpack},
      {"from_store_after_eviction_median", median(after_eviction)},
      {"from_store_after_eviction_vs_raw", median(after_eviction) / median(raw)},
  };

  if (!opts.registry.empty()) {
    registry::Options ro = registry_options(ctx);
    ro.progress = nullptr;
    registry::Stats push1, push2, pull;
    ro.stats = &push1;
    Stopwatch sw;
    PW_TRY(push_image(ctx, b1.name, opts.registry + ":first", ro));
    double push_s = sw.seconds();
    ro.stats = &push2;
    sw.restart();
    PW_TRY(push_image(ctx, b2.name, opts.registry + ":second", ro));
    double push2_s = sw.seconds();
    // A second node: its own state dir, so every blob crosses the wire.
    Context node_b = ctx;
    node_b.state_dir = ctx.state_dir / ("bench-node-b-" + fs::random_hex(3));
    PW_TRY(fs::make_dirs(node_b.images_dir(), 0700));
    PW_TRY(fs::make_dirs(node_b.instances_dir(), 0700));
    PW_TRY(fs::make_dirs(node_b.stamps_dir(), 0700));
    ro.stats = &pull;
    sw.restart();
    auto pulled = pull_image(node_b, opts.registry + ":first", b1.name, ro);
    double pull_s = sw.seconds();
    (void)fs::remove_all(node_b.state_dir);
    if (!pulled.ok()) return std::move(pulled).error();
    auto mbps = [](uint64_t bytes, double s) { return s > 0 ? bytes / 1e6 / s : 0; };
    report["registry"] = {
        {"push_seconds", push_s},
        {"push_wire_bytes", push1.bytes_uploaded.load()},
        {"push_MBps", mbps(push1.bytes_uploaded, push_s)},
        {"second_bake_push_seconds", push2_s},
        {"second_bake_push_wire_bytes", push2.bytes_uploaded.load()},
        {"second_bake_blobs_skipped", push2.blobs_skipped.load()},
        {"pull_seconds_including_unpack", pull_s},
        {"pull_wire_bytes", pull.bytes_downloaded.load()},
        {"pull_MBps", mbps(pull.bytes_downloaded, pull_s)},
    };
  }
  for (const auto& n : names) PW_TRY(remove_image(ctx, n));
  return report.dump(2);
}

}  // namespace prewarm::bench
