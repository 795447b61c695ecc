// A checkpoint archive as bytes (image::import_archive): tar, gzip or zstd, a prewarm export or
// a Kubernetes/CRI-O/Podman one, imported over an empty rootfs directory.
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "image/k8s_archive.h"
#include "scratch.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  namespace stdfs = std::filesystem;
  fuzz::clear_scratch();
  stdfs::path archive =
      fuzz::write_scratch("archive.tar", {reinterpret_cast<const char*>(data), size});
  stdfs::create_directory(fuzz::scratch_root() / "rootfs");
  image::ImportOptions opts;
  opts.name = "fuzz";
  opts.rootfs_dir = fuzz::scratch_root() / "rootfs";
  // Caps small enough that a fuzz input cannot fill the disk.
  opts.max_bytes = 8 << 20;
  opts.max_entries = 1000;
  opts.max_decompressed_bytes = 16 << 20;
  (void)image::import_archive(archive, fuzz::scratch_root() / "images" / "fuzz", opts);
  return 0;
}
