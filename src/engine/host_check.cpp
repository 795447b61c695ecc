// Host compatibility checks with a per-boot memo of successes.
#include "engine/host_check.h"

#include <sys/stat.h>

#include "base/fs.h"
#include "base/sha256.h"
#include "criu/criu.h"
#include "image/image.h"

namespace prewarm::engine {
namespace {

// Everything a passed check depends on: the image's host facts and CPU record, this boot
// (CPU and kernel can't change within one), and the CRIU binary.
std::string memo_key(const LoadedImage& img) {
  std::string key = image::to_json(img.manifest);
  if (auto boot = fs::read_file("/proc/sys/kernel/random/boot_id"); boot.ok()) key += *boot;
  std::string criu = criu::criu_binary();
  struct stat st {};
  if (!criu.empty() && ::stat(criu.c_str(), &st) == 0)
    key += criu + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  return sha256_hex(key);
}

}  // namespace

std::string restore_blocker(const Context& ctx, const LoadedImage& img) {
  auto memo = ctx.stamps_dir() / ("host-ok-" + memo_key(img));
  if (::access(memo.c_str(), F_OK) == 0) return {};

  auto criu_version = criu::version();
  if (!criu_version.ok()) return "CRIU is not usable: " + criu_version.error().message();
  auto here = image::current_host_facts(criu_version->text, img.manifest.host.runc_version);
  if (std::string why = image::incompatibility(img.manifest.host, here); !why.empty()) return why;
  if (Status st = criu::cpuinfo_check(img.dir / image::kHostDir); !st.ok())
    return st.error().to_string();
  (void)fs::write_file_atomic(memo, "", 0600);
  return {};
}

}  // namespace prewarm::engine
