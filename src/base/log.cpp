// Logging to stderr, serialised so that concurrent instances don't interleave lines.
#include "base/log.h"

#include <cstdio>
#include <mutex>
#include <string>

namespace prewarm::log {
namespace {
Level g_level = Level::kInfo;
std::mutex g_mu;
}  // namespace

void set_level(Level level) { g_level = level; }
Level level() { return g_level; }

void write(Level lvl, std::string_view message) {
  if (lvl < g_level) return;
  const char* prefix = "";
  switch (lvl) {
    case Level::kDebug: prefix = "debug: "; break;
    case Level::kInfo: prefix = ""; break;
    case Level::kWarn: prefix = "warning: "; break;
    case Level::kError: prefix = "error: "; break;
  }
  std::lock_guard lock(g_mu);
  std::fprintf(stderr, "%s%.*s\n", prefix, static_cast<int>(message.size()), message.data());
}

}  // namespace prewarm::log
