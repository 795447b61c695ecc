// Capturing an overlay upper dir (the app's changes to its rootfs) as tar, and re-applying it.
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/subprocess.h"
#include "rootfs/rootfs.h"

namespace prewarm::rootfs {
namespace {

constexpr auto kTarTimeout = std::chrono::minutes(30);

// Whiteouts are 0/0 character devices (tar keeps those as is); opaque and redirected
// directories are marked with trusted.overlay.* xattrs, which tar only stores and restores
// when asked. File capabilities (security.capability) ride along too.
std::vector<std::string> tar_args(std::string_view mode, const std::filesystem::path& tar_file,
                                  const std::filesystem::path& dir) {
  return {"tar",
          "--xattrs",
          "--xattrs-include=trusted.*",
          "--xattrs-include=user.*",
          "--xattrs-include=security.capability",
          "--numeric-owner",
          std::string(mode),
          tar_file.string(),
          "-C",
          dir.string()};
}

}  // namespace

Status capture_diff(const std::filesystem::path& upper, const std::filesystem::path& tar_file) {
  auto argv = tar_args("-cpf", tar_file, upper);
  argv.push_back(".");
  auto out = run_checked(argv, kTarTimeout);
  if (!out.ok()) {
    ::unlink(tar_file.c_str());  // a partial archive is worse than none
    return std::move(out).error().with_context("capture rootfs changes from " + upper.string());
  }
  return {};
}

Status apply_diff(const std::filesystem::path& tar_file, const std::filesystem::path& upper) {
  const std::string what = "apply rootfs changes " + tar_file.string() + " to " + upper.string();
  Status st = fs::make_dirs(upper, 0755);
  if (!st.ok()) return std::move(st).error().with_context(what);
  auto out = run_checked(tar_args("-xpf", tar_file, upper), kTarTimeout);
  if (!out.ok()) return std::move(out).error().with_context(what);
  return {};
}

}  // namespace prewarm::rootfs
