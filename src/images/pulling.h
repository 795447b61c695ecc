// An image still being pulled, restorable before its last pack arrives: the pull holds
// STATE/pulls/NAME.lock (flock) for as long as it runs; STATE/pulls/NAME.json names the pulled
// manifest once it is staged in the store, and the lazy copy (every file but the pages, and
// the pages a lazy restore copies first) once that is made.
// A restore then serves the other pages from the packs as they arrive; a killed pull leaves
// only files nobody holds, which count for nothing.
#pragma once

#include <filesystem>
#include <optional>
#include <set>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "engine/context.h"

namespace prewarm::images {

struct PullInProgress {
  std::string manifest_digest;       // in the store, not yet indexed
  std::filesystem::path lazy_copy;   // empty until the image can be restored
  std::filesystem::path lock;        // held while the pull runs
};

// Held by a pull of NAME for its whole run.
class PullMarker {
 public:
  // Refused (kConflict) while another pull of NAME runs here.
  static Result<PullMarker> take(const engine::Context& ctx, const std::string& name);
  PullMarker(PullMarker&&) noexcept = default;
  PullMarker& operator=(PullMarker&&) noexcept = delete;
  ~PullMarker();

  // The pulled image's manifest is in the store (not indexed): gc keeps its lazy copy from now.
  Status staged(const std::string& manifest_digest);
  // Restores may start: the lazy copy is at `lazy_copy`.
  Status restorable(const std::string& manifest_digest, const std::filesystem::path& lazy_copy);

 private:
  PullMarker(std::filesystem::path json, std::filesystem::path lock, UniqueFd fd)
      : json_(std::move(json)), lock_(std::move(lock)), fd_(std::move(fd)) {}
  std::filesystem::path json_, lock_;
  UniqueFd fd_;
};

// Whether a process holds `lock` (a pull's).
bool pull_lock_held(const std::filesystem::path& lock);

// The pull of NAME running here, if any. `wait`: while it runs and cannot restore yet, wait for
// it (saying so once through ctx.say); then the result has its lazy copy, or is nullopt when the
// pull ended meanwhile.
Result<std::optional<PullInProgress>> pull_in_progress(const engine::Context& ctx,
                                                       const std::string& name, bool wait);

// The manifest digests of images whose pulls run here and have staged their manifest (gc
// keeps their lazy copies).
std::set<std::string> pulling_digests(const engine::Context& ctx);

}  // namespace prewarm::images
