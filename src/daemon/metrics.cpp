#include "daemon/metrics.h"

#include <cmath>
#include <cstdio>

namespace prewarm::daemon {
namespace {

std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string labels_text(const Labels& l, const std::string& extra_key = "",
                        const std::string& extra_value = "") {
  if (l.empty() && extra_key.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : l) {
    out += (first ? "" : ",") + k + "=\"" + escape(v) + "\"";
    first = false;
  }
  if (!extra_key.empty()) out += (first ? "" : ",") + extra_key + "=\"" + extra_value + "\"";
  return out + "}";
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

Metrics::Metrics() {
  // Seconds: claims are milliseconds, restores tens to hundreds of them, cold starts seconds.
  bounds_ = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  declare("prewarm_api_requests_total", "counter", "API requests answered, by route and status code");
  declare("prewarm_starts_total", "counter", "instances started, by how (restore, cold, claim)");
  declare("prewarm_fallbacks_total", "counter", "restores that fell back to a cold start, by reason");
  declare("prewarm_pool_refill_failures_total", "counter", "pool refills that failed, by image");
  declare("prewarm_restore_seconds", "histogram", "restore → ready of instances the daemon started");
  declare("prewarm_restore_phase_seconds", "histogram", "where a restore's time went, by phase");
  declare("prewarm_claim_seconds", "histogram", "claim → ready of parked instances");
  declare("prewarm_claim_phase_seconds", "histogram", "where a claim's time went, by phase");
  declare("prewarm_cold_start_seconds", "histogram", "cold start → ready");
  declare("prewarm_pool_refill_seconds", "histogram", "one parked instance restored by a refill");
}

void Metrics::declare(const std::string& name, const std::string& type, const std::string& help) {
  auto& f = families_[name];
  f.type = type;
  f.help = help;
}

void Metrics::count(const std::string& name, const Labels& labels, double by) {
  std::lock_guard l(mu_);
  families_[name].values[labels] += by;
}

void Metrics::observe(const std::string& name, double seconds, const Labels& labels) {
  std::lock_guard l(mu_);
  auto& f = families_[name];
  auto& b = f.buckets[labels];
  if (b.empty()) b.assign(bounds_.size() + 1, 0);
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (seconds <= bounds_[i]) ++b[i];
  ++b.back();
  f.sums[labels] += seconds;
  ++f.counts[labels];
}

void Metrics::gauge(const std::string& name, const std::string& help,
                    std::function<std::vector<std::pair<Labels, double>>()> fn) {
  std::lock_guard l(mu_);
  auto& f = families_[name];
  f.type = "gauge";
  f.help = help;
  f.gauge = std::move(fn);
}

std::string Metrics::exposition() const {
  std::map<std::string, std::vector<std::pair<Labels, double>>> gauges;
  {
    // Gauge functions may take locks of their own: called without ours.
    std::vector<std::pair<std::string, std::function<std::vector<std::pair<Labels, double>>()>>> fns;
    {
      std::lock_guard l(mu_);
      for (const auto& [name, f] : families_)
        if (f.gauge) fns.emplace_back(name, f.gauge);
    }
    for (const auto& [name, fn] : fns) gauges[name] = fn();
  }
  std::lock_guard l(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
    if (f.type == "gauge") {
      for (const auto& [labels, v] : gauges[name]) out += name + labels_text(labels) + " " + number(v) + "\n";
    } else if (f.type == "counter") {
      for (const auto& [labels, v] : f.values) out += name + labels_text(labels) + " " + number(v) + "\n";
    } else {
      for (const auto& [labels, b] : f.buckets) {
        for (size_t i = 0; i < bounds_.size(); ++i)
          out += name + "_bucket" + labels_text(labels, "le", number(bounds_[i])) + " " +
                 std::to_string(b[i]) + "\n";
        out += name + "_bucket" + labels_text(labels, "le", "+Inf") + " " + std::to_string(b.back()) + "\n";
        out += name + "_sum" + labels_text(labels) + " " + number(f.sums.at(labels)) + "\n";
        out += name + "_count" + labels_text(labels) + " " + std::to_string(f.counts.at(labels)) + "\n";
      }
    }
  }
  return out;
}

}  // namespace prewarm::daemon
