// Reading readiness probes and warm-up steps: the AppSpec sections that refer to ports (internal).
#pragma once

#include <yaml-cpp/yaml.h>

#include <string_view>
#include <vector>

#include "base/result.h"
#include "spec/app_spec.h"
#include "spec/yaml_reader.h"

namespace prewarm::spec::detail {

// A readinessProbe mapping at `path`. Ports named in it must be among `ports`.
Result<Probe> parse_probe(YamlReader& r, const YAML::Node& n, std::string_view path,
                          const std::vector<Port>& ports);

// The `warmup` list of steps. Ports named in it must be among `ports`.
Result<std::vector<WarmupStep>> parse_warmup(YamlReader& r, const YAML::Node& n,
                                             const std::vector<Port>& ports);

}  // namespace prewarm::spec::detail
