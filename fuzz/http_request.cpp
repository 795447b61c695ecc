// prewarmd's HTTP request heads: the first bytes anyone who reaches its TCP port sends, parsed
// before the bearer token is checked.
#include <cstdint>
#include <string_view>

#include "daemon/http_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  prewarm::daemon::Request r;
  (void)prewarm::daemon::parse_request_head({reinterpret_cast<const char*>(data), size}, r);
  return 0;
}
