// An instance's root filesystem: an overlay of the image's base with the checkpoint's rootfs
// changes (prewarm's own instances), or a root that already exists (a pod's, prepared by the
// container runtime from the container image).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "spec/app_spec.h"

namespace prewarm::lifecycle {

enum class RootfsPurpose { kRestore, kCold };

class RootfsProvider {
 public:
  virtual ~RootfsProvider() = default;
  // Makes the root under instance_dir and returns its path: for a restore, what the app had at
  // the checkpoint; for a cold start, the base plus the spec's files. On failure nothing is left
  // mounted.
  virtual Result<std::filesystem::path> prepare(const std::filesystem::path& instance_dir,
                                                RootfsPurpose purpose) = 0;
  // Undoes prepare; not prepared (or half) is fine. Works from the directory alone.
  virtual Status release(const std::filesystem::path& instance_dir) = 0;
  // Names the files a restore's root holds (one build of the base and the image's verified
  // diff), so that a check of them can be remembered; "" when they are not known (a root that
  // exists already, e.g. a pod's).
  virtual std::string files_identity() const { return ""; }
  // The directory to bind at /dev when the prepared root brings its /dev ready made (an overlay
  // over rootfs::dev_layer); empty: the instance gets a /dev directory of its own.
  virtual std::filesystem::path dev_dir(const std::filesystem::path& /*root*/) const { return {}; }
};

struct OverlayRootfs {
  std::filesystem::path base;      // read-only base rootfs
  std::filesystem::path diff_tar;  // the checkpoint's rootfs changes ("" : none)
  std::string diff_sha256;         // its verified SHA-256 ("" : hash it)
  std::filesystem::path layers_dir;  // where diffs are extracted once per image
  std::vector<spec::FileEntry> files;  // placed for cold starts
};
std::unique_ptr<RootfsProvider> make_overlay_rootfs(OverlayRootfs o);

// A root that exists already (never mounted or removed here).
std::unique_ptr<RootfsProvider> make_existing_rootfs(std::filesystem::path root);

// Undoes what an overlay provider may have made under instance_dir (for recovery).
Status release_overlay(const std::filesystem::path& instance_dir);

}  // namespace prewarm::lifecycle
