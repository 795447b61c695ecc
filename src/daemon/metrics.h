// prewarmd's metrics in the Prometheus text exposition format (version 0.0.4): counters,
// gauges read when scraped, and histograms of durations in seconds. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace prewarm::daemon {

using Labels = std::map<std::string, std::string>;

class Metrics {
 public:
  Metrics();
  void count(const std::string& name, const Labels& labels = {}, double by = 1);
  void observe(const std::string& name, double seconds, const Labels& labels = {});
  // Gauges computed at scrape time: fn returns (labels, value) pairs.
  void gauge(const std::string& name, const std::string& help,
             std::function<std::vector<std::pair<Labels, double>>()> fn);
  std::string exposition() const;

 private:
  struct Family {
    std::string type, help;
    std::map<Labels, double> values;  // counters
    std::map<Labels, std::vector<uint64_t>> buckets;  // histograms: per bound, then +Inf
    std::map<Labels, double> sums;
    std::map<Labels, uint64_t> counts;
    std::function<std::vector<std::pair<Labels, double>>()> gauge;
  };
  void declare(const std::string& name, const std::string& type, const std::string& help);
  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  std::vector<double> bounds_;
};

}  // namespace prewarm::daemon
