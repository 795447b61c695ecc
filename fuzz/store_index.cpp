// A store's index.json (store::detail::read_index): an OCI image layout may come from another tool.
#include <cstdint>
#include <string_view>

#include "scratch.h"
#include "store/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  fuzz::write_scratch("index.json", {reinterpret_cast<const char*>(data), size});
  (void)store::detail::read_index(fuzz::scratch_root());
  return 0;
}
