// Bake: run an app once, wait until ready, warm it up, quiesce, checkpoint, store the image.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "base/result.h"
#include "engine/context.h"
#include "registry/registry.h"

namespace prewarm::bake {

using engine::Context;

struct BakeOptions {
  std::string name;  // overrides the spec's name
  // For a rootfs image in a registry; unset: images::registry_options(ctx).
  std::optional<registry::Options> registry;
  // Learn the app's working set with a trial lazy restore (image::kWorkingSetFile), which lazy
  // restores then copy before the app resumes.
  bool working_set = true;
};

struct BakeResult {
  std::string name;
  std::filesystem::path dir;
  std::map<std::string, double> timings_s;  // rootfs, start, ready, warmup, quiesce, checkpoint,
                                            // working-set, seal
  uint64_t image_bytes = 0;
  bool tcp_established = false;
  uint64_t stored_bytes_new = 0;    // compressed bytes this bake added to the store
  uint64_t stored_bytes_total = 0;  // the image's compressed size in the store
  double dedup_ratio = 0;           // share of the raw bytes the store already had
  uint64_t working_set_pages = 0;   // pages the trial restore's app touched (0: none recorded)
  uint64_t lazy_pages = 0;          // pages a lazy restore may serve after resume
  std::string working_set_note;     // why no working set was recorded, when it was not
};

Result<BakeResult> bake(const Context& ctx, const std::filesystem::path& spec_file,
                        const BakeOptions& opts);

// Number of TCP sockets in the network namespace of `pid` that are neither listening nor in
// TIME_WAIT (CRIU can only dump those with --tcp-established).
Result<int> open_tcp_connections(pid_t pid);

}  // namespace prewarm::bake
