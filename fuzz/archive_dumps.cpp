// The JSON files of a foreign checkpoint archive (config.dump, spec.dump, deleted.files), which
// image::import_archive turns into an app spec, mounts and a rootfs diff. The input is the
// three documents separated by NUL bytes; the harness wraps them in a well-formed archive so
// the fuzzer spends its time on the JSON, not on tar checksums.
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <vector>

#include "base/tar.h"
#include "image/k8s_archive.h"
#include "scratch.h"

namespace {

std::vector<std::string_view> split_nul(std::string_view in, size_t max_parts) {
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    size_t nul = in.find('\0');
    if (nul == std::string_view::npos) break;
    parts.push_back(in.substr(0, nul));
    in.remove_prefix(nul + 1);
  }
  parts.push_back(in);
  return parts;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  namespace stdfs = std::filesystem;
  fuzz::clear_scratch();
  auto parts = split_nul({reinterpret_cast<const char*>(data), size}, 3);
  stdfs::path archive = fuzz::scratch_root() / "archive.tar";
  int fd = ::open(archive.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) std::abort();
  {
    tar::Writer w(fd, false, archive.string());
    tar::Meta meta;
    bool ok = w.dir("checkpoint", meta).ok() &&
              // inventory.img: IMG_SERVICE_MAGIC, INVENTORY_MAGIC, an empty entry.
              w.bytes("checkpoint/inventory.img", std::string_view("\x40\x59\x10\x55\x00\x00\x00\x00", 8), meta).ok() &&
              w.bytes("config.dump", parts[0], meta).ok() &&
              (parts.size() < 2 || w.bytes("spec.dump", parts[1], meta).ok()) &&
              (parts.size() < 3 || w.bytes("deleted.files", parts[2], meta).ok()) && w.finish().ok();
    if (!ok) std::abort();
  }
  ::close(fd);
  stdfs::create_directory(fuzz::scratch_root() / "rootfs");
  image::ImportOptions opts;
  opts.rootfs_dir = fuzz::scratch_root() / "rootfs";
  auto imported = image::import_archive(archive, fuzz::scratch_root() / "images" / "fuzz", opts);
  if (imported.ok()) (void)image::foreign_mounts(imported->dir);
  return 0;
}
