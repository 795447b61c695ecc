// The streaming tar reader (tar::Reader) over bytes in memory: every entry's header, pax and
// GNU records, names (tar::clean_name) and data, with the same caps callers use.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "base/tar.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t pos = 0;
  tar::Reader r(
      [&](char* buf, size_t n) -> Result<size_t> {
        size_t k = std::min(n, in.size() - pos);
        std::memcpy(buf, in.data() + pos, k);
        pos += k;
        return k;
      },
      "fuzz input");
  for (int entries = 0; entries < 1000; ++entries) {
    auto e = r.next();
    if (!e.ok() || !*e) break;
    (void)tar::clean_name((*e)->name, "fuzz input");
    if ((*e)->type == '0' && entries % 2 == 0) {
      if (!r.read_data(1 << 16).ok()) break;
    }
  }
  return 0;
}
