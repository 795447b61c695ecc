// AppSpec YAML (spec::parse_spec): a spec that parses must also survive to_yaml and parse again
// to the same spec, as bake stores it inside images and restore reads it back.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "spec/app_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace prewarm;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = spec::parse_spec(text, "/nonexistent/prewarm-fuzz");
  if (!parsed.ok()) return 0;
  auto again = spec::parse_spec(spec::to_yaml(*parsed), "/nonexistent/prewarm-fuzz");
  if (!again.ok() || !(*again == *parsed)) std::abort();
  return 0;
}
