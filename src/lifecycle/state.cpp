// State names as records and `prewarm ps` show them.
#include "lifecycle/state.h"

#include <array>
#include <utility>

namespace prewarm::lifecycle {
namespace {

constexpr std::array<std::pair<InstanceState, std::string_view>, 8> kNames = {{
    {InstanceState::kPreparing, "preparing"},
    {InstanceState::kRestoring, "restoring"},
    {InstanceState::kRestored, "restored"},
    {InstanceState::kPersonalising, "personalising"},
    {InstanceState::kStarting, "starting"},
    {InstanceState::kReady, "ready"},
    {InstanceState::kStopping, "stopping"},
    {InstanceState::kFailed, "failed"},
}};

}  // namespace

std::string_view state_name(InstanceState s) {
  for (const auto& [state, name] : kNames)
    if (state == s) return name;
  return "failed";
}

std::optional<InstanceState> parse_state(std::string_view name) {
  for (const auto& [state, n] : kNames)
    if (n == name) return state;
  return std::nullopt;
}

bool is_transitional(InstanceState s) {
  return s != InstanceState::kReady && s != InstanceState::kRestored;
}

}  // namespace prewarm::lifecycle
