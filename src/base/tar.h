// A streaming tar codec, one sequential pass: the writer emits POSIX ustar (with a pax record
// for long names and files over 8 GiB), the reader understands ustar, GNU (long names,
// base-256 numbers) and pax headers (SCHILY.xattr.* included). Callers judge every entry
// themselves (checkpoint import, the rootfs diff extractor), which a general-purpose tar
// extractor would not let them do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/sha256.h"

namespace prewarm::tar {

inline constexpr size_t kBlock = 512;

// Writes all of data; to a socket (a compressor's stdin) without raising SIGPIPE.
Status write_all(int fd, const char* data, size_t n, bool socket, const std::string& what);
// Reads up to n bytes, fewer only at end of input.
Result<size_t> read_full(int fd, char* buf, size_t n, const std::string& what);

// A member name as a plain relative path ("a/b"; "" for the archive root "./"). Refuses
// absolute names and "..": nothing may land outside the directory it is unpacked into.
Result<std::string> clean_name(std::string_view raw, const std::string& where);

struct Meta {
  unsigned mode = 0600;
  unsigned uid = 0, gid = 0;
  int64_t mtime = 0;
};

// Where a Writer puts its bytes (a file, a compressor): all of them, or an error.
using Sink = std::function<Status(const char* data, size_t n)>;

class Writer {
 public:
  // With `hash`, every byte of the archive (before any compression downstream) is fed to it.
  Writer(int fd, bool socket, std::string what, Sha256Stream* hash = nullptr);
  Writer(Sink sink, std::string what, Sha256Stream* hash = nullptr)
      : sink_(std::move(sink)), what_(std::move(what)), hash_(hash) {}

  Status dir(const std::string& name, const Meta& meta);
  Status bytes(const std::string& name, std::string_view data, const Meta& meta);
  // Streams a file whose size the caller knows (from a verified manifest); a file that changed
  // size meanwhile is an error, not a corrupt archive.
  Status file(const std::string& name, const std::filesystem::path& src, uint64_t size,
              const Meta& meta);
  // A symbolic link to `target` (a pax linkpath record when it is over 100 bytes).
  Status symlink(const std::string& name, const std::string& target, const Meta& meta);
  // An overlayfs whiteout: a 0/0 character device.
  Status whiteout(const std::string& name, int64_t mtime);
  // The end-of-archive marker.
  Status finish();

 private:
  Status header(const std::string& name, char type, uint64_t size, const Meta& meta,
                const std::string& link = {});
  Status block(const std::string& name, char type, uint64_t size, const Meta& meta,
               const std::string& link = {});
  Status pad(uint64_t size);
  Status out(const char* data, size_t n) {
    if (hash_) hash_->update(data, n);
    return sink_(data, n);
  }

  Sink sink_;
  std::string what_;
  Sha256Stream* hash_;
};

struct Entry {
  std::string name;  // as stored (pax and GNU long names applied)
  std::string link;
  char type = '0';   // tar typeflag: '0' file, '5' directory, '1' hard link, '2' symlink, ...
  uint64_t size = 0;
  unsigned mode = 0;  // permission bits (07777)
  bool sparse = false;
  uint64_t uid = 0, gid = 0;  // numeric; pax uid/gid override the header's
  int64_t mtime = 0;          // seconds; pax mtime overrides the header's
  uint32_t mtime_nsec = 0;    // from a pax mtime with a fraction
  uint32_t dev_major = 0, dev_minor = 0;  // character and block devices
  // Extended attributes from pax SCHILY.xattr.<name> records (GNU tar --xattrs), name -> value.
  std::map<std::string, std::string> xattrs;
};

// Where a Reader gets its bytes: fills buf with up to n bytes, fewer only at end of input.
using Source = std::function<Result<size_t>(char* buf, size_t n)>;

class Reader {
 public:
  Reader(int fd, std::string where);
  Reader(Source source, std::string where)
      : source_(std::move(source)), where_(std::move(where)) {}

  // The next entry, or nullopt at the end-of-archive marker. Unconsumed data of the previous
  // entry is skipped.
  Result<std::optional<Entry>> next();
  // Copies the current entry's data to out_fd (named `dest` in errors).
  Status copy_to(int out_fd, const std::string& dest);
  // Reads the current entry's data, up to max bytes (more is an error).
  Result<std::string> read_data(size_t max);
  // Where the current entry's header (or the end marker) begins.
  uint64_t header_offset() const { return header_offset_; }
  // "<where> (tar header at byte N)", for errors about the current entry.
  std::string at() const;

 private:
  Status check_sum(const char* header);
  Status parse_pax(const std::string& data, std::map<std::string, std::string>& pax);
  Status read_exact(char* buf, size_t n);
  Status skip(uint64_t n);

  Source source_;
  std::string where_;
  uint64_t offset_ = 0;
  uint64_t header_offset_ = 0;
  uint64_t remaining_ = 0;
  uint64_t padding_ = 0;
};

}  // namespace prewarm::tar
