// zstd compression of chunks: one independent frame per chunk (put.cpp packs the frames).
//
// Level, measured per 64 KiB-average chunk on a real checkpoint (pages-1.img of a Python
// service, 89.3 MB; zstd 1.5.4, one core of an AMD EPYC):
//   level  compressed        compress   decompress
//   1      25.7 MB (28.8%)   436 MB/s   1568 MB/s
//   3      24.6 MB (27.6%)   379 MB/s   1595 MB/s
//   6      23.5 MB (26.3%)   153 MB/s   1664 MB/s
//   9      23.2 MB (26.0%)    92 MB/s   1750 MB/s
//   19     (whole file) 17.4 MB, 2.7 MB/s: far too slow for a bake
// Level 3 is the default: level 6 saves 4.8% of the bytes at 2.5x the compression time, and
// decompression (what a restore waits for) is about the same at every level.
#include <zstd.h>

#include <memory>

#include "store/internal.h"

namespace prewarm::store::detail {
namespace {

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// Contexts are reused per thread: creating one costs more than compressing a small chunk.
ZSTD_CCtx* cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxFree> c(ZSTD_createCCtx());
  return c.get();
}
ZSTD_DCtx* dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxFree> c(ZSTD_createDCtx());
  return c.get();
}

}  // namespace

Result<std::string> compress(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compressCCtx(cctx(), out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n))
    return Error(std::string("zstd compression failed: ") + ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

Status decompress(std::string_view frame, char* out, size_t size, const std::string& digest) {
  unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN)
    return Error("chunk " + digest + ": not a zstd frame with a content size");
  if (declared != size)
    return Error("chunk " + digest + ": holds " + std::to_string(declared) +
                 " bytes, the config says " + std::to_string(size));
  size_t n = ZSTD_decompressDCtx(dctx(), out, size, frame.data(), frame.size());
  if (ZSTD_isError(n))
    return Error("chunk " + digest + ": zstd decompression failed: " + ZSTD_getErrorName(n));
  if (n != size)
    return Error("chunk " + digest + ": decompressed to " + std::to_string(n) +
                 " bytes, expected " + std::to_string(size));
  return {};
}

}  // namespace prewarm::store::detail
