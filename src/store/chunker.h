// Content-defined chunking (FastCDC: gear rolling hash, normalized chunking), so an insertion
// or a change moves only the chunk boundaries near it and the rest deduplicate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace prewarm::store {

struct ChunkerParams {
  uint32_t min_size;
  uint32_t avg_size;  // a power of two
  uint32_t max_size;
};

// Chosen by measurement on real checkpoint images (see chunker.cpp for the size tables).
// Every chunk is a registry blob, and per-blob round trips dominated transfers: the 89 MB
// reference image pushed in 7.0 s and pulled in 4.2 s over loopback with 64 KiB chunks
// (1161 blobs), in 0.47 s and 0.32 s with 1 MiB chunks (92 blobs). Since bakes run without
// address randomisation, two bakes of the reference app share 98.6% of their memory pages, but
// the differing ones are scattered: 1 MiB chunks keep 46% of a second bake (measured by
// bench/store.sh), aligned windows of 256 KiB / 64 KiB would keep ~71% / ~86% at 4x / 16x the
// blobs. Smaller chunks pay on slow links; on fast ones the round trips cost more than bytes.
inline constexpr ChunkerParams kDefaultChunking{8 << 10, 32 << 10, 128 << 10};
// Recorded in every stored config: a different algorithm or table gives different chunks
// (still correct, but they no longer deduplicate against older images).
inline constexpr const char* kChunkerName = "fastcdc-gear64-nc2-v1";

class Chunker {
 public:
  explicit Chunker(ChunkerParams params);

  // Length of the next chunk at the start of data. When !at_eof and data holds less than
  // max_size bytes the cut may not be final: returns 0 (give it more data).
  size_t next_cut(const uint8_t* data, size_t size, bool at_eof) const;

  // All chunk lengths of a whole buffer.
  std::vector<size_t> split(std::string_view data) const;

  const ChunkerParams& params() const { return params_; }

 private:
  ChunkerParams params_;
  uint64_t mask_small_;  // before avg_size: harder to cut
  uint64_t mask_large_;  // after avg_size: easier to cut
};

}  // namespace prewarm::store
