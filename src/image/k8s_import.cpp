// Import of container checkpoint archives: safe unpacking into scratch space next to the
// destination, then a prewarm export is verified against the manifest it carries (a foreign
// archive is converted by k8s_foreign.cpp), and the finished image is renamed into place.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <optional>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "image/compress.h"
#include "image/image.h"
#include "image/k8s_archive.h"
#include "image/k8s_internal.h"
#include "base/tar.h"

namespace prewarm::image {
namespace k8s {

Status make_tree(const std::filesystem::path& root, const std::string& rel,
                 const std::string& where) {
  std::filesystem::path p = root;
  for (const auto& comp : std::filesystem::path(rel)) {
    p /= comp;
    if (::mkdir(p.c_str(), 0700) == 0) continue;
    if (errno != EEXIST) return Error::sys("mkdir", errno, p.string());
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return Error(where + ": " + rel + " is both a file and a directory in the archive");
  }
  return {};
}

Status move(const std::filesystem::path& from, const std::filesystem::path& img,
            const std::string& rel) {
  std::filesystem::path r(rel);
  if (r.has_parent_path()) PW_TRY(make_tree(img, r.parent_path().string(), img.string()));
  if (::rename(from.c_str(), (img / r).c_str()) != 0)
    return Error::sys("rename", errno, from.string());
  return {};
}

}  // namespace k8s

namespace {

namespace stdfs = std::filesystem;
using namespace k8s;

std::string entry_kind(char type) {
  switch (type) {
    case '1': return "hard link";
    case '2': return "symbolic link";
    case '3': return "character device";
    case '4': return "block device";
    case '6': return "FIFO";
    default: return std::string("entry of tar type '") + type + "'";
  }
}

// What a prewarm export's manifest (prewarm/manifest.json, which exports write before any
// file) says the rest of the archive holds: each listed file's exact size. Top-level files
// it does not list (config.dump, spec.dump, stats-dump) are metadata, kMaxDumpJson each.
struct Declared {
  std::map<std::string, uint64_t> sizes;  // archive name -> bytes
};

// Checks an entry against the manifest read before it, before a byte of it is written.
Status check_declared(const Declared& d, const std::string& name, uint64_t size,
                      const std::string& where) {
  const std::string manifest = std::string(kArchivePrewarmDir) + "/" + kManifestFile;
  if (auto it = d.sizes.find(name); it != d.sizes.end()) {
    if (size != it->second)
      return Error(ErrorKind::kInvalidInput,
                   where + ": entry " + name + " has " + std::to_string(size) + " bytes, " +
                       manifest + " declares " + std::to_string(it->second) +
                       "; refusing it before unpacking it");
    return {};
  }
  if (starts_with(name, std::string(kCheckpointDir) + "/") ||
      starts_with(name, std::string(kArchivePrewarmDir) + "/"))
    return Error(ErrorKind::kInvalidInput,
                 where + ": " + name + " is not listed in " + manifest +
                     " (the archive was modified)");
  if (size > kMaxDumpJson)
    return Error(ErrorKind::kInvalidInput,
                 where + ": entry " + name + " has " + std::to_string(size) + " bytes, more than " +
                     std::to_string(kMaxDumpJson) + " for a file " + manifest +
                     " does not list; refusing it before unpacking it");
  return {};
}

// Reads the manifest entry (when it is a manifest): what the entries after it may be.
Result<std::optional<Declared>> read_declared(tar::Reader& r, const stdfs::path& dest) {
  PW_ASSIGN(std::string text, r.read_data(kMaxManifestBytes));
  PW_TRY(fs::write_file(dest, text, 0600));
  auto m = parse_manifest(text);
  if (!m.ok()) return std::optional<Declared>();  // assemble_prewarm says what is wrong
  Declared d;
  d.sizes[std::string(kArchivePrewarmDir) + "/" + kManifestFile] = text.size();
  for (const auto& f : m->files) d.sizes[archive_name(f.path)] = f.size;
  // Exports also carry checkpoint/stats-dump at the top level, where checkpointctl looks.
  for (const auto& f : m->files)
    if (f.path == std::string(kCheckpointDir) + "/" + kStatsDump) d.sizes[kStatsDump] = f.size;
  return std::optional<Declared>(std::move(d));
}

// Unpacks only directories and regular files with plain relative names, counting entries and
// bytes against the caps before anything is written.
Result<Extracted> unpack(tar::Reader r, const stdfs::path& into, const ImportOptions& opts,
                         const std::string& where) {
  Extracted ex;
  uint64_t entries = 0;
  std::optional<Declared> declared;
  const std::string manifest_name = std::string(kArchivePrewarmDir) + "/" + kManifestFile;
  for (;;) {
    PW_ASSIGN(std::optional<tar::Entry> e, r.next());
    if (!e) break;
    if (++entries > opts.max_entries)
      return Error(where + ": more than " + std::to_string(opts.max_entries) +
                   " entries; refusing it");
    PW_ASSIGN(std::string name, tar::clean_name(e->name, where));
    if (e->sparse)
      return Error(where + ": entry " + e->name +
                   " is a sparse file, which this importer does not unpack; create the archive "
                   "without --sparse");
    if (e->type == '5') {
      if (!name.empty()) {
        PW_TRY(make_tree(into, name, where));
        ex.dirs.insert(name);
      }
      continue;
    }
    if (e->type != '0' && e->type != '\0' && e->type != '7') {
      std::string target = e->link.empty() ? "" : " (-> " + e->link + ")";
      return Error(where + ": entry " + e->name + target + " is a " + entry_kind(e->type) +
                   "; checkpoint archives hold only regular files and directories, refusing it");
    }
    if (name.empty()) return Error(where + ": a file entry has an empty name");
    if (declared) PW_TRY(check_declared(*declared, name, e->size, where));
    if (e->size > opts.max_bytes || ex.bytes + e->size > opts.max_bytes)
      return Error(ErrorKind::kInvalidInput,
                   where + ": unpacks to more than " + std::to_string(opts.max_bytes) +
                       " bytes (entry " + e->name + " has " + std::to_string(e->size) + "; " +
                       (opts.max_bytes_reason.empty() ? "the import limit"
                                                      : opts.max_bytes_reason) +
                       "); refusing it");
    ex.bytes += e->size;
    stdfs::path rel(name);
    if (rel.has_parent_path()) PW_TRY(make_tree(into, rel.parent_path().string(), where));
    stdfs::path dest = into / rel;
    UniqueFd out(::open(dest.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out.valid()) {
      if (errno == EEXIST)
        return Error(where + ": entry " + e->name + " appears twice; refusing an ambiguous archive");
      return Error::sys("create", errno, dest.string());
    }
    if (name == manifest_name && !declared && e->size <= kMaxManifestBytes) {
      out.reset();
      PW_ASSIGN(declared, read_declared(r, dest));
    } else {
      PW_TRY(r.copy_to(out.get(), dest.string()));
    }
    ex.files.insert(name);
  }
  return ex;
}

// Reads the archive once, through gzip or zstd when its magic says so.
Result<Extracted> extract(const stdfs::path& archive, const stdfs::path& into,
                          const ImportOptions& opts, const std::string& where) {
  UniqueFd in(::open(archive.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::sys("open", errno, archive.string()).with_context(where);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error::sys("stat", errno, archive.string());
  if (!S_ISREG(st.st_mode)) return Error(where + ": not a regular file");
  unsigned char magic[6] = {};
  ssize_t n = ::pread(in.get(), magic, sizeof magic, 0);
  if (n < 0) return Error::sys("read", errno, archive.string());
  auto is = [&](std::initializer_list<unsigned char> m) {
    return static_cast<size_t>(n) >= m.size() && std::equal(m.begin(), m.end(), magic);
  };
  if (is({0xfd, '7', 'z', 'X', 'Z', 0}) || is({'B', 'Z', 'h'}))
    return Error(where + ": xz and bzip2 archives are not supported; decompress it, or export "
                 "it with --compress gzip, zstd or none");
  const Compression c = sniff_compression(magic, static_cast<size_t>(n));
  if (::mkdir(into.c_str(), 0700) != 0) return Error::sys("mkdir", errno, into.string());
  if (c == Compression::kNone) return unpack(tar::Reader(in.get(), where), into, opts, where);

  // In-process gzip/zstd, capped: a small archive must not expand without bound.
  const char* name = c == Compression::kGzip ? "gzip" : "zstd";
  PW_ASSIGN(auto z, Decompressor::make(c, in.get(), opts.max_decompressed_bytes,
                                       where + " (" + name + ")"));
  PW_ASSIGN(Extracted ex, unpack(tar::Reader([&](char* b, size_t len) { return z->read(b, len); },
                                             where),
                                 into, opts, where));
  // The tar ends before the compressed stream does: read its tail too, so a corrupt or
  // truncated end (the gzip CRC, a cut zstd frame) is reported, not ignored.
  PW_TRY(z->drain());
  return ex;
}

// A prewarm export: the manifest it carries decides what the image holds, and every digest is
// checked before the image exists.
Result<ImportedImage> assemble_prewarm(const stdfs::path& x, const Extracted& ex,
                                       const stdfs::path& img, const std::string& where) {
  const std::string manifest_name = std::string(kArchivePrewarmDir) + "/" + kManifestFile;
  PW_ASSIGN(std::string text, fs::read_file(x / manifest_name, kMaxManifestBytes));
  auto parsed = parse_manifest(text);
  if (!parsed.ok()) return std::move(parsed).error().with_context(where + ": " + manifest_name);
  Manifest m = std::move(parsed).value();

  std::set<std::string> listed{manifest_name};
  for (const auto& f : m.files) {
    std::string name = archive_name(f.path);
    if (!ex.files.count(name))
      return Error(where + ": " + name + " is missing (" + manifest_name + " lists it)");
    listed.insert(name);
    PW_TRY(move(x / name, img, f.path));
  }
  // Top-level extras (config.dump, spec.dump, stats-dump, what other tools add) are not part
  // of the image; an unlisted file among prewarm's or CRIU's is tampering.
  for (const auto& f : ex.files)
    if (!listed.count(f) && (starts_with(f, std::string(kCheckpointDir) + "/") ||
                             starts_with(f, std::string(kArchivePrewarmDir) + "/")))
      return Error(where + ": " + f + " is not listed in " + manifest_name +
                   " (the archive was modified)");
  PW_TRY(fs::write_file(img / kManifestFile, text, 0600));
  auto verified = open_verified(img, {});
  if (!verified.ok()) return std::move(verified).error().with_context(where);
  ImportedImage out;
  out.manifest = std::move(verified).value();
  return out;
}


// The caps, lowered to the free space where the archive unpacks, less a margin (5%, at most
// 1 GiB): an archive too large for the disk is refused before it fills it.
ImportOptions bounded(ImportOptions opts, const stdfs::path& dir) {
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return opts;
  const uint64_t avail = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  const uint64_t margin =
      std::min<uint64_t>(uint64_t{vfs.f_blocks} * vfs.f_frsize / 20, uint64_t{1} << 30);
  const uint64_t room = avail > margin ? avail - margin : 0;
  if (room < opts.max_bytes) {
    opts.max_bytes = room;
    opts.max_bytes_reason = dir.string() + " has " + std::to_string(avail) +
                            " bytes free, and an import leaves " + std::to_string(margin);
  }
  // Headers and padding: 1.5 KiB an entry at the most (a pax header, the header, padding).
  const uint64_t framing = opts.max_entries * 1536 + (1 << 20);
  if (opts.max_bytes + framing < opts.max_decompressed_bytes)
    opts.max_decompressed_bytes = opts.max_bytes + framing;
  return opts;
}

}  // namespace

Result<ImportedImage> import_archive(const stdfs::path& archive, const stdfs::path& dest_image_dir,
                                     const ImportOptions& opts) {
  const std::string where = "checkpoint archive " + archive.string();
  std::error_code ec;
  if (stdfs::exists(dest_image_dir, ec) || stdfs::is_symlink(dest_image_dir, ec))
    return Error(where + ": " + dest_image_dir.string() +
                 " already exists; remove it or import under another name");
  stdfs::path parent =
      dest_image_dir.has_parent_path() ? dest_image_dir.parent_path() : stdfs::path(".");
  stdfs::create_directories(parent, ec);
  if (ec) return Error::sys("mkdir", ec.value(), parent.string());

  // Scratch space next to the destination, so the finished image is renamed into place.
  // Locked while the import lives, removed however it ends; gc removes it if the import dies.
  PW_ASSIGN(fs::StagingDir scratch,
            fs::StagingDir::create(parent, ".import-" + dest_image_dir.filename().string() + "-"));
  const stdfs::path x = scratch.path() / "archive";
  const stdfs::path img = scratch.path() / "image";

  PW_ASSIGN(Extracted ex, extract(archive, x, bounded(opts, parent), where));
  if (::mkdir(img.c_str(), 0700) != 0) return Error::sys("mkdir", errno, img.string());

  ImportedImage out;
  if (ex.files.count(std::string(kArchivePrewarmDir) + "/" + kManifestFile)) {
    PW_ASSIGN(out, assemble_prewarm(x, ex, img, where));
  } else if (ex.files.count(kConfigDump) || ex.files.count(kSpecDump)) {
    PW_ASSIGN(out, assemble_foreign(x, ex, img, dest_image_dir, opts, where));
  } else {
    return Error(where + ": neither a prewarm export (no prewarm/manifest.json) nor a "
                 "Kubernetes/CRI-O/Podman checkpoint archive (no config.dump, spec.dump)");
  }
  if (::renameat2(AT_FDCWD, img.c_str(), AT_FDCWD, dest_image_dir.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST)
      return Error(where + ": " + dest_image_dir.string() + " appeared meanwhile; not replacing it");
    return Error::sys("rename", errno, dest_image_dir.string()).with_context(where);
  }
  out.dir = dest_image_dir;
  return out;
}

}  // namespace prewarm::image
