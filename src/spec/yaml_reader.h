// Typed readers for fields of a YAML document, shared by the spec module's parsers (internal).
// Every error names the field path ("env[1].name: required") so a typo in a spec points at the
// key to fix.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/utf8.h"
#include "spec/app_spec.h"

namespace prewarm::spec::detail {

using Fields = std::initializer_list<std::string_view>;

// A day: long enough for any real probe or quiesce wait, short enough to catch seconds written
// into a *Milliseconds field (or the reverse) and to keep millisecond arithmetic far from overflow.
inline constexpr int64_t kMaxDurationMs = 24LL * 3600 * 1000;

// "<path>: <problem>" (or "spec: <problem>" at the top level), errno EINVAL.
Error field_error(std::string_view path, std::string_view problem);

// Field paths: child("env[1]", "name") is "env[1].name", item("env", 1) is "env[1]".
std::string child(std::string_view path, std::string_view key);
std::string item(std::string_view path, size_t index);

// Quotes user text for an error message; long values are cut so the message stays one line.
std::string quote(std::string_view s);

// What a node is, for "expected ..., got <describe(n)>".
std::string describe(const YAML::Node& n);

// "a, b, c".
std::string join(Fields fields);

// An explicit null (`args:` with nothing after it) counts as absent, as it does in Kubernetes.
inline bool present(const YAML::Node& n) { return n.IsDefined() && !n.IsNull(); }

// The whole of `s` as an integer in `base`.
bool parse_int(std::string_view s, int64_t& out, int base = 10);

// Reads fields out of one YAML document. A class only to carry the base directory and the node
// budget through a recursive descent.
class YamlReader {
 public:
  // `base_dir` (absolute) resolves relative host paths.
  explicit YamlReader(std::filesystem::path base_dir) : base_dir_(std::move(base_dir)) {}
  const std::filesystem::path& base_dir() const { return base_dir_; }

  // Counts one node against the budget: YAML aliases let a small document name the same subtree
  // many times, and walking it would then cost far more than the document's size suggests.
  Status visit(std::string_view path);

  // Checks that `n` is a mapping whose keys are all in `allowed`, each at most once (yaml-cpp
  // keeps duplicates, and the second one would otherwise be ignored without a word).
  Status check_map(const YAML::Node& n, std::string_view path, Fields allowed);
  Status check_list(const YAML::Node& n, std::string_view path, std::string_view what);

  // A scalar that is valid UTF-8.
  Result<std::string> as_string(const YAML::Node& n, std::string_view path);
  // map[key] as a non-empty string without NUL bytes.
  Result<std::string> required_string(const YAML::Node& map, std::string_view path,
                                      std::string_view key);
  // map[key] as a string without NUL bytes, if present.
  Result<std::optional<std::string>> optional_string(const YAML::Node& map, std::string_view path,
                                                     std::string_view key);

  Result<int64_t> as_int(const YAML::Node& n, std::string_view path, int64_t min, int64_t max);
  Result<std::optional<int64_t>> optional_int(const YAML::Node& map, std::string_view path,
                                              std::string_view key, int64_t min, int64_t max);

  // A list of strings without NUL bytes.
  Result<std::vector<std::string>> string_list(const YAML::Node& n, std::string_view path);
  // A program to run: non-empty, and the program itself named.
  Result<std::vector<std::string>> command_list(const YAML::Node& map, std::string_view path,
                                                std::string_view key);

  // `<base>Seconds` as in Kubernetes, or `<base>Milliseconds`, which wins: sub-second probe
  // periods are much of what makes a prewarmed start fast.
  Result<Millis> duration(const YAML::Node& map, std::string_view path, std::string_view base,
                          Millis fallback, int64_t min_ms);

  // map[key], a required host path; relative paths are taken against the base directory.
  Result<std::filesystem::path> host_path(const YAML::Node& map, std::string_view path,
                                          std::string_view key);

 private:
  std::filesystem::path base_dir_;
  int64_t visited_ = 0;
};

}  // namespace prewarm::spec::detail
