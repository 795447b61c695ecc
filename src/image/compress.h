// Streaming gzip (zlib) and zstd (libzstd) for checkpoint archives, in-process: export
// compresses the tar as it is written, import decompresses it as it is read, with a cap on
// what a stream may expand to and a check that it ends where its format says it ends.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "image/k8s_archive.h"

namespace prewarm::image {

// Compresses into out_fd (not owned). finish() writes the stream's end (gzip trailer, zstd
// frame end); without it the output is truncated.
class Compressor {
 public:
  // level: 0 means the format's default (gzip 6, zstd 3).
  static Result<std::unique_ptr<Compressor>> make(Compression c, int out_fd, std::string what,
                                                  int level = 0);
  virtual ~Compressor() = default;
  virtual Status write(const char* data, size_t n) = 0;
  virtual Status finish() = 0;
};

// Decompresses what it reads from in_fd (not owned). read() fills up to n bytes, fewer only at
// the end of the stream; it fails, naming `what`, when the data is corrupt, when the input
// ends before the stream does (a truncated download), or when the output would exceed
// max_output bytes. Concatenated gzip members and zstd frames are read as one stream.
class Decompressor {
 public:
  static Result<std::unique_ptr<Decompressor>> make(Compression c, int in_fd,
                                                    uint64_t max_output, std::string what);
  virtual ~Decompressor() = default;
  virtual Result<size_t> read(char* buf, size_t n) = 0;
  // Reads and checks the rest of the stream (its trailer, checksums), discarding the data.
  Status drain();
};

// kGzip or kZstd from a file's first bytes; kNone otherwise.
Compression sniff_compression(const unsigned char* magic, size_t n);

}  // namespace prewarm::image
