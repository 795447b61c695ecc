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

// Chosen by measurement on the reference image (bench/store.sh). Bakes run without address
// randomisation, so two bakes of one app share 98.6% of their memory pages, but the pages that
// differ are scattered: the smaller the chunk, the more of a second bake deduplicates (1 MiB:
// 46%, 64 KiB: 86%, 32 KiB: 90%), and the worse each chunk compresses on its own (the first
// image takes 22.2, 24.7, 25.5 MB). Chunks are packed into pack blobs (put.cpp), so their size
// does not set the number of registry round trips (64 KiB chunks as blobs of their own made
// pushes 15x slower than 1 MiB ones).
inline constexpr ChunkerParams kDefaultChunking{8 << 10, 32 << 10, 128 << 10};
// The chunking for an image of raw_bytes: kDefaultChunking up to 1 GiB, and twice the sizes
// for each doubling beyond, so an image's chunk list stays well within what a config may hold
// (~33,000 chunks of ~240 bytes of JSON each, against 16 MiB) at any size. Two bakes of one app deduplicate as long as both fall in
// the same size class.
ChunkerParams chunking_for(uint64_t raw_bytes);
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
