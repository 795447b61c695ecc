#include "base/fault.h"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "base/log.h"

namespace prewarm {

bool fault_armed(std::string_view name) {
  static const std::string armed = [] {
    const char* v = std::getenv("PREWARM_FAULT");
    return std::string(v != nullptr ? v : "");
  }();
  return !armed.empty() && armed == name;
}

void fault_point(std::string_view name) {
  if (!fault_armed(name)) return;
  log::warn("fault injected: stopping at " + std::string(name));
  ::_exit(137);
}

}  // namespace prewarm
