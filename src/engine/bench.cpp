// The startup benchmark. Samples of the three ways to start alternate, so drift on a shared
// machine hits them alike; every instance is removed between samples.
#include "engine/bench.h"

#include <unistd.h>

#include <algorithm>
#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/clock.h"
#include "base/fs.h"
#include "engine/app_log.h"
#include "engine/bake.h"
#include "engine/bench_util.h"
#include "engine/instance.h"
#include "image/image.h"
#include "oci/config.h"
#include "probe/probe.h"
#include "rootfs/rootfs.h"

namespace prewarm::engine {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;


json summary(const std::vector<double>& samples) {
  return {{"median_ms", median(samples)}, {"samples_ms", samples}};
}

struct BaselineSample {
  double restore_ms = 0;  // runc restore
  double probe_ms = 0;    // until ready
  double total_ms = 0;
};

// A plain `runc restore` of the image's checkpoint: everything it needs (network namespace,
// overlay with the rootfs diff, bundle, log pipe) is prepared outside the timed part.
class Baseline {
 public:
  Baseline(const Context& ctx, const LoadedImage& img) : ctx_(ctx), img_(img) {}

  Status prepare() {
    id_ = img_.name + "-base-" + fs::random_hex(3);
    dir_ = ctx_.instance_dir(id_);
    PW_TRY(fs::make_dirs(dir_, 0700));
    PW_TRY(net::ensure_bridge(ctx_.net));
    PW_ASSIGN(att_, net::attach(ctx_.net, id_));
    attached_ = true;
    // A record, so that `prewarm rm --all` can clean up after an interrupted benchmark.
    json rec = {{"id", id_}, {"image", img_.name}, {"ip", att_.ip}, {"netns", att_.netns_name},
                {"hostVeth", att_.host_veth}, {"startedBy", "baseline"}};
    PW_TRY(fs::write_file(dir_ / "instance.json", rec.dump(), 0600));
    PW_TRY(rootfs::apply_diff(img_.dir / image::kRootfsDiff, dir_ / "upper"));
    PW_ASSIGN(auto ov, rootfs::mount_overlay(img_.manifest.rootfs_dir, dir_));
    (void)ov;
    PW_TRY(oci::write_bundle(dir_, container_config(img_.spec, dir_, id_, id_, att_.netns_path)));
    PW_TRY(fs::make_dirs(dir_ / "criu", 0700));
    PW_ASSIGN(log_, open_app_log(dir_ / "app.log"));
    return {};
  }

  Result<BaselineSample> run() {
    BaselineSample s;
    Stopwatch sw;
    oci::RestoreOptions ro;
    ro.image_dir = img_.dir / image::kCheckpointDir;
    ro.work_dir = dir_ / "criu";
    ro.tcp_established = img_.manifest.tcp_established;
    Status st = ctx_.runtime->restore(id_, dir_, ro, log_.get());
    log_.reset();
    if (!st.ok()) return std::move(st).error().with_context("baseline runc restore");
    s.restore_ms = sw.millis();
    Stopwatch probe_sw;
    if (img_.spec.readiness_probe) {
      PW_TRY(probe::wait_ready(*img_.spec.readiness_probe, probe_target(ctx_, id_, att_.ip)));
    }
    s.probe_ms = probe_sw.millis();
    s.total_ms = sw.millis();
    return s;
  }

  ~Baseline() {
    if (!id_.empty()) (void)remove_instance(ctx_, id_);
  }

 private:
  const Context& ctx_;
  const LoadedImage& img_;
  std::string id_;
  stdfs::path dir_;
  net::Attachment att_;
  bool attached_ = false;
  UniqueFd log_;
};


Result<BaselineSample> baseline_sample(const Context& ctx, const LoadedImage& img) {
  Baseline b(ctx, img);
  PW_TRY(b.prepare());
  return b.run();
}

json breakdown(const std::vector<StartTimings>& ts) {
  json out = json::object();
  std::map<std::string, std::vector<double>> cols;
  for (const auto& t : ts)
    for (const auto& [k, v] : t.as_map()) cols[k].push_back(v);
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

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Result<Started> timed_start(const Context& ctx, const std::string& name, StartMode mode) {
  Stopwatch sw;
  PW_ASSIGN(LoadedImage img, load_image(ctx, name));
  double load_ms = sw.millis();
  PW_ASSIGN(Started s, start_instance(ctx, img, mode));
  s.timings.verify_ms += load_ms;
  s.timings.total_ms += load_ms;
  Status rm = remove_instance(ctx, s.record.id);
  if (!rm.ok()) return std::move(rm).error();
  if (mode == StartMode::kRestore && s.record.started_by != "restore")
    return Error("benchmark restore fell back to a cold start: " + s.record.fallback_reason);
  return s;
}

Result<std::string> bench_startup(const Context& ctx, const BenchOptions& opts) {
  if (opts.runs < 1) return Error("--runs must be at least 1");
  if (opts.concurrency < 1) return Error("--concurrency must be at least 1");
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(opts.spec_file));
  BakeOptions bo;
  bo.name = spec.name + "-bench";
  ctx.say("[bench] baking " + bo.name);
  PW_ASSIGN(BakeResult baked, bake(ctx, opts.spec_file, bo));
  ::sync();  // or the image's writeback slows the first measured starts
  PW_ASSIGN(LoadedImage img, load_image(ctx, baked.name));

  std::vector<double> cold, restore, base, base_restore, base_probe;
  std::vector<StartTimings> restore_t;
  for (int i = 0; i < opts.runs; ++i) {
    ctx.say("[bench] sample " + std::to_string(i + 1) + "/" + std::to_string(opts.runs));
    // Alternate which goes first: the one after another start pays for its teardown.
    for (int k = 0; k < 2; ++k) {
      if ((i + k) % 2 == 0) {
        PW_ASSIGN(BaselineSample b, baseline_sample(ctx, img));
        base.push_back(b.total_ms);
        base_restore.push_back(b.restore_ms);
        base_probe.push_back(b.probe_ms);
      } else {
        PW_ASSIGN(Started r, timed_start(ctx, img.name, StartMode::kRestore));
        restore.push_back(r.timings.total_ms);
        restore_t.push_back(r.timings);
      }
    }
    if (!opts.skip_cold) {
      PW_ASSIGN(Started c, timed_start(ctx, img.name, StartMode::kCold));
      cold.push_back(c.timings.total_ms);
    }
  }

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
      {"restore", summary(restore)},
      {"restore_breakdown_median_ms", breakdown(restore_t)},
      {"baseline_runc_restore", summary(base)},
      {"baseline_breakdown_median_ms",
       {{"runc_restore_ms", median(base_restore)}, {"probe_ms", median(base_probe)}}},
  };
  json ratios = {{"restore_vs_baseline", median(restore) / median(base)}};
  if (!cold.empty()) {
    report["cold"] = summary(cold);
    ratios["cold_vs_restore"] = median(cold) / median(restore);
  }

  if (opts.concurrency > 1) {
    int k = opts.concurrency;
    std::vector<double> r_all, r_each, b_all, b_each;
    for (int i = 0; i < opts.runs; ++i) {
      ctx.say("[bench] concurrent round " + std::to_string(i + 1) + "/" +
              std::to_string(opts.runs) + " (" + std::to_string(k) + " at once)");
      std::vector<std::unique_ptr<Baseline>> prepared;
      for (int j = 0; j < k; ++j) {
        prepared.push_back(std::make_unique<Baseline>(ctx, img));
        PW_TRY(prepared.back()->prepare());
      }
      std::atomic<int> next{0};
      PW_ASSIGN(auto b, concurrent_round(k, [&]() -> Result<double> {
                  PW_ASSIGN(BaselineSample s, prepared[next++]->run());
                  return s.total_ms;
                }));
      prepared.clear();
      b_all.push_back(b.first);
      b_each.insert(b_each.end(), b.second.begin(), b.second.end());
      std::mutex mu;
      std::vector<std::string> ids;
      auto r = concurrent_round(k, [&]() -> Result<double> {
        PW_ASSIGN(Started s, start_instance(ctx, img, StartMode::kRestore));
        std::lock_guard lock(mu);
        ids.push_back(s.record.id);
        if (s.record.started_by != "restore")
          return Error("benchmark restore fell back to a cold start: " + s.record.fallback_reason);
        return s.timings.total_ms;
      });
      for (const auto& id : ids) PW_TRY(remove_instance(ctx, id));
      if (!r.ok()) return std::move(r).error();
      r_all.push_back(r->first);
      r_each.insert(r_each.end(), r->second.begin(), r->second.end());
    }
    report["concurrent"] = {
        {"concurrency", k},
        {"restore_all_ready", summary(r_all)},
        {"restore_each", summary(r_each)},
        {"baseline_all_ready", summary(b_all)},
        {"baseline_each", summary(b_each)},
    };
    ratios["concurrent_restore_vs_baseline"] = median(r_all) / median(b_all);
  }
  report["ratios"] = ratios;
  return report.dump(2);
}

}  // namespace prewarm::engine
