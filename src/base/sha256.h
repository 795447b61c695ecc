// SHA-256 of files and buffers (nettle), as lowercase hex.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/result.h"

namespace prewarm {

std::string sha256_hex(std::string_view data);
std::array<uint8_t, 32> sha256_bytes(std::string_view data);
Result<std::string> sha256_file(const std::filesystem::path& path);

// Incremental SHA-256, for data that streams by (a download, a file being written).
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;
  void update(const void* data, size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // Starts over, as if newly made.
  void reset();
  // The digest of everything since construction or reset(), as hex; the stream is spent.
  std::string final_hex();

 private:
  void* ctx_;  // nettle's sha256_ctx
};

}  // namespace prewarm
