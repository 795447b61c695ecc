// Sealing (digest + manifest) and verified opening of checkpoint images.
#include "image/image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "base/fs.h"
#include "base/sha256.h"

namespace prewarm::image {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

struct Walked {
  std::map<std::string, struct stat> files;  // relative path -> stat
};

// A link anywhere in an image would have restores read what it points to, outside the image.
Error not_a_plain_file(const stdfs::path& dir, const std::string& rel, const struct stat& st) {
  return Error(ErrorKind::kInvalidInput,
               "image " + dir.string() + ": " + rel +
                   (S_ISLNK(st.st_mode) ? " is a symbolic link" : " is not a regular file") +
                   " (images hold only regular files and directories); refusing it");
}

Result<Walked> walk(const stdfs::path& dir) {
  Walked w;
  struct stat top {};
  if (::lstat(dir.c_str(), &top) != 0) return Error::sys("stat", errno, dir.string());
  if (S_ISLNK(top.st_mode))
    return Error(ErrorKind::kInvalidInput, "image " + dir.string() +
                                               " is a symbolic link; an image is a directory of "
                                               "its own, refusing it");
  std::error_code ec;
  stdfs::recursive_directory_iterator it(dir, ec), end;
  if (ec) return Error::sys("read image directory", ec.value(), dir.string());
  for (; it != end; it.increment(ec)) {
    if (ec) return Error::sys("read image directory", ec.value(), dir.string());
    const auto& p = it->path();
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return Error::sys("stat", errno, p.string());
    if (S_ISDIR(st.st_mode)) continue;
    // Lexically: the iterator's paths all start with dir (relative() would resolve every
    // component of both paths, ~20 readlinks a file, on every start).
    std::string rel = p.lexically_relative(dir).string();
    if (rel == kManifestFile || rel == kCriuRestoreStats || rel == kStoreDigestFile) continue;
    if (!S_ISREG(st.st_mode)) return not_a_plain_file(dir, rel, st);
    w.files[rel] = st;
  }
  return w;
}

std::string stamp_key(const struct stat& st) {
  return std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
         std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec);
}

}  // namespace

Status seal(const stdfs::path& dir, Manifest m) {
  PW_ASSIGN(Walked w, walk(dir));
  m.files.clear();
  for (const auto& [rel, st] : w.files) {
    PW_ASSIGN(std::string digest, sha256_file(dir / rel));
    m.files.push_back({rel, static_cast<uint64_t>(st.st_size), digest});
    // The files hold the app's memory (CRIU writes them 0644): owner only.
    for (auto [p, mode] : {std::pair{dir / rel, 0600}, {(dir / rel).parent_path(), 0700}})
      if (::chmod(p.c_str(), static_cast<mode_t>(mode)) != 0)
        return Error::sys("chmod", errno, p.string());
  }
  PW_TRY(fs::write_file_atomic(dir / kManifestFile, to_json(m), 0600));
  if (::chmod(dir.c_str(), 0700) != 0) return Error::sys("chmod", errno, dir.string());
  return {};
}

Result<Manifest> open_verified(const stdfs::path& dir, const VerifyOptions& opts) {
  std::string where = "checkpoint image " + dir.string();
  auto text = fs::read_file(dir / kManifestFile, kMaxManifestBytes);
  if (!text.ok()) {
    if (text.error().errno_value() == ENOENT)
      return Error(where + ": no " + kManifestFile + " (not an image, or an unfinished bake)");
    return std::move(text).error().with_context(where);
  }
  auto parsed = parse_manifest(*text);
  if (!parsed.ok()) return std::move(parsed).error().with_context(where);
  Manifest m = std::move(parsed).value();

  PW_ASSIGN(Walked w, walk(dir));
  std::set<std::string> listed;
  for (const auto& f : m.files) listed.insert(f.path);
  for (const auto& [rel, st] : w.files)
    if (!listed.count(rel))
      return Error(where + ": " + rel + " is not listed in the manifest (image was modified)");

  // Stamps: which files were fully verified, in their current inode state.
  stdfs::path stamp_file;
  json stamps = json::object();
  if (!opts.stamp_dir.empty()) {
    stamp_file = opts.stamp_dir / (sha256_hex(*text) + ".json");
    if (!opts.force_full)
      if (auto s = fs::read_file(stamp_file, 1 << 20); s.ok()) {
        stamps = json::parse(*s, nullptr, false);
        if (!stamps.is_object()) stamps = json::object();
      }
  }
  bool hashed_any = false;
  json fresh = json::object();
  for (const auto& f : m.files) {
    auto it = w.files.find(f.path);
    if (it == w.files.end()) return Error(where + ": " + f.path + " is missing");
    const struct stat& st = it->second;
    if (static_cast<uint64_t>(st.st_size) != f.size)
      return Error(where + ": " + f.path + " has " + std::to_string(st.st_size) +
                   " bytes, the manifest says " + std::to_string(f.size) +
                   " (truncated or modified)");
    std::string key = stamp_key(st);
    if (opts.content_just_verified) {
      hashed_any = true;
    } else if (stamps.value(f.path, "") != key) {
      PW_ASSIGN(std::string digest, sha256_file(dir / f.path));
      if (digest != f.sha256)
        return Error(where + ": " + f.path +
                     " does not match its SHA-256 in the manifest (corrupt or tampered); "
                     "refusing to restore it. Bake the image again.");
      hashed_any = true;
    }
    fresh[f.path] = key;
  }
  if (!stamp_file.empty() && (hashed_any || stamps.size() != fresh.size())) {
    if (fs::make_dirs(opts.stamp_dir).ok())
      (void)fs::write_file_atomic(stamp_file, fresh.dump(), 0600);
  }
  return m;
}

}  // namespace prewarm::image
