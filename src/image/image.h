// A checkpoint image on disk: IMAGE_DIR/{manifest.json, checkpoint/ (CRIU files),
// rootfs-diff.tar, host/cpuinfo.img}. Sealing records digests; opening verifies them.
#pragma once

#include <filesystem>
#include <string>

#include "base/result.h"
#include "image/manifest.h"

namespace prewarm::image {

inline constexpr const char* kCheckpointDir = "checkpoint";
inline constexpr const char* kRootfsDiff = "rootfs-diff.tar";
// What the app had in /dev/shm at the checkpoint (only when it had something): /dev/shm is a
// per-instance directory bound in, so CRIU neither dumps nor untars it.
inline constexpr const char* kDevShm = "dev-shm.tar";
inline constexpr const char* kHostDir = "host";
// CRIU writes restore statistics into the image dir it restores from; that file is neither
// sealed nor verified. (Symlinked per-restore views don't work: CRIU opens images after it
// has moved into the restored mount namespace, where absolute links dangle.)
inline constexpr const char* kCriuRestoreStats = "checkpoint/stats-restore";
// In an image directory that is a copy of a stored image: the store's manifest digest of what
// it holds ("sha256:<hex>"), written when it was unpacked (or stored, for a bake), in the same
// rename that puts the files in place. Not sealed: the store, not the manifest, vouches for it.
inline constexpr const char* kStoreDigestFile = ".store-digest";

// Digests every regular file under dir (except the manifest), fills m.files and writes
// manifest.json (0600). The directory is made 0700: checkpoints hold the app's memory.
Status seal(const std::filesystem::path& dir, Manifest m);

struct VerifyOptions {
  // Where per-image verification stamps live; when a file's inode, size, mtime and ctime
  // still match the stamp made at the last full verification, it is not hashed again
  // (any write changes ctime, which user space cannot set back).
  std::filesystem::path stamp_dir;
  bool force_full = false;
  // The caller has just checked every file's SHA-256 itself (the store does while unpacking):
  // stamps are recorded without hashing again. Sizes and the file list are still checked.
  bool content_just_verified = false;
};

// Reads the manifest and checks every listed file (present, size, SHA-256) and that no
// unlisted file is in the image. Errors name the file and what is wrong with it.
Result<Manifest> open_verified(const std::filesystem::path& dir, const VerifyOptions& opts);

}  // namespace prewarm::image
