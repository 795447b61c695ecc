// OCI documents from a registry or a store: an image manifest (store::detail::
// parse_oci_manifest; images::manifest_blobs and image::checkpoint_image_info, which pull reads
// first) and the store's image config (parse_config). A manifest that parses must parse again
// after to_json.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "image/checkpoint_image.h"
#include "images/images.h"
#include "store/internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  std::string text(reinterpret_cast<const char*>(data), size);
  (void)images::manifest_blobs(text);
  (void)image::checkpoint_image_info(text);
  (void)store::detail::parse_config(text);
  auto m = store::detail::parse_oci_manifest(text);
  if (!m.ok()) return 0;
  std::string json = store::detail::to_json(*m);
  auto again = store::detail::parse_oci_manifest(json);
  if (!again.ok() || store::detail::to_json(*again) != json) std::abort();
  return 0;
}
