// Host compatibility checks with a per-boot memo of successes.
#include "lifecycle/host_check.h"

#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "base/fs.h"
#include "base/sha256.h"
#include "criu/criu.h"
#include "image/image.h"

namespace prewarm::lifecycle {

using engine::Context;
using images::LoadedImage;
namespace {

// Everything a passed check depends on: the image's host facts and CPU record, this boot
// (CPU and kernel can't change within one), and the CRIU binary.
std::string memo_key(const LoadedImage& img) {
  std::string key = images::identity(img);
  if (auto boot = fs::read_file("/proc/sys/kernel/random/boot_id"); boot.ok()) key += *boot;
  std::string criu = criu::criu_binary();
  struct stat st {};
  if (!criu.empty() && ::stat(criu.c_str(), &st) == 0)
    key += criu + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
           std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  return sha256_hex(key);
}

bool known(const std::string& fact) { return !fact.empty() && fact != "unknown"; }

}  // namespace

HostCheck check_host(const Context& ctx, const LoadedImage& img) {
  HostCheck out;
  const image::HostFacts& baked = img.manifest.host;
  const bool cpu_known = ::access((img.dir / image::kHostDir / "cpuinfo.img").c_str(), F_OK) == 0;
  std::vector<std::string> missing;
  if (!cpu_known) missing.push_back("CPU features");
  if (!known(baked.arch)) missing.push_back("architecture");
  if (!known(baked.criu_version)) missing.push_back("CRIU version");
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    out.unchecked = "host facts unknown (" + list + " not recorded in the image); restore attempted";
  }

  auto memo = ctx.stamps_dir() / ("host-ok-" + memo_key(img));
  if (::access(memo.c_str(), F_OK) == 0) return out;

  // One CRIU process for both questions (a kept-open session).
  auto session = criu::Session::open();
  if (!session.ok()) {
    out.blocker = "CRIU is not usable: " + session.error().message();
    return out;
  }
  auto criu_version = session->version();
  if (!criu_version.ok()) {
    out.blocker = "CRIU is not usable: " + criu_version.error().message();
    return out;
  }
  auto here = image::current_host_facts(criu_version->text, baked.runc_version);
  // Only what the image records is compared; the rest is left to CRIU.
  image::HostFacts compared = baked;
  if (!known(compared.arch)) compared.arch = here.arch;
  if (!known(compared.criu_version)) compared.criu_version = here.criu_version;
  out.blocker = image::incompatibility(compared, here);
  if (!out.blocker.empty()) return out;
  if (cpu_known)
    if (Status st = session->cpuinfo_check(img.dir / image::kHostDir); !st.ok()) {
      out.blocker = st.error().to_string();
      return out;
    }
  (void)fs::write_file_atomic(memo, "", 0600);
  return out;
}

}  // namespace prewarm::lifecycle
