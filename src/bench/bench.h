// `prewarm bench startup`: cold start vs prewarm restore (each backend) vs a plain
// `runc restore` of the same checkpoint (the baseline), measured in one run, as JSON; and
// `prewarm bench store`.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/context.h"

namespace prewarm::bench {

using engine::Context;

struct BenchOptions {
  std::filesystem::path spec_file;
  int runs = 5;
  int concurrency = 1;
  bool skip_cold = false;
};

// Returns the JSON report (medians, every sample, ratios, where the time went).
Result<std::string> bench_startup(const Context& ctx, const BenchOptions& opts);

struct StoreBenchOptions {
  std::filesystem::path spec_file;
  int runs = 5;
  std::string registry;  // REGISTRY/REPO to push to and pull from; empty: no registry part
  // KEY=VALUE: a third bake with this env var set (the same base and code, configured
  // differently) shows what a related app on the same base shares; empty: no third bake.
  std::string variant_env;
};

// Bytes on disk and on the wire (raw CRIU files, a zstd tar of them, the store), dedup of a
// second bake, restore from the store (its decompressed copy, and rebuilt from the blobs) vs from
// the raw CRIU files, push/pull throughput.
Result<std::string> bench_store(const Context& ctx, const StoreBenchOptions& opts);

struct LazyBenchOptions {
  std::vector<std::filesystem::path> spec_files;  // e.g. a heap-size sweep, smallest first
  int runs = 5;
};

// Per app: plain eager `runc restore` (baseline) vs prewarm eager vs prewarm lazy, to ready,
// and a lazy restore's time until all memory is resident; ratios; and how lazy restore → ready
// grows from the first app to the last.
Result<std::string> bench_lazy(const Context& ctx, const LazyBenchOptions& opts);

struct PoolBenchOptions {
  std::vector<std::filesystem::path> spec_files;
  int claims = 200;
  int pool_size = 4;
  int restores = 10;      // restore → ready samples, for comparison
  int interval_ms = 20;   // between claims
};

// Per app: claim → ready from a pool kept full in the background (median, p99), restore →
// ready of the same image, and how fast a pool refills (restores per second).
Result<std::string> bench_pool(const Context& ctx, const PoolBenchOptions& opts);

struct MemoryBenchOptions {
  std::filesystem::path spec_file;
  int instances = 16;
  unsigned pages_to_scan = 2000;  // ksmd's, while the benchmark runs (restored afterwards)
};

// N instances' memory (PSS) without and with KSM merging, against one instance alone; ksmd's
// CPU time; restore → ready in both modes.
Result<std::string> bench_memory(const Context& ctx, const MemoryBenchOptions& opts);

struct ServeBenchOptions {
  std::filesystem::path spec_file;
  int runs = 10;
  bool skip_cold = false;
};

// `prewarm serve`: first request from zero, first request with a warm pool, restore → ready and
// cold start → ready, alternating.
Result<std::string> bench_serve(const Context& ctx, const ServeBenchOptions& opts);

}  // namespace prewarm::bench
