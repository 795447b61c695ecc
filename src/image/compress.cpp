// gzip through zlib and zstd through libzstd, streaming both ways.
#include "image/compress.h"

#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "base/tar.h"

namespace prewarm::image {
namespace {

constexpr size_t kBuf = 256 << 10;

class GzipCompressor : public Compressor {
 public:
  GzipCompressor(int fd, std::string what) : fd_(fd), what_(std::move(what)), out_(kBuf) {}
  ~GzipCompressor() override {
    if (init_) deflateEnd(&z_);
  }
  Status init(int level) {
    // windowBits 15 + 16: a gzip wrapper (header without name or time, like gzip -n).
    if (deflateInit2(&z_, level ? level : 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      return Error(what_ + ": zlib deflateInit2 failed");
    init_ = true;
    return {};
  }
  Status write(const char* data, size_t n) override { return run(data, n, Z_NO_FLUSH); }
  Status finish() override { return run(nullptr, 0, Z_FINISH); }

 private:
  Status run(const char* data, size_t n, int flush) {
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    z_.avail_in = static_cast<uInt>(n);  // tar writes at most 1 MiB at a time
    for (;;) {
      z_.next_out = reinterpret_cast<Bytef*>(out_.data());
      z_.avail_out = static_cast<uInt>(out_.size());
      int rc = deflate(&z_, flush);
      if (rc == Z_STREAM_ERROR) return Error(what_ + ": gzip compression failed");
      size_t have = out_.size() - z_.avail_out;
      if (have) PW_TRY(tar::write_all(fd_, out_.data(), have, false, what_));
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0))
        return {};
    }
  }
  int fd_;
  std::string what_;
  std::vector<char> out_;
  z_stream z_{};
  bool init_ = false;
};

class ZstdCompressor : public Compressor {
 public:
  ZstdCompressor(int fd, std::string what) : fd_(fd), what_(std::move(what)), out_(kBuf) {}
  ~ZstdCompressor() override { ZSTD_freeCCtx(c_); }
  Status init(int level) {
    c_ = ZSTD_createCCtx();
    if (!c_) return Error(what_ + ": out of memory for a zstd context");
    ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, level ? level : 3);
    ZSTD_CCtx_setParameter(c_, ZSTD_c_checksumFlag, 1);
    // Worker threads, when this libzstd has them (zstd -T0 did the same); an error is fine.
    unsigned workers = std::min(4u, std::max(1u, std::thread::hardware_concurrency()));
    (void)ZSTD_CCtx_setParameter(c_, ZSTD_c_nbWorkers, static_cast<int>(workers));
    return {};
  }
  Status write(const char* data, size_t n) override { return run(data, n, ZSTD_e_continue); }
  Status finish() override { return run(nullptr, 0, ZSTD_e_end); }

 private:
  Status run(const char* data, size_t n, ZSTD_EndDirective mode) {
    ZSTD_inBuffer in{data, n, 0};
    for (;;) {
      ZSTD_outBuffer out{out_.data(), out_.size(), 0};
      size_t left = ZSTD_compressStream2(c_, &out, &in, mode);
      if (ZSTD_isError(left))
        return Error(what_ + ": zstd compression failed: " + ZSTD_getErrorName(left));
      if (out.pos) PW_TRY(tar::write_all(fd_, out_.data(), out.pos, false, what_));
      if (mode == ZSTD_e_end ? left == 0 : in.pos == in.size) return {};
    }
  }
  int fd_;
  std::string what_;
  std::vector<char> out_;
  ZSTD_CCtx* c_ = nullptr;
};

// Shared by both decompressors: buffered input from the fd and the output cap.
class Base : public Decompressor {
 public:
  Base(int fd, uint64_t max, std::string what)
      : fd_(fd), max_(max), what_(std::move(what)), in_(kBuf) {}

  Result<size_t> read(char* buf, size_t n) override {
    size_t got = 0;
    while (got < n && !done_) {
      if (in_pos_ == in_len_ && !eof_) {
        PW_ASSIGN(in_len_, tar::read_full(fd_, in_.data(), in_.size(), what_));
        in_pos_ = 0;
        eof_ = in_len_ < in_.size();
      }
      PW_ASSIGN(size_t made, step(buf + got, n - got));
      got += made;
      produced_ += made;
      if (produced_ > max_)
        return Error(what_ + ": decompresses to more than " + std::to_string(max_) +
                     " bytes; refusing it (a decompression bomb, or raise the import cap)");
      if (made == 0 && in_pos_ == in_len_ && eof_) {
        if (!at_frame_end())
          return Error(what_ + ": the compressed stream ends early (truncated download?)");
        done_ = true;
      }
    }
    return got;
  }

 protected:
  // Decompresses from in_[in_pos_, in_len_) into out, advancing in_pos_.
  virtual Result<size_t> step(char* out, size_t n) = 0;
  // Whether the input consumed so far ends exactly at the end of a gzip member/zstd frame.
  virtual bool at_frame_end() const = 0;

  int fd_;
  uint64_t max_;
  std::string what_;
  std::vector<char> in_;
  size_t in_pos_ = 0, in_len_ = 0;
  bool eof_ = false, done_ = false;
  uint64_t produced_ = 0;
};

class GzipDecompressor : public Base {
 public:
  using Base::Base;
  ~GzipDecompressor() override {
    if (init_) inflateEnd(&z_);
  }
  Status init() {
    if (inflateInit2(&z_, 15 + 16) != Z_OK) return Error(what_ + ": zlib inflateInit2 failed");
    init_ = true;
    return {};
  }

 protected:
  Result<size_t> step(char* out, size_t n) override {
    if (member_done_) {
      if (in_pos_ == in_len_) return size_t{0};
      // Another member follows (gzip allows concatenation); anything else is garbage.
      inflateReset(&z_);
      member_done_ = false;
    }
    z_.next_in = reinterpret_cast<Bytef*>(in_.data() + in_pos_);
    z_.avail_in = static_cast<uInt>(in_len_ - in_pos_);
    z_.next_out = reinterpret_cast<Bytef*>(out);
    z_.avail_out = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    int rc = inflate(&z_, Z_NO_FLUSH);
    in_pos_ = in_len_ - z_.avail_in;
    size_t made = static_cast<size_t>(reinterpret_cast<char*>(z_.next_out) - out);
    if (rc == Z_STREAM_END) {
      member_done_ = true;
    } else if (rc == Z_BUF_ERROR) {
      // No progress possible: more input is needed (handled by the caller at EOF).
    } else if (rc != Z_OK) {
      return Error(what_ + ": corrupt gzip data" + (z_.msg ? std::string(" (") + z_.msg + ")" : ""));
    }
    return made;
  }
  bool at_frame_end() const override { return member_done_; }

 private:
  z_stream z_{};
  bool init_ = false, member_done_ = false;
};

class ZstdDecompressor : public Base {
 public:
  using Base::Base;
  ~ZstdDecompressor() override { ZSTD_freeDCtx(d_); }
  Status init() {
    d_ = ZSTD_createDCtx();
    if (!d_) return Error(what_ + ": out of memory for a zstd context");
    return {};
  }

 protected:
  Result<size_t> step(char* out, size_t n) override {
    ZSTD_inBuffer in{in_.data(), in_len_, in_pos_};
    ZSTD_outBuffer o{out, n, 0};
    const size_t before = in_pos_;
    size_t rc = ZSTD_decompressStream(d_, &o, &in);
    in_pos_ = in.pos;
    if (ZSTD_isError(rc))
      return Error(what_ + ": corrupt zstd data (" + ZSTD_getErrorName(rc) + ")");
    // 0: a frame is complete and flushed. A call that moved nothing says nothing new (at a
    // frame boundary it returns the next frame's header size).
    if (in.pos != before || o.pos != 0) frame_end_ = rc == 0;
    started_ = true;
    return o.pos;
  }
  bool at_frame_end() const override { return frame_end_ || !started_; }

 private:
  ZSTD_DCtx* d_ = nullptr;
  bool frame_end_ = false, started_ = false;
};

}  // namespace

Result<std::unique_ptr<Compressor>> Compressor::make(Compression c, int out_fd, std::string what,
                                                     int level) {
  if (c == Compression::kGzip) {
    auto z = std::make_unique<GzipCompressor>(out_fd, std::move(what));
    PW_TRY(z->init(level));
    return std::unique_ptr<Compressor>(std::move(z));
  }
  if (c == Compression::kZstd) {
    auto z = std::make_unique<ZstdCompressor>(out_fd, std::move(what));
    PW_TRY(z->init(level));
    return std::unique_ptr<Compressor>(std::move(z));
  }
  return Error(what + ": no compressor for 'none'");
}

Result<std::unique_ptr<Decompressor>> Decompressor::make(Compression c, int in_fd,
                                                         uint64_t max_output, std::string what) {
  if (c == Compression::kGzip) {
    auto z = std::make_unique<GzipDecompressor>(in_fd, max_output, std::move(what));
    PW_TRY(z->init());
    return std::unique_ptr<Decompressor>(std::move(z));
  }
  if (c == Compression::kZstd) {
    auto z = std::make_unique<ZstdDecompressor>(in_fd, max_output, std::move(what));
    PW_TRY(z->init());
    return std::unique_ptr<Decompressor>(std::move(z));
  }
  return Error(what + ": no decompressor for 'none'");
}

Status Decompressor::drain() {
  std::vector<char> sink(kBuf);
  for (;;) {
    PW_ASSIGN(size_t n, read(sink.data(), sink.size()));
    if (n < sink.size()) return {};
  }
}

Compression sniff_compression(const unsigned char* magic, size_t n) {
  if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) return Compression::kGzip;
  if (n >= 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd)
    return Compression::kZstd;
  return Compression::kNone;
}

}  // namespace prewarm::image
