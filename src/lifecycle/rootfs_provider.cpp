// Overlay and pre-existing roots for instances.
#include "lifecycle/rootfs_provider.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <string>

#include "base/fs.h"
#include "base/log.h"
#include "rootfs/rootfs.h"

namespace prewarm::lifecycle {
namespace {

class Overlay final : public RootfsProvider {
 public:
  explicit Overlay(OverlayRootfs o) : o_(std::move(o)) {}

  Result<std::filesystem::path> prepare(const std::filesystem::path& dir,
                                        RootfsPurpose purpose) override {
    auto r = mount(dir, purpose);
    if (!r.ok()) (void)release(dir);
    return r;
  }

  Status release(const std::filesystem::path& dir) override { return release_overlay(dir); }

  std::filesystem::path dev_dir(const std::filesystem::path& root) const override {
    return with_dev_layer_ ? root / "dev" : std::filesystem::path();
  }

  // The base directory's inode and birth time name one build of it (a base built again is a
  // new directory); the diff is named by its verified digest.
  std::string files_identity() const override {
    if (!o_.diff_tar.empty() && o_.diff_sha256.empty()) return "";
    struct statx sx {};
    if (::statx(AT_FDCWD, o_.base.c_str(), 0, STATX_INO | STATX_BTIME | STATX_CTIME, &sx) != 0)
      return "";
    const auto& born = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime : sx.stx_ctime;
    return o_.base.string() + ":" + std::to_string(sx.stx_ino) + ":" +
           std::to_string(born.tv_sec) + "." + std::to_string(born.tv_nsec) + "|" +
           o_.diff_sha256;
  }

 private:
  Result<std::filesystem::path> mount(const std::filesystem::path& dir, RootfsPurpose purpose) {
    // /dev ready made, shared read-only under every instance's upper (15 files fewer to create
    // per start); where that layer can't be made, the instance gets a /dev of its own.
    std::vector<std::filesystem::path> lowers = {o_.base};
    with_dev_layer_ = false;
    if (!o_.layers_dir.empty()) {
      auto dev = rootfs::dev_layer(o_.layers_dir);
      if (dev.ok()) {
        lowers.insert(lowers.begin(), *dev);
        with_dev_layer_ = true;
      } else {
        log::debug(dev.error().message() + "; each instance gets a /dev directory of its own");
      }
    }
    if (purpose == RootfsPurpose::kRestore) {
      // The app's changes up to the checkpoint as a read-only layer on top, extracted once per
      // image; every instance writes to its own empty upper.
      if (!o_.diff_tar.empty()) {
        PW_ASSIGN(auto layer, rootfs::diff_layer(o_.diff_tar, o_.layers_dir, o_.diff_sha256));
        lowers.insert(lowers.begin(), layer);
      }
      PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(lowers, dir));
      return ov.merged;
    }
    PW_ASSIGN(rootfs::Overlay ov, rootfs::mount_overlay(lowers, dir));
    // Through the merged view, so new parent directories don't mask the base's modes.
    PW_TRY(rootfs::place_files(o_.files, ov.merged));
    return ov.merged;
  }

  OverlayRootfs o_;
  bool with_dev_layer_ = false;
};

class Existing final : public RootfsProvider {
 public:
  explicit Existing(std::filesystem::path root) : root_(std::move(root)) {}
  Result<std::filesystem::path> prepare(const std::filesystem::path&, RootfsPurpose) override {
    return root_;
  }
  Status release(const std::filesystem::path&) override { return {}; }

 private:
  std::filesystem::path root_;
};

}  // namespace

Status release_overlay(const std::filesystem::path& dir) {
  PW_TRY(rootfs::unmount(dir / "rootfs"));
  for (const char* sub : {"upper", "work", "rootfs"}) PW_TRY(fs::remove_all(dir / sub));
  return {};
}

std::unique_ptr<RootfsProvider> make_overlay_rootfs(OverlayRootfs o) {
  return std::make_unique<Overlay>(std::move(o));
}

std::unique_ptr<RootfsProvider> make_existing_rootfs(std::filesystem::path root) {
  return std::make_unique<Existing>(std::move(root));
}

}  // namespace prewarm::lifecycle
