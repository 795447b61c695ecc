// Capturing an overlay upper dir (the app's changes to its rootfs) as tar, and turning such an
// archive back into a directory: once per archive as a shared read-only layer (diff_layer), or
// into one instance's upper dir (apply_diff).
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "rootfs/internal.h"
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
  if (st.ok()) st = extract_diff(tar_file, upper);
  if (!st.ok()) return std::move(st).error().with_context(what);
  return {};
}

Result<std::filesystem::path> diff_layer(const std::filesystem::path& tar_file,
                                         const std::filesystem::path& layers_dir,
                                         std::string_view verified_sha256) {
  const std::string what = "make a rootfs layer of " + tar_file.string();
  // The digest names a directory: nothing but 64 lowercase hex digits.
  if (!verified_sha256.empty() &&
      (verified_sha256.size() != 64 ||
       verified_sha256.find_first_not_of("0123456789abcdef") != std::string_view::npos))
    return Error(what + ": " + std::string(verified_sha256) + " is not a lowercase hex SHA-256",
                 EINVAL);
  Result<std::string> digest = std::string(verified_sha256);
  if (verified_sha256.empty()) digest = sha256_file(tar_file);
  if (!digest.ok()) return std::move(digest).error().with_context(what);
  // build_layer: flock per key, so concurrent callers extract once and all wait for that one;
  // the layer appears only by rename, so one that exists is complete.
  auto layer = detail::build_layer(layers_dir, *digest,
                                    [&](const std::filesystem::path& tmp) -> Status {
                                      // Only a new layer reads the archive: check it is the
                                      // one the digest names (it may have changed since).
                                      if (!verified_sha256.empty()) {
                                        PW_ASSIGN(std::string real, sha256_file(tar_file));
                                        if (real != verified_sha256)
                                          return Error(tar_file.string() + " has SHA-256 " +
                                                       real + ", expected " +
                                                       std::string(verified_sha256));
                                      }
                                      return extract_diff(tar_file, tmp);
                                    });
  if (!layer.ok()) return std::move(layer).error().with_context(what);
  return layer;
}

}  // namespace prewarm::rootfs
