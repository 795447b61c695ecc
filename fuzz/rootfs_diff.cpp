// A rootfs diff archive (rootfs::extract_diff) unpacked into an empty directory: what an image
// from a registry or an imported archive carries as rootfs-diff.tar. Afterwards nothing may
// exist outside that directory.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "rootfs/rootfs.h"
#include "scratch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  namespace stdfs = std::filesystem;
  fuzz::clear_scratch();
  stdfs::path tar = fuzz::write_scratch("diff.tar", {reinterpret_cast<const char*>(data), size});
  stdfs::path dest = fuzz::scratch_root() / "upper";
  stdfs::create_directory(dest);
  (void)rootfs::extract_diff(tar, dest);
  // Only diff.tar and upper/ may be in the scratch directory.
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(fuzz::scratch_root(), ec))
    if (e.path() != tar && e.path() != dest) std::abort();
  return 0;
}
