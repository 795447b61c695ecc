// The checkpoint image manifest (image::parse_manifest): it arrives in pulled images and
// imported archives. A manifest that parses must parse again after to_json, unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "image/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = image::parse_manifest(text);
  if (!parsed.ok()) return 0;
  std::string json = image::to_json(*parsed);
  auto again = image::parse_manifest(json);
  if (!again.ok() || image::to_json(*again) != json) std::abort();
  return 0;
}
