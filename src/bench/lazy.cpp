// The lazy-restore benchmark: per app, a plain eager `runc restore` (the baseline), prewarm's
// eager restore and prewarm's lazy restore, alternating each round; for lazy ones also the time
// until the page server had copied every page (all memory resident). Every instance is removed
// before the next sample starts, and a lazy one only once its transfer is complete, so no
// sample shares the CPUs with another's background copy.
#include <time.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "bake/bake.h"
#include "base/clock.h"
#include "base/fs.h"
#include "bench/bench.h"
#include "bench/util.h"
#include "criu/lazy_pages.h"
#include "image/image.h"
#include "image/pagemap.h"
#include "images/images.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "store/store.h"

namespace prewarm::bench {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

long long monotonic_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

json summary(const std::vector<double>& samples) {
  return {{"median_ms", median(samples)}, {"samples_ms", samples}};
}

struct Sample {
  double ready_ms = 0;
  double resident_ms = 0;  // lazy: until every page was copied
  lifecycle::StartTimings timings;
};

Result<Sample> prewarm_sample(const Context& ctx, const std::string& name, const std::string& paging) {
  const long long t0 = monotonic_ns();
  Stopwatch sw;
  images::LoadOptions lo;
  lo.paging = paging;
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, name, lo));
  lifecycle::StartOptions o;
  o.paging = paging;
  PW_ASSIGN(lifecycle::Started s, lifecycle::Instances(ctx).start(img, o));
  Sample out;
  out.ready_ms = sw.millis();
  out.timings = s.timings;
  struct Remove {
    const Context& ctx;
    std::string id;
    ~Remove() { (void)lifecycle::remove_instance(ctx, id); }
  } remove{ctx, s.record.id};
  if (s.record.started_by != "restore")
    return Error(ErrorKind::kRuntime,
                 "benchmark restore fell back to a cold start: " + s.record.fallback_reason);
  if (paging == "lazy") {
    const stdfs::path work = ctx.instance_dir(s.record.id) / "criu";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    for (;;) {
      auto oc = criu::lazy_pages_outcome(work);
      if (oc.state == criu::LazyPagesOutcome::State::kComplete) {
        out.resident_ms = static_cast<double>(oc.complete_monotonic_ns - t0) / 1e6;
        break;
      }
      if (oc.state == criu::LazyPagesOutcome::State::kFailed)
        return Error(ErrorKind::kRuntime, "lazy restore failed: " + oc.reason);
      if (std::chrono::steady_clock::now() > deadline)
        return Error(ErrorKind::kRuntime, "lazy restore: the transfer did not finish in 2 minutes");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  return out;
}

Status unpack(const Context& ctx, const std::string& name) {
  auto r = images::ensure_unpacked(ctx, name);
  if (!r.ok()) return std::move(r).error();
  return {};
}

json medians(const std::vector<lifecycle::StartTimings>& ts) {
  std::map<std::string, std::vector<double>> cols;
  for (const auto& t : ts)
    for (const auto& [k, v] : t.as_map()) cols[k].push_back(v);
  json out = json::object();
  for (auto& [k, v] : cols) out[k] = median(v);
  return out;
}

}  // namespace

Result<std::string> bench_lazy(const Context& ctx, const LazyBenchOptions& opts) {
  if (opts.runs < 1) return Error(ErrorKind::kInvalidInput, "--runs must be at least 1");
  if (opts.spec_files.empty()) return Error(ErrorKind::kInvalidInput, "no spec given");
  json apps = json::array();
  std::vector<double> lazy_medians;
  for (const auto& spec_file : opts.spec_files) {
    PW_ASSIGN(spec::AppSpec spec, spec::load_spec(spec_file));
    bake::BakeOptions bo;
    bo.name = spec.name + "-lazybench";
    ctx.say("[bench lazy] baking " + bo.name);
    PW_ASSIGN(bake::BakeResult baked, bake::bake(ctx, spec_file, bo));
    ::sync();  // or the image's writeback slows the first measured starts
    PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, baked.name));
    PW_ASSIGN(auto pages, image::checkpoint_pages(img.dir / image::kCheckpointDir));

    std::vector<double> base, eager, lazy, resident, from_store, from_store_resident, unpack_then;
    std::vector<lifecycle::StartTimings> eager_t, lazy_t, from_store_t;
    // As on a node that pulled the image and never unpacked it: the same stored image under a
    // second name (as a pull indexes it), with no unpacked copy; its lazy copy is removed before
    // each sample, so every one is that node's first restore.
    const std::string pulled = baked.name + "-pulled";
    {
      PW_ASSIGN(store::Store st, images::open_store(ctx));
      PW_ASSIGN(auto manifest, st.read_manifest(baked.name));
      auto added = st.add_manifest(pulled, manifest.first);
      if (!added.ok()) return std::move(added).error();
    }
    auto drop_copies = [&]() -> Status {
      PW_TRY(fs::remove_all(ctx.image_dir(pulled)));
      return fs::remove_all(images::lazy_copies_dir(ctx) / images::digest_hex(img.store_digest));
    };
    std::vector<double> pulled_ready;
    // Unpacking writes (and dropping the copy frees) the whole image, which changes what
    // touching fresh memory costs on this VM type for a while: measured after the others.
    constexpr int kKinds = 5;
    for (int i = 0; i < opts.runs; ++i) {
      ctx.say("[bench lazy] " + baked.name + ": round " + std::to_string(i + 1) + "/" +
              std::to_string(opts.runs));
      for (int j = 0; j < kKinds; ++j) {
        switch ((i + j) % kKinds) {
          case 3: {  // straight from the store
            PW_TRY(drop_copies());
            ::sync();
            PW_ASSIGN(Sample s, prewarm_sample(ctx, pulled, "lazy"));
            from_store.push_back(s.ready_ms);
            from_store_resident.push_back(s.resident_ms);
            from_store_t.push_back(s.timings);
            break;
          }
          case 4: {  // the same after `prewarm pull`, which makes the lazy copy
            PW_TRY(drop_copies());
            PW_ASSIGN(bool made, images::prepare_lazy_copy(ctx, pulled));
            (void)made;
            ::sync();
            PW_ASSIGN(Sample s, prewarm_sample(ctx, pulled, "lazy"));
            pulled_ready.push_back(s.ready_ms);
            break;
          }

          case 0: {
            PW_ASSIGN(BaselineSample b, baseline_sample(ctx, img));
            base.push_back(b.total_ms);
            break;
          }
          case 1: {
            PW_ASSIGN(Sample s, prewarm_sample(ctx, baked.name, "eager"));
            eager.push_back(s.ready_ms);
            eager_t.push_back(s.timings);
            break;
          }
          default: {
            PW_ASSIGN(Sample s, prewarm_sample(ctx, baked.name, "lazy"));
            lazy.push_back(s.ready_ms);
            resident.push_back(s.resident_ms);
            lazy_t.push_back(s.timings);
            break;
          }
        }
      }
    }
    for (int i = 0; i < opts.runs; ++i) {  // what such a node did before: unpack, then restore
      PW_TRY(drop_copies());
      ::sync();
      Stopwatch sw;
      PW_TRY(unpack(ctx, pulled));
      const double unpack_ms = sw.millis();
      PW_ASSIGN(Sample s, prewarm_sample(ctx, pulled, "lazy"));
      unpack_then.push_back(unpack_ms + s.ready_ms);
      PW_TRY(drop_copies());
      ::sync();
    }
    lazy_medians.push_back(median(lazy));
    json app = {
        {"spec", stdfs::absolute(spec_file).string()},
        {"image", baked.name},
        {"image_bytes", baked.image_bytes},
        {"memory_pages", pages.first},
        {"lazy_able_pages", pages.second},
        {"working_set_pages", baked.working_set_pages},
        {"baseline_runc_restore_eager", summary(base)},
        {"prewarm_eager", summary(eager)},
        {"prewarm_lazy", summary(lazy)},
        {"prewarm_lazy_all_resident", summary(resident)},
        {"prewarm_lazy_from_store_never_unpacked", summary(from_store)},
        {"prewarm_lazy_from_store_all_resident", summary(from_store_resident)},
        {"unpack_then_prewarm_lazy", summary(unpack_then)},
        {"prewarm_lazy_from_store_after_pull", summary(pulled_ready)},
        {"prewarm_lazy_from_store_breakdown_median_ms", medians(from_store_t)},
        {"prewarm_eager_breakdown_median_ms", medians(eager_t)},
        {"prewarm_lazy_breakdown_median_ms", medians(lazy_t)},
        {"ratios",
         {{"lazy_vs_baseline", median(lazy) / median(base)},
          {"lazy_vs_eager", median(lazy) / median(eager)},
          {"eager_vs_baseline", median(eager) / median(base)},
          {"lazy_all_resident_vs_baseline", median(resident) / median(base)},
          {"from_store_vs_lazy_from_unpacked", median(from_store) / median(lazy)},
          {"from_store_vs_unpack_then_restore", median(from_store) / median(unpack_then)},
          {"from_store_after_pull_vs_lazy_from_unpacked", median(pulled_ready) / median(lazy)}}},
    };
    apps.push_back(app);
    (void)images::remove_image(ctx, pulled);
    (void)images::remove_image(ctx, baked.name);
  }
  json report = {{"benchmark", "lazy"},
                 {"runs", opts.runs},
                 {"cpus", std::thread::hardware_concurrency()},
                 {"apps", apps}};
  if (lazy_medians.size() > 1)
    report["lazy_ready_growth_first_to_last"] = lazy_medians.back() / lazy_medians.front();
  return report.dump(2);
}

}  // namespace prewarm::bench
