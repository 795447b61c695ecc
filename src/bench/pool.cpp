// The warm-pool benchmark: claims from a pool that a background thread keeps filled (as the
// daemon does: refills at a lower CPU priority, removals of claimed instances beside them), and
// in the same run restores → ready of the same image, for comparison. Claim latency is what a
// caller with the image open waits (Instances::claim: hostname, thaw, probe, record).
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <cstdio>
#include <thread>

#include "bake/bake.h"
#include "base/clock.h"
#include "bench/bench.h"
#include "bench/util.h"
#include "images/load.h"
#include "lifecycle/instance.h"

namespace prewarm::bench {
namespace {

using nlohmann::json;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// Field 19 of /proc/PID/stat.
int nice_of(pid_t pid) {
  std::string stat;
  if (FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r")) {
    char buf[4096];
    size_t n = std::fread(buf, 1, sizeof buf, f);
    std::fclose(f);
    stat.assign(buf, n);
  }
  size_t paren = stat.rfind(") ");
  if (paren == std::string::npos) return -100;
  int nice = -100;
  std::sscanf(stat.c_str() + paren + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %d", &nice);
  return nice;
}

json stats(const std::vector<double>& v) {
  return {{"count", v.size()},
          {"median_ms", median(v)},
          {"p99_ms", percentile(v, 0.99)},
          {"max_ms", v.empty() ? 0 : *std::max_element(v.begin(), v.end())},
          {"samples_ms", v}};
}

// Keeps `size` instances parked and removes claimed ones, on its own thread at SCHED_IDLE (the
// CRIU it spawns inherits it), until stopped.
class Refiller {
 public:
  Refiller(const Context& ctx, const images::LoadedImage& img, int size)
      : ctx_(ctx), img_(img), size_(size), thread_([this] { loop(); }) {}
  ~Refiller() {
    {
      std::lock_guard l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void remove_later(std::string id) {
    {
      std::lock_guard l(mu_);
      to_remove_.push_back(std::move(id));
    }
    cv_.notify_all();
  }
  // Waits until at least one instance is parked; false once the refill failed.
  bool wait_parked(std::chrono::seconds timeout) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, timeout, [&] { return parked_ > 0 || !error_.empty(); }) && error_.empty();
  }
  void claimed() {
    std::lock_guard l(mu_);
    --parked_;
    cv_.notify_all();
  }
  std::vector<double> park_ms() {
    std::lock_guard l(mu_);
    return park_ms_;
  }
  std::string error() {
    std::lock_guard l(mu_);
    return error_;
  }

 private:
  void loop() {
    {
      // SCHED_IDLE: any normal task (a claim, an app) preempts it at once; CRIU restores the
      // app's own policy and nice, and the lazy-pages tree resets itself to normal.
      struct sched_param idle {};
      ::sched_setscheduler(static_cast<pid_t>(::syscall(SYS_gettid)), SCHED_IDLE, &idle);
    }
    lifecycle::Instances inst(ctx_);
    lifecycle::StartOptions park;
    park.park = true;
    for (;;) {
      std::string remove;
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || !to_remove_.empty() || parked_ < size_; });
        if (stop_) return;
        if (!to_remove_.empty()) {
          remove = std::move(to_remove_.front());
          to_remove_.pop_front();
        }
      }
      if (!remove.empty()) {
        (void)inst.remove(remove);
        continue;
      }
      Stopwatch sw;
      auto s = inst.start(img_, park);
      std::lock_guard l(mu_);
      if (!s.ok()) {
        error_ = s.error().to_string();
        cv_.notify_all();
        return;
      }
      park_ms_.push_back(sw.millis());
      ++parked_;
      cv_.notify_all();
    }
  }

  const Context& ctx_;
  const images::LoadedImage& img_;
  const int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> to_remove_;
  std::vector<double> park_ms_;
  int parked_ = 0;
  bool stop_ = false;
  std::string error_;
  std::thread thread_;
};

Result<json> bench_one(const Context& ctx, const std::filesystem::path& spec_file,
                       const PoolBenchOptions& opts) {
  PW_ASSIGN(spec::AppSpec spec, spec::load_spec(spec_file));
  bake::BakeOptions bo;
  bo.name = spec.name + "-poolbench";
  ctx.say("[bench pool] baking " + bo.name);
  PW_ASSIGN(bake::BakeResult baked, bake::bake(ctx, spec_file, bo));
  PW_ASSIGN(images::LoadedImage img, images::load_image(ctx, baked.name));
  lifecycle::Instances inst(ctx);

  // Restore → ready of the same image, one at a time with nothing else running.
  std::vector<double> restore_ms;
  for (int i = 0; i < opts.restores; ++i) {
    PW_ASSIGN(lifecycle::Started s, timed_start(ctx, baked.name, lifecycle::StartMode::kRestore));
    restore_ms.push_back(s.timings.total_ms);  // (timed_start removed it)
  }

  // Refill rate with nothing else running: `size` parks in a row, then all at once.
  std::vector<double> park_serial;
  std::vector<std::string> made;
  lifecycle::StartOptions park;
  park.park = true;
  for (int i = 0; i < opts.pool_size; ++i) {
    Stopwatch sw;
    PW_ASSIGN(lifecycle::Started s, inst.start(img, park));
    park_serial.push_back(sw.millis());
    made.push_back(s.record.id);
  }
  for (const auto& id : made) PW_TRY(inst.remove(id));
  made.clear();
  Stopwatch all;
  for (auto& s : inst.start_many(img, opts.pool_size, park)) {
    if (!s.ok()) return std::move(s).error();
    made.push_back(s->record.id);
  }
  const double concurrent_s = all.seconds();
  for (const auto& id : made) PW_TRY(inst.remove(id));

  // Claims against a pool the refiller keeps full.
  std::vector<double> claim_ms, identity_ms, thaw_ms, probe_ms;
  int waited = 0;
  int claimed_nice = -100;
  std::vector<std::pair<double, std::map<std::string, double>>> slowest;
  json out;
  {
    Refiller refill(ctx, img, opts.pool_size);
    for (int i = 0; i < opts.claims; ++i) {
      if (i % 50 == 0)
        ctx.say("[bench pool] " + baked.name + ": claim " + std::to_string(i + 1) + "/" +
                std::to_string(opts.claims));
      if (!refill.wait_parked(std::chrono::seconds(60)))
        return Error(ErrorKind::kRuntime, "pool refill failed: " + refill.error());
      auto parked_now = inst.parked(img);
      if (parked_now.ok() && parked_now->empty()) ++waited;
      auto c = inst.claim(img);
      if (!c.ok()) return std::move(c).error().with_context("claim " + std::to_string(i + 1));
      refill.claimed();
      claim_ms.push_back(c->timings.total_ms);
      slowest.emplace_back(c->timings.total_ms, c->timings.as_map());
      if (i == 0) claimed_nice = nice_of(c->pid);
      identity_ms.push_back(c->timings.identity_ms);
      thaw_ms.push_back(c->timings.runtime_ms);
      probe_ms.push_back(c->timings.probe_ms);
      refill.remove_later(c->record.id);
      // A caller's pace: the next claim comes a little later, as requests do.
      std::this_thread::sleep_for(std::chrono::milliseconds(opts.interval_ms));
    }
    if (!refill.error().empty()) return Error(ErrorKind::kRuntime, "pool refill failed: " + refill.error());
    out = {{"image", baked.name},
                {"spec", spec_file.string()},
                {"pool_size", opts.pool_size},
                {"claims", stats(claim_ms)},
                {"claim_breakdown_median_ms",
                 {{"identity_ms", median(identity_ms)},
                  {"thaw_ms", median(thaw_ms)},
                  {"probe_ms", median(probe_ms)}}},
                {"restore_to_ready", stats(restore_ms)},
                {"refill_park_serial", stats(park_serial)},
                {"refill_restores_per_second_serial", park_serial.empty() ? 0 : 1000.0 / median(park_serial)},
                {"refill_restores_per_second_concurrent", concurrent_s > 0 ? opts.pool_size / concurrent_s : 0},
                {"refill_park_during_claims", stats(refill.park_ms())},
                {"claims_that_found_the_pool_momentarily_empty", waited},
                // The app runs at the priority it had at the checkpoint (CRIU restores it), not
                // at the refill's.
                {"claimed_instance_nice", claimed_nice},
                {"slowest_claims_ms", [&] {
                   std::sort(slowest.begin(), slowest.end(),
                             [](const auto& a, const auto& b) { return a.first > b.first; });
                   json j = json::array();
                   for (size_t k = 0; k < std::min<size_t>(5, slowest.size()); ++k) j.push_back(slowest[k].second);
                   return j;
                 }()},
                {"ratios",
                 {{"claim_median_vs_restore_median", median(claim_ms) / median(restore_ms)},
                  {"claim_p99_vs_restore_median", percentile(claim_ms, 0.99) / median(restore_ms)}}}};
  }
  // What the refiller left: parked instances and claimed ones not yet removed.
  PW_ASSIGN(auto left, inst.list());
  for (const auto& s : left)
    if (s.record.image == baked.name) PW_TRY(inst.remove(s.record.id));
  return out;
}

}  // namespace

Result<std::string> bench_pool(const Context& ctx, const PoolBenchOptions& opts) {
  if (opts.spec_files.empty()) return Error(ErrorKind::kInvalidInput, "no spec given");
  if (opts.claims < 1 || opts.pool_size < 1 || opts.restores < 1)
    return Error(ErrorKind::kInvalidInput, "--claims, --pool-size and --restores must be at least 1");
  json apps = json::array();
  for (const auto& spec : opts.spec_files) {
    PW_ASSIGN(json one, bench_one(ctx, spec, opts));
    apps.push_back(std::move(one));
  }
  json out = {{"benchmark", "pool"},
              {"claims_per_app", opts.claims},
              {"interval_ms", opts.interval_ms},
              {"apps", apps}};
  return out.dump(1);
}

}  // namespace prewarm::bench
