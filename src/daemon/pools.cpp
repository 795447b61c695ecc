#include "daemon/pools.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>

#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "lifecycle/record.h"

namespace prewarm::daemon {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

stdfs::path pools_file(const engine::Context& ctx) { return ctx.state_dir / "pools.json"; }

}  // namespace

Result<PoolSpec> pool_from_json(const json& j, const std::string& image) {
  if (!j.is_object()) return Error(ErrorKind::kInvalidInput, "pool: expected an object");
  PoolSpec p;
  p.image = image.empty() ? j.value("image", "") : image;
  if (p.image.empty()) return Error(ErrorKind::kInvalidInput, "pool: no image");
  auto int_field = [&](const char* name, int& out) -> Status {
    if (!j.contains(name)) return {};
    if (!j[name].is_number_integer() || j[name].get<long long>() < 0 || j[name].get<long long>() > 1000)
      return Error(ErrorKind::kInvalidInput, std::string("pool ") + p.image + ": " + name +
                                                 " must be an integer from 0 to 1000");
    out = j[name].get<int>();
    return {};
  };
  PW_TRY(int_field("min", p.min));
  PW_TRY(int_field("max", p.max));
  if (j.contains("paging")) {
    if (!j["paging"].is_string()) return Error(ErrorKind::kInvalidInput, "pool: paging must be a string");
    p.paging = j["paging"].get<std::string>();
    if (p.paging != "" && p.paging != "lazy" && p.paging != "eager" && p.paging != "auto")
      return Error(ErrorKind::kInvalidInput, "pool " + p.image + ": paging '" + p.paging +
                                                 "': expected lazy, eager or auto");
  }
  if (p.max < p.min)
    return Error(ErrorKind::kInvalidInput, "pool " + p.image + ": max (" + std::to_string(p.max) +
                                               ") is below min (" + std::to_string(p.min) + ")");
  return p;
}

json to_json(const PoolSpec& p) {
  return {{"image", p.image}, {"min", p.min}, {"max", p.max}, {"paging", p.paging}};
}

Pools::Pools(const engine::Context& ctx, Metrics& metrics, Events& events)
    : ctx_(ctx), metrics_(metrics), events_(events) {}

Pools::~Pools() { stop(); }

Status Pools::start() {
  auto text = fs::read_file(pools_file(ctx_), 1 << 20);
  if (text.ok()) {
    json j = json::parse(*text, nullptr, false);
    if (!j.is_array())
      return Error(ErrorKind::kInvalidInput, pools_file(ctx_).string() + ": not a JSON list");
    std::lock_guard l(mu_);
    for (const auto& e : j) {
      auto p = pool_from_json(e, "");
      if (!p.ok()) return std::move(p).error().with_context(pools_file(ctx_).string());
      pools_[p->image].spec = *p;
    }
  }
  worker_ = std::thread([this] { refill_loop(); });
  return {};
}

void Pools::stop() {
  {
    std::lock_guard l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Status Pools::save_locked() {
  json j = json::array();
  for (const auto& [name, p] : pools_) j.push_back(to_json(p.spec));
  return fs::write_file_atomic(pools_file(ctx_), j.dump(1) + "\n", 0600);
}

Result<images::LoadedImage> Pools::image_for(const PoolSpec& spec) {
  images::LoadOptions lo;
  lo.paging = spec.paging;
  return images::load_image(ctx_, spec.image, lo);
}

Status Pools::set(const PoolSpec& spec) {
  PW_ASSIGN(images::LoadedImage img, image_for(spec));
  {
    std::lock_guard l(mu_);
    auto& p = pools_[spec.image];
    p.spec = spec;
    p.img = std::move(img);
    p.last_error.clear();
    PW_TRY(save_locked());
  }
  events_.publish({{"type", "pool.set"}, {"image", spec.image}, {"min", spec.min}, {"max", spec.max}});
  cv_.notify_all();
  return {};
}

Status Pools::remove(const std::string& image) {
  std::optional<images::LoadedImage> img;
  {
    std::lock_guard l(mu_);
    auto it = pools_.find(image);
    if (it == pools_.end()) return Error(ErrorKind::kNotFound, "no pool for image " + image);
    img = it->second.img;
    pools_.erase(it);
    PW_TRY(save_locked());
  }
  events_.publish({{"type", "pool.removed"}, {"image", image}});
  if (!img) return {};
  lifecycle::Instances inst(ctx_);
  auto parked = inst.parked(*img);
  if (!parked.ok()) return std::move(parked).error();
  for (const auto& id : *parked) {
    Status st = inst.remove(id);
    if (!st.ok() && st.error().kind() != ErrorKind::kNotFound) return st;
    events_.publish({{"type", "instance.removed"}, {"id", id}, {"image", image}});
  }
  return {};
}

std::pair<int, int> Pools::count(const images::LoadedImage& img) {
  int parked = 0, ready = 0;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir(), ec)) {
    auto rec = lifecycle::load_record(e.path());
    if (!rec.ok() || rec->image != img.name) continue;
    if (!img.store_digest.empty() && rec->image_digest != img.store_digest) continue;
    if (rec->state == lifecycle::InstanceState::kRestored) ++parked;
    else ++ready;  // ready, and whatever is on its way to it
  }
  return {parked, ready};
}

std::vector<PoolStatus> Pools::list() {
  std::vector<std::pair<PoolSpec, std::pair<std::optional<images::LoadedImage>, std::string>>> copy;
  {
    std::lock_guard l(mu_);
    for (const auto& [name, p] : pools_) copy.push_back({p.spec, {p.img, p.last_error}});
  }
  std::vector<PoolStatus> out;
  for (auto& [spec, rest] : copy) {
    PoolStatus s;
    s.spec = spec;
    s.last_error = rest.second;
    if (rest.first) std::tie(s.parked, s.claimed) = count(*rest.first);
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<PoolStatus> Pools::get(const std::string& image) {
  for (auto& s : list())
    if (s.spec.image == image) return s;
  return std::nullopt;
}

Result<lifecycle::Started> Pools::claim(const std::string& image,
                                        const lifecycle::StartOptions& opts, bool* from_pool) {
  std::optional<images::LoadedImage> img;
  PoolSpec spec;
  {
    std::lock_guard l(mu_);
    auto it = pools_.find(image);
    if (it == pools_.end()) return Error(ErrorKind::kNotFound, "no pool for image " + image);
    img = it->second.img;
    spec = it->second.spec;
  }
  if (!img) return Error(ErrorKind::kUnavailable, "pool " + image + ": its image is not loaded yet");
  lifecycle::Instances inst(ctx_);
  auto c = inst.claim(*img, opts);
  cv_.notify_all();  // refill what was taken
  if (c.ok() || c.error().kind() != ErrorKind::kNotFound) {
    *from_pool = c.ok();
    return c;
  }
  // Nothing parked: a restore now, if the pool may grow.
  auto [parked, ready] = count(*img);
  if (parked + ready >= spec.max)
    return Error(ErrorKind::kUnavailable, "pool " + image + " is at its max of " +
                                              std::to_string(spec.max) + " instances");
  *from_pool = false;
  lifecycle::StartOptions o = opts;
  o.paging = spec.paging;
  return inst.start(*img, o);
}

void Pools::refill_loop() {
  // Refills yield to claims and to the apps: SCHED_IDLE on this thread, inherited by the CRIU it
  // starts (CRIU gives the restored tasks back the priority they had at the checkpoint).
  {
      // SCHED_IDLE: any normal task (a claim, an app) preempts it at once; CRIU restores the
      // app's own policy and nice, and the lazy-pages tree resets itself to normal.
      struct sched_param idle {};
      ::sched_setscheduler(static_cast<pid_t>(::syscall(SYS_gettid)), SCHED_IDLE, &idle);
    }
  lifecycle::Instances inst(ctx_);
  for (;;) {
    // The pool furthest below its min, that is under its max.
    std::string image;
    std::optional<images::LoadedImage> img;
    PoolSpec spec;
    {
      std::unique_lock l(mu_);
      if (stop_) return;
      std::vector<std::string> names;
      for (auto& [name, p] : pools_) names.push_back(name);
      l.unlock();
      int best_gap = 0;
      for (const auto& name : names) {
        std::optional<images::LoadedImage> pimg, stale;
        PoolSpec pspec;
        {
          std::lock_guard g(mu_);
          auto it = pools_.find(name);
          if (it == pools_.end()) continue;
          if (!it->second.last_error.empty()) continue;  // retried after the back-off below
          pspec = it->second.spec;
        }
        // The image as it is now (outside the lock: claims go on meanwhile). Baked or pulled
        // again under the same name, it is a new build: the pool follows it, and the parked
        // instances of the old one go.
        auto loaded = image_for(pspec);
        {
          std::lock_guard g(mu_);
          auto it = pools_.find(name);
          if (it == pools_.end()) continue;
          if (!loaded.ok()) {
            it->second.last_error = loaded.error().to_string();
            continue;
          }
          if (!it->second.img || it->second.img->store_digest != loaded->store_digest) {
            stale = it->second.img;
            it->second.img = *loaded;
          }
          pimg = it->second.img;
        }
        if (stale) {
          events_.publish({{"type", "pool.image_changed"}, {"image", name},
                           {"from", stale->store_digest}, {"to", pimg->store_digest}});
          if (auto old = inst.parked(*stale); old.ok())
            for (const auto& id : *old)
              if (inst.remove(id).ok())
                events_.publish({{"type", "instance.removed"}, {"id", id}, {"image", name}});
        }
        auto [parked, ready] = count(*pimg);
        int gap = pspec.min - parked;
        if (gap > best_gap && parked + ready < pspec.max) {
          best_gap = gap;
          image = name;
          img = pimg;
          spec = pspec;
        }
      }
      l.lock();
      if (stop_) return;
      if (image.empty()) {
        // Nothing to do: wait for a claim, a change, or a back-off to end.
        cv_.wait_for(l, std::chrono::seconds(2));
        for (auto& [name, p] : pools_) p.last_error.clear();
        continue;
      }
    }
    lifecycle::StartOptions park;
    park.park = true;
    park.paging = spec.paging;
    Stopwatch sw;
    auto s = inst.start(*img, park);
    if (s.ok()) {
      metrics_.observe("prewarm_pool_refill_seconds", sw.seconds(), {{"image", image}});
      events_.publish({{"type", "instance.parked"}, {"id", s->record.id}, {"image", image}, {"ip", s->record.ip}});
    } else {
      metrics_.count("prewarm_pool_refill_failures_total", {{"image", image}});
      events_.publish({{"type", "pool.refill_failed"}, {"image", image}, {"error", s.error().to_string()}});
      log::warn("pool " + image + ": refill failed: " + s.error().to_string());
      std::lock_guard l(mu_);
      if (auto it = pools_.find(image); it != pools_.end()) it->second.last_error = s.error().to_string();
    }
  }
}

}  // namespace prewarm::daemon
