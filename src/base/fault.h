// Fault injection for tests: crash points at the steps whose interruption must be survivable.
#pragma once

#include <string_view>

namespace prewarm {

// Exits with status 137 (as if SIGKILLed) when PREWARM_FAULT names this point; does nothing
// otherwise. The variable is read once per process.
void fault_point(std::string_view name);

}  // namespace prewarm
