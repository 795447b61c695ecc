// `prewarm doctor`: checks what checkpoint/restore needs on this host and says how to fix it.
#pragma once

#include <string>
#include <vector>

namespace prewarm::doctor {

struct Check {
  std::string name;
  bool ok = false;
  std::string detail;  // what was found, or what is missing and how to fix it
  // A check that only costs speed when it fails ("warn", not "FAIL"; doctor still passes).
  bool advisory = false;
};

std::vector<Check> run_doctor();

}  // namespace prewarm::doctor
