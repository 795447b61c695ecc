// A streaming tar codec for checkpoint archives, one sequential pass over a file descriptor:
// the writer emits POSIX ustar (with a pax record for long names and files over 8 GiB), the
// reader understands ustar, GNU (long names, base-256 numbers) and pax headers. The importer
// judges every entry itself, which a general-purpose tar extractor would not let it do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/sha256.h"

namespace prewarm::image::tar {

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

class Writer {
 public:
  // With `hash`, every byte of the archive (before any compression downstream) is fed to it.
  Writer(int fd, bool socket, std::string what, Sha256Stream* hash = nullptr)
      : fd_(fd), socket_(socket), what_(std::move(what)), hash_(hash) {}

  Status dir(const std::string& name, const Meta& meta);
  Status bytes(const std::string& name, std::string_view data, const Meta& meta);
  // Streams a file whose size the caller knows (from a verified manifest); a file that changed
  // size meanwhile is an error, not a corrupt archive.
  Status file(const std::string& name, const std::filesystem::path& src, uint64_t size,
              const Meta& meta);
  // An overlayfs whiteout: a 0/0 character device.
  Status whiteout(const std::string& name, int64_t mtime);
  // The end-of-archive marker.
  Status finish();

 private:
  Status header(const std::string& name, char type, uint64_t size, const Meta& meta);
  Status block(const std::string& name, char type, uint64_t size, const Meta& meta);
  Status pad(uint64_t size);
  Status out(const char* data, size_t n) {
    if (hash_) hash_->update(data, n);
    return write_all(fd_, data, n, socket_, what_);
  }

  int fd_;
  bool socket_;
  std::string what_;
  Sha256Stream* hash_;
};

struct Entry {
  std::string name;  // as stored (pax and GNU long names applied)
  std::string link;
  char type = '0';   // tar typeflag: '0' file, '5' directory, '1' hard link, '2' symlink, ...
  uint64_t size = 0;
  unsigned mode = 0;
  bool sparse = false;
};

class Reader {
 public:
  Reader(int fd, std::string where) : fd_(fd), where_(std::move(where)) {}

  // The next entry, or nullopt at the end-of-archive marker. Unconsumed data of the previous
  // entry is skipped.
  Result<std::optional<Entry>> next();
  // Copies the current entry's data to out_fd (named `dest` in errors).
  Status copy_to(int out_fd, const std::string& dest);
  // Where the current entry's header (or the end marker) begins.
  uint64_t header_offset() const { return header_offset_; }
  // "<where> (tar header at byte N)", for errors about the current entry.
  std::string at() const;

 private:
  Status check_sum(const char* header);
  Status parse_pax(const std::string& data, std::map<std::string, std::string>& pax);
  Status read_exact(char* buf, size_t n);
  Status skip(uint64_t n);

  int fd_;
  std::string where_;
  uint64_t offset_ = 0;
  uint64_t header_offset_ = 0;
  uint64_t remaining_ = 0;
  uint64_t padding_ = 0;
};

}  // namespace prewarm::image::tar
