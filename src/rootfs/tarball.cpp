// Tarball bases: extracted once per content hash into cache_dir/tar/<sha256>.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/sha256.h"
#include "base/subprocess.h"
#include "rootfs/internal.h"

namespace prewarm::rootfs::detail {
namespace {

std::string human_size(off_t bytes) {
  if (bytes >= (1 << 20)) return std::to_string(bytes >> 20) + " MiB";
  if (bytes >= (1 << 10)) return std::to_string(bytes >> 10) + " KiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

Result<Base> prepare_tarball(const spec::RootfsSource& source,
                             const std::filesystem::path& cache_dir, const Progress& progress) {
  const std::string what = "rootfs.tarball " + source.path.string();
  if (source.path.empty()) return Error("rootfs.tarball: no path given", EINVAL);
  struct stat st {};
  if (::stat(source.path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Error(what + ": does not exist", ENOENT);
    return Error::sys("stat", errno, source.path.string()).with_context("rootfs.tarball");
  }
  if (!S_ISREG(st.st_mode)) return Error(what + ": is not a regular file", EINVAL);
  auto sha = sha256_file(source.path);
  if (!sha.ok()) return std::move(sha).error().with_context("rootfs.tarball");

  auto build = [&](const std::filesystem::path& tmp) -> Status {
    if (progress)
      progress("extracting rootfs tarball " + source.path.filename().string() + " (" +
               human_size(st.st_size) + ")");
    // tar detects gzip/xz/zstd itself. Without include patterns it restores only user.*
    // xattrs; file capabilities (ping and friends) need root to set.
    std::vector<std::string> argv = {"tar", "-xpf", source.path.string(), "--numeric-owner",
                                     "--xattrs"};
    if (::geteuid() == 0) {
      argv.push_back("--xattrs-include=user.*");
      argv.push_back("--xattrs-include=security.capability");
    }
    argv.insert(argv.end(), {"-C", tmp.string()});
    auto out = run_checked(argv, std::chrono::minutes(30));
    if (!out.ok()) return std::move(out).error().with_context("extract");
    if (!looks_like_rootfs(tmp))
      return Error(
          "the archive does not look like a root filesystem (no bin/ or usr/ at its "
          "top); create it with: tar -C <rootfs dir> -czf <file> .",
          EINVAL);
    return {};
  };
  auto dir = build_cached(cache_dir, "tar", *sha, build);
  if (!dir.ok()) return std::move(dir).error().with_context(what);
  return Base{std::move(*dir), "tar:" + *sha, std::nullopt};
}

}  // namespace prewarm::rootfs::detail
