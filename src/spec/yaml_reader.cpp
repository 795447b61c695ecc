// Typed YAML field readers: errors that name the field path, unknown-key checks with a
// "did you mean" guess, and a node budget against alias blow-up.
#include "spec/yaml_reader.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <set>
#include <system_error>
#include <utility>

namespace prewarm::spec::detail {

namespace {

namespace stdfs = std::filesystem;

// YAML aliases let a small document name the same subtree many times; walking it would then cost
// far more than the document's size suggests. No honest spec comes near this many nodes.
constexpr int64_t kMaxNodesVisited = 1'000'000;

// Case-insensitive edit distance where swapping two neighbours counts as one edit ("vaule").
size_t edit_distance(std::string_view a, std::string_view b) {
  auto low = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = low(a[i - 1]) == low(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && low(a[i - 1]) == low(b[j - 2]) && low(a[i - 2]) == low(b[j - 1]))
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string unknown_field_problem(std::string_view key, Fields allowed) {
  // Only the *Milliseconds form exists for some durations; a Kubernetes habit writes *Seconds.
  if (key.ends_with("Seconds")) {
    std::string millis = std::string(key.substr(0, key.size() - 7)) + "Milliseconds";
    if (std::find(allowed.begin(), allowed.end(), millis) != allowed.end())
      return "unknown field (did you mean " + millis + "?)";
  }
  // A guess is only offered when it is close: a far-fetched one confuses more than the list.
  std::string_view best;
  size_t best_distance = key.size() <= 5 ? 2 : 3;
  if (key.size() <= 64) {
    for (std::string_view f : allowed) {
      size_t d = edit_distance(key, f);
      if (d < best_distance) {
        best = f;
        best_distance = d;
      }
    }
  }
  if (!best.empty()) return "unknown field (did you mean " + std::string(best) + "?)";
  return "unknown field (expected one of: " + join(allowed) + ")";
}

// Strings that end up in argv, the environment or a path go through C APIs, which would
// silently cut them at a NUL.
Status no_nul(std::string_view s, std::string_view path) {
  if (s.find('\0') != std::string_view::npos)
    return field_error(path, "must not contain NUL bytes");
  return {};
}

// Relative paths are taken against the spec's directory; the result is absolute and lexically
// normal so that the same file always compares (and serialises) the same way.
stdfs::path resolve(const stdfs::path& base_dir, const std::string& p) {
  stdfs::path out(p);
  if (out.is_relative()) out = base_dir / out;
  out = out.lexically_normal();
  if (!out.has_filename() && out != out.root_path()) out = out.parent_path();
  return out;
}

}  // namespace

Error field_error(std::string_view path, std::string_view problem) {
  std::string m(path.empty() ? "spec" : path);
  m += ": ";
  m += problem;
  return Error(std::move(m), EINVAL);
}

std::string child(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  std::string out(path);
  out += '.';
  out += key;
  return out;
}

std::string item(std::string_view path, size_t index) {
  return std::string(path) + "[" + std::to_string(index) + "]";
}

std::string quote(std::string_view s) {
  constexpr size_t kMax = 60;
  std::string out = "\"";
  for (char c : s.substr(0, kMax)) {
    if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  if (s.size() > kMax) out += "...";
  out += '"';
  return out;
}

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return quote(n.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string join(Fields fields) {
  std::string out;
  for (std::string_view f : fields) {
    if (!out.empty()) out += ", ";
    out += f;
  }
  return out;
}


bool parse_int(std::string_view s, int64_t& out, int base) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && end == s.data() + s.size();
}

Status YamlReader::visit(std::string_view path) {
  if (++visited_ > kMaxNodesVisited)
    return field_error(path, "spec expands to more than " + std::to_string(kMaxNodesVisited) +
                                 " YAML nodes (through aliases?); refusing to read it");
  return {};
}

Status YamlReader::check_map(const YAML::Node& n, std::string_view path, Fields allowed) {
  if (!n.IsMap()) return field_error(path, "expected a mapping, got " + describe(n));
  std::set<std::string> seen;
  for (const auto& kv : n) {
    PW_TRY(visit(path));
    if (!kv.first.IsScalar())
      return field_error(path, "field names must be strings, got " + describe(kv.first));
    const std::string& key = kv.first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      return field_error(child(path, key), unknown_field_problem(key, allowed));
    if (!seen.insert(key).second) return field_error(child(path, key), "given more than once");
  }
  return {};
}

Status YamlReader::check_list(const YAML::Node& n, std::string_view path, std::string_view what) {
  if (!n.IsSequence())
    return field_error(path, "expected a list of " + std::string(what) + ", got " + describe(n));
  return {};
}

Result<std::string> YamlReader::as_string(const YAML::Node& n, std::string_view path) {
  if (!n.IsScalar()) return field_error(path, "expected a string, got " + describe(n));
  // The emitter cannot write invalid UTF-8 back unchanged, so to_yaml would not round-trip it.
  if (!valid_utf8(n.Scalar())) return field_error(path, "must be valid UTF-8");
  return n.Scalar();
}

Result<std::string> YamlReader::required_string(const YAML::Node& map, std::string_view path,
                                                std::string_view key) {
  std::string p = child(path, key);
  const YAML::Node n = map[std::string(key)];
  if (!present(n)) return field_error(p, "required");
  PW_ASSIGN(std::string s, as_string(n, p));
  if (s.empty()) return field_error(p, "must not be empty");
  PW_TRY(no_nul(s, p));
  return s;
}

Result<std::optional<std::string>> YamlReader::optional_string(const YAML::Node& map,
                                                               std::string_view path,
                                                               std::string_view key) {
  const YAML::Node n = map[std::string(key)];
  if (!present(n)) return std::optional<std::string>();
  std::string p = child(path, key);
  PW_ASSIGN(std::string s, as_string(n, p));
  PW_TRY(no_nul(s, p));
  return std::optional<std::string>(std::move(s));
}

Result<int64_t> YamlReader::as_int(const YAML::Node& n, std::string_view path, int64_t min,
                                   int64_t max) {
  if (!n.IsScalar()) return field_error(path, "expected an integer, got " + describe(n));
  const std::string& s = n.Scalar();
  int64_t v = 0;
  bool digits_only = !s.empty() && std::all_of(s.begin() + (s[0] == '-' ? 1 : 0), s.end(),
                                               [](char c) { return c >= '0' && c <= '9'; });
  std::string out_of_range = "must be between " + std::to_string(min) + " and " +
                             std::to_string(max) + ", got " +
                             (s.size() > 40 ? s.substr(0, 40) + "..." : s);
  if (!parse_int(s, v)) {
    if (digits_only && s != "-") return field_error(path, out_of_range);  // beyond int64
    return field_error(path, "expected an integer, got " + quote(s));
  }
  if (v < min || v > max) return field_error(path, out_of_range);
  return v;
}

Result<std::optional<int64_t>> YamlReader::optional_int(const YAML::Node& map,
                                                        std::string_view path, std::string_view key,
                                                        int64_t min, int64_t max) {
  const YAML::Node n = map[std::string(key)];
  if (!present(n)) return std::optional<int64_t>();
  PW_ASSIGN(int64_t v, as_int(n, child(path, key), min, max));
  return std::optional<int64_t>(v);
}

Result<std::vector<std::string>> YamlReader::string_list(const YAML::Node& n,
                                                         std::string_view path) {
  PW_TRY(check_list(n, path, "strings"));
  std::vector<std::string> out;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(visit(path));
    std::string p = item(path, i);
    PW_ASSIGN(std::string s, as_string(n[i], p));
    PW_TRY(no_nul(s, p));
    out.push_back(std::move(s));
  }
  return out;
}

Result<std::vector<std::string>> YamlReader::command_list(const YAML::Node& map,
                                                          std::string_view path,
                                                          std::string_view key) {
  std::string p = child(path, key);
  const YAML::Node n = map[std::string(key)];
  if (!present(n)) return field_error(p, "required");
  PW_ASSIGN(std::vector<std::string> cmd, string_list(n, p));
  if (cmd.empty()) return field_error(p, "must not be empty");
  if (cmd[0].empty()) return field_error(item(p, 0), "must not be empty");
  return cmd;
}

Result<Millis> YamlReader::duration(const YAML::Node& map, std::string_view path,
                                    std::string_view base, Millis fallback, int64_t min_ms) {
  std::string seconds_key = std::string(base) + "Seconds";
  std::string millis_key = std::string(base) + "Milliseconds";
  Millis out = fallback;
  int64_t min_s = (min_ms + 999) / 1000;
  PW_ASSIGN(auto s, optional_int(map, path, seconds_key, min_s, kMaxDurationMs / 1000));
  if (s) out = std::chrono::seconds(*s);
  PW_ASSIGN(auto ms, optional_int(map, path, millis_key, min_ms, kMaxDurationMs));
  if (ms) out = Millis(*ms);
  return out;
}

Result<stdfs::path> YamlReader::host_path(const YAML::Node& map, std::string_view path,
                                          std::string_view key) {
  PW_ASSIGN(std::string s, required_string(map, path, key));
  return resolve(base_dir_, s);
}

}  // namespace prewarm::spec::detail
