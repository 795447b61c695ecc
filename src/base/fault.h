// Fault injection for the fault suite (tests/e2e/faults_test.cpp): a test names one point in
// PREWARM_FAULT and the process stops there as a crash would, so that what the next command
// finds (and must recover from) is the same every time. Without the variable these are a
// comparison against an empty string.
#pragma once

#include <string_view>

namespace prewarm {

// Exits at once with status 137 (as SIGKILL leaves it, no destructors, no cleanup) when
// PREWARM_FAULT names this point.
void fault_point(std::string_view name);

// Whether PREWARM_FAULT names this point, for points where the fault is an action (killing a
// child at a chosen moment) rather than the process's own death.
bool fault_armed(std::string_view name);

}  // namespace prewarm
