// prewarm doctor
#include <cstdio>

#include "cli.h"
#include "doctor/doctor.h"

namespace prewarm::cli {

void add_doctor(CLI::App& app, Globals& g) {
  auto* c = app.add_subcommand("doctor", "check this host for what prewarm needs");
  c->callback([&g] {
    int bad = 0;
    for (const auto& check : doctor::run_doctor()) {
      const char* verdict = check.ok ? "ok" : check.advisory ? "warn" : "FAIL";
      std::printf("%-4s %-17s %s\n", verdict, check.name.c_str(), check.detail.c_str());
      if (!check.ok && !check.advisory) ++bad;
    }
    if (bad) std::printf("\n%d problem(s) found.\n", bad);
    g.rc = bad ? 1 : 0;
  });
}

}  // namespace prewarm::cli
