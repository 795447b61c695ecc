// The startup benchmark: cold start, prewarm's restore through each backend (direct CRIU,
// runc), and a plain `runc restore` of the same checkpoint (the baseline). Samples of every kind
// alternate (the order rotates each round), single and concurrent, so drift on a shared machine
// hits them alike; every instance is removed between samples.
#include "bench/bench.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "bake/bake.h"
#include "base/clock.h"
#include "base/fs.h"
#include "criu/criu.h"
#include "bench/util.h"
#include "engine/app_log.h"
#include "image/image.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "lifecycle/lock.h"
#include "probe/probe.h"

namespace prewarm::bench {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using lifecycle::Instances;
using lifecycle::InstanceRecord;
using lifecycle::StartMode;
using lifecycle::Started;
using lifecycle::StartTimings;

json summary(const std::vector<double>& samples) {
  return {{"median_ms", median(samples)}, {"samples_ms", samples}};
}

// prewarm's own work in a start: everything but CRIU's restore proper (the backend's criu_ms
// when it reports one, else its whole time) and the readiness probe.
double own_ms(const StartTimings& t) {
  auto it = t.runtime_phases.find("criu_ms");
  double criu = it != t.runtime_phases.end() ? it->second : t.runtime_ms;
  return t.total_ms - t.probe_ms - criu;
}

json breakdown(const std::vector<StartTimings>& ts) {
  json out = json::object();
  std::map<std::string, std::vector<double>> cols;
  for (const auto& t : ts) {
    for (const auto& [k, v] : t.as_map()) cols[k].push_back(v);
    cols["prewarm_own_ms"].push_back(own_ms(t));
  }
  for (auto& [k, v] : cols) out[k] = median(v);
  return out;
}

// K starts at once; returns {wall time until all ready, each one's time}.
template <class F>
Result<std::pair<double, std::vector<double>>> concurrent_round(int k, F start_one) {
  Stopwatch sw;
  std::vector<std::future<Result<double>>> futs;
  for (int i = 0; i < k; ++i) futs.push_back(std::async(std::launch::async, start_one));
  std::vector<double> each;
  std::optional<Error> first_error;
  for (auto& f : futs) {
    auto r = f.get();
    if (r.ok()) each.push_back(*r);
    else if (!first_error) first_error = std::move(r).error();
  }
  if (first_error) return *first_error;
  return std::make_pair(sw.millis(), each);
}

// One kind of start the benchmark measures.
struct Kind {
  std::string name;      // "baseline" or a runtime name
  Context ctx;           // for a runtime: the context with that restore backend
  std::vector<double> single;
  std::vector<StartTimings> timings;
  std::vector<double> all_ready, each;  // concurrent rounds
};

Result<double> start_and_remove(const Context& ctx, const std::string& image, StartTimings* out) {
  PW_ASSIGN(Started s, timed_start(ctx, image, StartMode::kRestore));
  if (out) *out = s.timings;
  return s.timings.total_ms;
}

}  // namespace

// A plain `runc restore` of the image's checkpoint: everything it needs (network namespace,
// overlay with the rootfs diff, bundle, log file) is prepared outside the timed part, through
// the same seams prewarm uses, and recorded like an instance so `prewarm rm` and recovery can
// clean up after an interrupted benchmark.
class Baseline {
 public:
  Baseline(const Context& ctx, const images::LoadedImage& img)
      : ctx_(ctx), img_(img), seams_(lifecycle::default_seams(ctx)) {}

  Status prepare() {
    rec_.id = img_.name + "-base-" + fs::random_hex(3);
    dir_ = ctx_.instance_dir(rec_.id);
    PW_ASSIGN(auto lock, lifecycle::InstanceLock::create(dir_));
    lock_.emplace(std::move(lock));
    rec_.image = img_.name;
    rec_.hostname = rec_.id;
    rec_.runtime = "runc";
    rec_.sandbox = seams_.sandbox->kind();
    rec_.started_by = "baseline";
    rec_.created = now_rfc3339();
    PW_TRY(lifecycle::save_record(dir_, rec_));
    PW_ASSIGN(sb_, seams_.sandbox->create(rec_.id));
    rec_.ip = sb_.ip;
    rec_.netns = sb_.netns;
    rec_.host_veth = sb_.host_veth;
    PW_TRY(lifecycle::save_record(dir_, rec_));
    auto rootfs = seams_.rootfs(img_);
    PW_ASSIGN(stdfs::path root, rootfs->prepare(dir_, lifecycle::RootfsPurpose::kRestore));
    PW_TRY(lifecycle::write_config(
        dir_, lifecycle::container_config(img_.spec, root, rec_.id, rec_.id, sb_)));
    PW_TRY(lifecycle::fill_dev_shm(img_, dir_));
    PW_TRY(fs::make_dirs(dir_ / "criu", 0700));
    PW_ASSIGN(log_, engine::open_app_log_file(dir_ / "app.log"));
    return {};
  }

  Result<BaselineSample> run() {
    BaselineSample s;
    Stopwatch sw;
    oci::RestoreOptions ro;
    ro.image_dir = img_.dir / image::kCheckpointDir;
    ro.work_dir = dir_ / "criu";
    ro.tcp_established = img_.manifest.tcp_established;
    ro.stdio_fd = log_.get();
    auto r = ctx_.runtime_named("runc")->restore(rec_.id, dir_, ro);
    log_.reset();
    if (!r.ok()) return std::move(r).error().with_context("baseline runc restore");
    s.restore_ms = sw.millis();
    Stopwatch probe_sw;
    if (img_.spec.readiness_probe)
      PW_TRY(probe::wait_ready(*img_.spec.readiness_probe, seams_.probe_target(rec_)));
    s.probe_ms = probe_sw.millis();
    s.total_ms = sw.millis();
    return s;
  }

  ~Baseline() {
    if (rec_.id.empty()) return;
    lock_.reset();
    (void)Instances(ctx_).remove(rec_.id);
  }

 private:
  const Context& ctx_;
  const images::LoadedImage& img_;
  lifecycle::Seams seams_;
  InstanceRecord rec_;
  stdfs::path dir_;
  lifecycle::SandboxInfo sb_;
  std::optional<lifecycle::InstanceLock> lock_;
  UniqueFd log_;
};

Result<BaselineSample> baseline_sample(const Context& ctx, const images::LoadedImage& img) {
  Baseline b(ctx, img);
  PW_TRY(b.prepare());
  return b.run();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Result<Started> timed_start(const Context& ctx, const std::string& name, StartMode mode) {
  Stopwatch sw;
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, name));
  double load_ms = sw.millis();
  PW_ASSIGN(Started s, lifecycle::start_instance(ctx, img, mode));
  s.timings.verify_ms += load_ms;
  s.timings.total_ms += load_ms;
  Status rm = lifecycle::remove_instance(ctx, s.record.id);
  if (!rm.ok()) return std::move(rm).error();
  if (mode == StartMode::kRestore && s.record.started_by != "restore")
    return Error(ErrorKind::kRuntime,
                 "benchmark restore fell back to a cold start: " + s.record.fallback_reason);
  return s;
}

Result<std::string> bench_startup(const Context& ctx, const BenchOptions& opts) {
  if (opts.runs < 1) return Error(ErrorKind::kInvalidInput, "--runs must be at least 1");
  if (opts.concurrency < 1)
    return Error(ErrorKind::kInvalidInput, "--concurrency must be at least 1");
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(opts.spec_file));
  bake::BakeOptions bo;
  bo.name = spec.name + "-bench";
  ctx.say("[bench] baking " + bo.name);
  PW_ASSIGN(bake::BakeResult baked, bake::bake(ctx, opts.spec_file, bo));
  ::sync();  // or the image's writeback slows the first measured starts
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, baked.name));

  // Every backend this build has (the default first), and the baseline.
  std::vector<Kind> kinds;
  kinds.push_back({"baseline", ctx, {}, {}, {}, {}});
  std::vector<std::string> backends = {ctx.runtime->name()};
  for (const auto& [name, rt] : ctx.runtimes)
    if (name != ctx.runtime->name()) backends.push_back(name);
  for (const auto& name : backends) {
    Kind k{name, ctx, {}, {}, {}, {}};
    PW_TRY(k.ctx.use_runtime(name));
    kinds.push_back(std::move(k));
  }

  std::vector<double> cold;
  for (int i = 0; i < opts.runs; ++i) {
    ctx.say("[bench] sample " + std::to_string(i + 1) + "/" + std::to_string(opts.runs));
    // Rotate the order: the start after another one pays for its teardown.
    for (size_t j = 0; j < kinds.size(); ++j) {
      Kind& k = kinds[(i + j) % kinds.size()];
      if (k.name == "baseline") {
        PW_ASSIGN(BaselineSample b, baseline_sample(ctx, img));
        k.single.push_back(b.total_ms);
        StartTimings t;
        t.runtime_ms = b.restore_ms;
        t.probe_ms = b.probe_ms;
        t.total_ms = b.total_ms;
        k.timings.push_back(t);
      } else {
        StartTimings t;
        PW_ASSIGN(double ms, start_and_remove(k.ctx, img.name, &t));
        k.single.push_back(ms);
        k.timings.push_back(t);
      }
    }
    if (!opts.skip_cold) {
      PW_ASSIGN(Started c, timed_start(ctx, img.name, StartMode::kCold));
      cold.push_back(c.timings.total_ms);
    }
  }

  if (opts.concurrency > 1) {
    const int n = opts.concurrency;
    for (int i = 0; i < opts.runs; ++i) {
      ctx.say("[bench] concurrent round " + std::to_string(i + 1) + "/" +
              std::to_string(opts.runs) + " (" + std::to_string(n) + " at once)");
      for (size_t j = 0; j < kinds.size(); ++j) {
        Kind& k = kinds[(i + j) % kinds.size()];
        if (k.name == "baseline") {
          std::vector<std::unique_ptr<Baseline>> prepared;
          for (int m = 0; m < n; ++m) {
            prepared.push_back(std::make_unique<Baseline>(ctx, img));
            PW_TRY(prepared.back()->prepare());
          }
          std::atomic<int> next{0};
          PW_ASSIGN(auto b, concurrent_round(n, [&]() -> Result<double> {
                      PW_ASSIGN(BaselineSample s, prepared[next++]->run());
                      return s.total_ms;
                    }));
          k.all_ready.push_back(b.first);
          k.each.insert(k.each.end(), b.second.begin(), b.second.end());
          continue;
        }
        // As `prewarm run --count N` does it: the image opened once, N started at once.
        Stopwatch sw;
        PW_ASSIGN(images::LoadedImage loaded, images::load_image(k.ctx, img.name));
        Instances instances(k.ctx);
        auto results = instances.start_many(loaded, n);
        double all = sw.millis();
        std::optional<Error> failed;
        for (auto& r : results) {
          if (!r.ok()) {
            if (!failed) failed = r.error();
            continue;
          }
          if (r->record.started_by != "restore" && !failed)
            failed = Error(ErrorKind::kRuntime, "benchmark restore fell back to a cold start: " +
                                                    r->record.fallback_reason);
          k.each.push_back(r->timings.total_ms);
          PW_TRY(instances.remove(r->record.id));
        }
        if (failed) return *failed;
        k.all_ready.push_back(all);
      }
    }
  }

  const Kind& base = kinds[0];
  const Kind& dflt = kinds[1];
  json report = {
      {"benchmark", "startup"},
      {"spec", stdfs::absolute(opts.spec_file).string()},
      {"image", img.name},
      {"runs", opts.runs},
      {"image_bytes", baked.image_bytes},
      {"bake_seconds", baked.timings_s},
      {"host", {{"kernel", img.manifest.host.kernel}, {"cpu", img.manifest.host.cpu_model},
                {"criu", img.manifest.host.criu_version}, {"runc", img.manifest.host.runc_version},
                {"cpus", std::thread::hardware_concurrency()}}},
      // Whether prewarm's restores filled memory with huge pages (the baseline never does).
      {"huge_pages", ctx.config.huge_pages && criu::criu_fills_huge_pages(criu::criu_binary())},
      // Whether they faulted in the pages to fill with MADV_POPULATE_WRITE, and CRIU's log
      // level in them (the baseline: neither, and runc's level 4).
      {"fill_populate", ctx.config.fill_populate && criu::criu_fills_populate(criu::criu_binary())},
      {"criu_log_level", ctx.config.criu_log_level},
      {"default_runtime", dflt.name},
      {"restore", summary(dflt.single)},
      {"restore_breakdown_median_ms", breakdown(dflt.timings)},
      {"baseline_runc_restore", summary(base.single)},
      {"baseline_breakdown_median_ms", breakdown(base.timings)},
  };
  json ratios = {{"restore_vs_baseline", median(dflt.single) / median(base.single)}};
  json by_runtime = json::object();
  for (size_t j = 1; j < kinds.size(); ++j) {
    const Kind& k = kinds[j];
    by_runtime[k.name] = {{"restore", summary(k.single)},
                          {"breakdown_median_ms", breakdown(k.timings)}};
    ratios[k.name + "_vs_baseline"] = median(k.single) / median(base.single);
  }
  report["by_runtime"] = by_runtime;
  if (!cold.empty()) {
    report["cold"] = summary(cold);
    ratios["cold_vs_restore"] = median(cold) / median(dflt.single);
  }
  if (opts.concurrency > 1) {
    json conc = {{"concurrency", opts.concurrency},
                 {"baseline_all_ready", summary(base.all_ready)},
                 {"baseline_each", summary(base.each)},
                 {"restore_all_ready", summary(dflt.all_ready)},
                 {"restore_each", summary(dflt.each)}};
    for (size_t j = 1; j < kinds.size(); ++j) {
      const Kind& k = kinds[j];
      conc["by_runtime"][k.name] = {{"all_ready", summary(k.all_ready)},
                                    {"each", summary(k.each)}};
      ratios["concurrent_" + k.name + "_vs_baseline"] =
          median(k.all_ready) / median(base.all_ready);
    }
    report["concurrent"] = conc;
    ratios["concurrent_restore_vs_baseline"] = median(dflt.all_ready) / median(base.all_ready);
  }
  report["ratios"] = ratios;
  return report.dump(2);
}

}  // namespace prewarm::bench
