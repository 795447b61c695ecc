// The store's chunk tables (store/chunk_table.cpp). The input is a table's body; the harness
// gives it a matching header (magic, config digest, the body's SHA-256), so the fuzzer spends its
// time in the body's parser and consistency checks, not on the checksum.
#include <cstdint>
#include <cstring>
#include <string>

#include "base/sha256.h"
#include "store/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  const std::string config = "sha256:" + std::string(64, 'a');
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  std::string table(120, '\0');
  std::memcpy(table.data(), "PWCHTBL1", 8);
  const uint32_t version = 1;
  std::memcpy(table.data() + 8, &version, 4);
  std::memcpy(table.data() + 16, config.data() + 7, 64);
  const auto sum = sha256_bytes(body);
  std::memcpy(table.data() + 80, sum.data(), 32);
  const uint64_t len = size;
  std::memcpy(table.data() + 112, &len, 8);
  table.append(body);
  (void)store::detail::parse_chunk_table(table, config);
  return 0;
}
