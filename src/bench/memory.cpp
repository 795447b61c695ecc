// The memory benchmark: what N instances of one image cost, without and with KSM merging
// (base/ksm.h), against one instance alone; ksmd's CPU time for it; restore → ready in both
// modes. Memory is the proportional set size (PSS) of each instance's processes, so pages shared
// between instances (KSM's, or the page cache of the common base) count once in total.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bake/bake.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/ksm.h"
#include "bench/bench.h"
#include "bench/util.h"
#include "images/load.h"
#include "lifecycle/instance.h"
#include "probe/probe.h"

namespace prewarm::bench {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// The process and its descendants.
std::vector<pid_t> tree(pid_t root) {
  std::vector<pid_t> out{root};
  for (size_t i = 0; i < out.size(); ++i) {
    const std::string base = "/proc/" + std::to_string(out[i]) + "/task/";
    std::error_code ec;
    for (const auto& t : std::filesystem::directory_iterator(base, ec)) {
      auto kids = fs::read_file(t.path() / "children", 1 << 16);
      if (!kids.ok()) continue;
      std::istringstream in(*kids);
      for (pid_t k; in >> k;) out.push_back(k);
    }
  }
  return out;
}

// KiB of `field` (e.g. "Pss:", "Rss:") over the instance's processes.
uint64_t kib(pid_t root, const std::string& field) {
  uint64_t total = 0;
  for (pid_t p : tree(root)) {
    auto text = fs::read_file("/proc/" + std::to_string(p) + "/smaps_rollup", 1 << 16);
    if (!text.ok()) continue;
    size_t at = text->find("\n" + field);
    if (at == std::string::npos) continue;
    total += std::strtoull(text->c_str() + at + 1 + field.size(), nullptr, 10);
  }
  return total;
}

double mib(uint64_t k) { return static_cast<double>(k) / 1024.0; }

struct Fleet {
  std::vector<lifecycle::Started> started;
  std::vector<double> ready_ms;
};

// n instances, one after another (each as `prewarm run` does it), each asked once.
Result<Fleet> start_fleet(const Context& ctx, const images::LoadedImage& img, int n) {
  Fleet f;
  lifecycle::Instances inst(ctx);
  for (int i = 0; i < n; ++i) {
    PW_ASSIGN(lifecycle::Started s, inst.start(img));
    if (s.record.started_by != "restore")
      return Error(ErrorKind::kRuntime, "benchmark restore fell back to a cold start: " + s.record.fallback_reason);
    f.ready_ms.push_back(s.timings.total_ms);
    if (img.spec.readiness_probe && img.spec.readiness_probe->http_get)
      (void)probe::http_get(s.record.ip, img.spec.readiness_probe->http_get->port,
                            img.spec.readiness_probe->http_get->path, {}, 3s);
    f.started.push_back(std::move(s));
  }
  return f;
}

void remove_fleet(const Context& ctx, const Fleet& f) {
  for (const auto& s : f.started) (void)lifecycle::remove_instance(ctx, s.record.id);
}

json measure(const Fleet& f) {
  uint64_t pss = 0, rss = 0;
  for (const auto& s : f.started) {
    pss += kib(s.pid, "Pss:");
    rss += kib(s.pid, "Rss:");
  }
  return {{"instances", f.started.size()},
          {"total_pss_mib", mib(pss)},
          {"total_rss_mib", mib(rss)},
          {"restore_to_ready_median_ms", median(f.ready_ms)}};
}

}  // namespace

Result<std::string> bench_memory(const Context& ctx, const MemoryBenchOptions& opts) {
  if (opts.instances < 2) return Error(ErrorKind::kInvalidInput, "--instances must be at least 2");
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(opts.spec_file));
  bake::BakeOptions bo;
  bo.name = spec.name + "-membench";
  ctx.say("[bench memory] baking " + bo.name);
  PW_ASSIGN(bake::BakeResult baked, bake::bake(ctx, opts.spec_file, bo));
  images::LoadOptions lo;
  lo.paging = "eager";
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, baked.name, lo));
  PW_ASSIGN(ksm::Settings saved, ksm::read_settings());
  PW_TRY(ksm::set_process_mergeable(false));

  // One instance alone.
  ctx.say("[bench memory] one instance");
  PW_ASSIGN(Fleet one, start_fleet(ctx, img, 1));
  std::this_thread::sleep_for(1s);
  json alone = measure(one);
  const double one_pss = alone["total_pss_mib"];
  remove_fleet(ctx, one);

  // N without merging.
  ctx.say("[bench memory] " + std::to_string(opts.instances) + " instances, no merging");
  auto plain = start_fleet(ctx, img, opts.instances);
  if (!plain.ok()) return std::move(plain).error();
  std::this_thread::sleep_for(1s);
  json without = measure(*plain);
  remove_fleet(ctx, *plain);

  // N with merging: restored from a process marked mergeable, ksmd scanning.
  ctx.say("[bench memory] " + std::to_string(opts.instances) + " instances, KSM");
  ksm::Settings fast = saved;
  fast.run = 1;
  fast.pages_to_scan = opts.pages_to_scan;
  fast.sleep_millisecs = 20;
  // The host's settings come back when this ends, also by Ctrl-C or SIGTERM.
  ksm::SettingsGuard host_settings(saved);
  PW_TRY(ksm::write_settings(fast));
  PW_TRY(ksm::set_process_mergeable(true));
  struct Unmark {
    ~Unmark() { (void)ksm::set_process_mergeable(false); }
  } unmark;
  PW_ASSIGN(ksm::Stats before, ksm::read_stats());
  Stopwatch since_first;
  auto merged = start_fleet(ctx, img, opts.instances);
  if (!merged.ok()) return std::move(merged).error();
  // Until three full scans in a row add nothing (or two minutes).
  uint64_t last_sharing = 0, last_scans = 0;
  int quiet = 0;
  double settle_s = 0;
  ksm::Stats now = before;
  while (since_first.seconds() < 120) {
    std::this_thread::sleep_for(500ms);
    PW_ASSIGN(now, ksm::read_stats());
    if (now.full_scans == last_scans) continue;
    quiet = now.pages_sharing == last_sharing ? quiet + 1 : 0;
    if (now.pages_sharing != last_sharing) settle_s = since_first.seconds();
    last_sharing = now.pages_sharing;
    last_scans = now.full_scans;
    if (quiet >= 3) break;
  }
  const double merge_cpu = now.ksmd_cpu_seconds - before.ksmd_cpu_seconds;
  const double merge_wall = since_first.seconds();
  json with = measure(*merged);
  // What scanning costs once everything is merged: ksmd's CPU over ten idle seconds.
  PW_ASSIGN(ksm::Stats idle0, ksm::read_stats());
  std::this_thread::sleep_for(10s);
  PW_ASSIGN(ksm::Stats idle1, ksm::read_stats());
  // The instances keep serving: a request each, after merging.
  for (const auto& s : merged->started)
    if (img.spec.readiness_probe && img.spec.readiness_probe->http_get)
      (void)probe::http_get(s.record.ip, img.spec.readiness_probe->http_get->port,
                            img.spec.readiness_probe->http_get->path, {}, 3s);
  json after_requests = measure(*merged);
  remove_fleet(ctx, *merged);

  const double n = opts.instances;
  json out = {
      {"benchmark", "memory"},
      {"image", baked.name},
      {"spec", opts.spec_file.string()},
      {"one_instance", alone},
      {"without_merging", without},
      {"with_ksm", with},
      {"with_ksm_after_a_request_each", after_requests},
      {"ksm",
       {{"pages_to_scan", opts.pages_to_scan},
        {"sleep_millisecs", 20},
        {"pages_sharing", now.pages_sharing - before.pages_sharing},
        {"seconds_until_merged", settle_s},
        {"seconds_watched", merge_wall},
        {"ksmd_cpu_seconds_while_merging", merge_cpu},
        {"ksmd_cpu_share_while_merging", merge_wall > 0 ? merge_cpu / merge_wall : 0},
        {"ksmd_cpu_share_when_merged", (idle1.ksmd_cpu_seconds - idle0.ksmd_cpu_seconds) / 10.0}}},
      {"ratios",
       {{"without_merging_vs_one", without["total_pss_mib"].get<double>() / one_pss},
        {"with_ksm_vs_one", with["total_pss_mib"].get<double>() / one_pss},
        {"with_ksm_after_requests_vs_one", after_requests["total_pss_mib"].get<double>() / one_pss},
        {"n_times_one", n}}}};
  return out.dump(1);
}

}  // namespace prewarm::bench
