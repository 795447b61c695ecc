// Reading, validating and writing AppSpec YAML. Every error names the field path
// ("env[1].name: required") so a typo in a spec points at the key to fix.
#include "spec/app_spec.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <initializer_list>
#include <set>
#include <system_error>
#include <utility>

#include "base/fs.h"

namespace prewarm::spec {

std::vector<std::string> AppSpec::argv() const {
  std::vector<std::string> out = command;
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

namespace {

namespace stdfs = std::filesystem;
using Fields = std::initializer_list<std::string_view>;

// A day: long enough for any real probe or quiesce wait, short enough to catch seconds written
// into a *Milliseconds field (or the reverse) and to keep millisecond arithmetic far from overflow.
constexpr int64_t kMaxDurationMs = 24LL * 3600 * 1000;
constexpr int64_t kMaxRepeat = 1'000'000;
constexpr int64_t kMaxFailureThreshold = 1'000'000;
// The name becomes hostnames and ids, so it must be a DNS label.
constexpr size_t kMaxNameLength = 63;
// YAML aliases let a small document name the same subtree many times; walking it would then cost
// far more than the document's size suggests. No honest spec comes near this many nodes.
constexpr int64_t kMaxNodesVisited = 1'000'000;
constexpr std::string_view kBinaryTag = "tag:yaml.org,2002:binary";

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

// Quotes user text for an error message; long values are cut so the message stays one line.
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

// An explicit null (`args:` with nothing after it) counts as absent, as it does in Kubernetes.
bool present(const YAML::Node& n) { return n.IsDefined() && !n.IsNull(); }

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

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// Strings that end up in argv, the environment or a path go through C APIs, which would
// silently cut them at a NUL.
Status no_nul(std::string_view s, std::string_view path) {
  if (s.find('\0') != std::string_view::npos)
    return field_error(path, "must not contain NUL bytes");
  return {};
}

bool parse_int(std::string_view s, int64_t& out, int base = 10) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && end == s.data() + s.size();
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// RFC 7230 token characters: what an HTTP header name may contain.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  constexpr std::string_view kExtra = "!#$%&'*+-.^_`|~";
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           kExtra.find(c) != std::string_view::npos;
  });
}

bool has_control_char(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7F;
  });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
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

// Walks one YAML document into an AppSpec. A class only to carry the base directory and the
// node budget through the recursive descent.
class SpecParser {
 public:
  explicit SpecParser(stdfs::path base_dir) : base_dir_(std::move(base_dir)) {}

  Result<AppSpec> parse(const YAML::Node& root);

 private:
  Status visit(std::string_view path) {
    if (++visited_ > kMaxNodesVisited)
      return field_error(path, "spec expands to more than " + std::to_string(kMaxNodesVisited) +
                                   " YAML nodes (through aliases?); refusing to read it");
    return {};
  }

  // Checks that `n` is a mapping whose keys are all in `allowed`, each at most once (yaml-cpp
  // keeps duplicates, and the second one would otherwise be ignored without a word).
  Status check_map(const YAML::Node& n, std::string_view path, Fields allowed) {
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

  Status check_list(const YAML::Node& n, std::string_view path, std::string_view what) {
    if (!n.IsSequence())
      return field_error(path, "expected a list of " + std::string(what) + ", got " + describe(n));
    return {};
  }

  Result<std::string> as_string(const YAML::Node& n, std::string_view path) {
    if (!n.IsScalar()) return field_error(path, "expected a string, got " + describe(n));
    // The emitter cannot write invalid UTF-8 back unchanged, so to_yaml would not round-trip it.
    if (!valid_utf8(n.Scalar())) return field_error(path, "must be valid UTF-8");
    return n.Scalar();
  }

  Result<std::string> required_string(const YAML::Node& map, std::string_view path,
                                      std::string_view key) {
    std::string p = child(path, key);
    const YAML::Node n = map[std::string(key)];
    if (!present(n)) return field_error(p, "required");
    PW_ASSIGN(std::string s, as_string(n, p));
    if (s.empty()) return field_error(p, "must not be empty");
    PW_TRY(no_nul(s, p));
    return s;
  }

  Result<std::optional<std::string>> optional_string(const YAML::Node& map, std::string_view path,
                                                     std::string_view key) {
    const YAML::Node n = map[std::string(key)];
    if (!present(n)) return std::optional<std::string>();
    std::string p = child(path, key);
    PW_ASSIGN(std::string s, as_string(n, p));
    PW_TRY(no_nul(s, p));
    return std::optional<std::string>(std::move(s));
  }

  Result<int64_t> as_int(const YAML::Node& n, std::string_view path, int64_t min, int64_t max) {
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

  Result<std::optional<int64_t>> optional_int(const YAML::Node& map, std::string_view path,
                                              std::string_view key, int64_t min, int64_t max) {
    const YAML::Node n = map[std::string(key)];
    if (!present(n)) return std::optional<int64_t>();
    PW_ASSIGN(int64_t v, as_int(n, child(path, key), min, max));
    return std::optional<int64_t>(v);
  }

  Result<std::vector<std::string>> string_list(const YAML::Node& n, std::string_view path) {
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

  // A program to run: non-empty, and the program itself named.
  Result<std::vector<std::string>> command_list(const YAML::Node& map, std::string_view path,
                                                std::string_view key) {
    std::string p = child(path, key);
    const YAML::Node n = map[std::string(key)];
    if (!present(n)) return field_error(p, "required");
    PW_ASSIGN(std::vector<std::string> cmd, string_list(n, p));
    if (cmd.empty()) return field_error(p, "must not be empty");
    if (cmd[0].empty()) return field_error(item(p, 0), "must not be empty");
    return cmd;
  }

  // `<base>Seconds` as in Kubernetes, or `<base>Milliseconds`, which wins: sub-second probe
  // periods are much of what makes a prewarmed start fast.
  Result<Millis> duration(const YAML::Node& map, std::string_view path, std::string_view base,
                          Millis fallback, int64_t min_ms) {
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

  Result<stdfs::path> host_path(const YAML::Node& map, std::string_view path,
                                std::string_view key) {
    PW_ASSIGN(std::string s, required_string(map, path, key));
    return resolve(base_dir_, s);
  }

  Status parse_name(const YAML::Node& root, AppSpec& spec);
  Result<RootfsSource> parse_rootfs(const YAML::Node& n);
  Result<RootfsSource> parse_debootstrap(const YAML::Node& n, std::string_view path);
  Status parse_env(const YAML::Node& n, AppSpec& spec);
  Status parse_files(const YAML::Node& n, AppSpec& spec);
  Result<unsigned> parse_mode(const YAML::Node& n, std::string_view path);
  Status parse_ports(const YAML::Node& n, AppSpec& spec);
  Result<int> parse_port_ref(const YAML::Node& map, std::string_view path,
                             const std::vector<Port>& ports);
  Result<HttpGetAction> parse_http_get(const YAML::Node& n, std::string_view path,
                                       const std::vector<Port>& ports);
  Result<TcpSocketAction> parse_tcp_socket(const YAML::Node& n, std::string_view path,
                                           const std::vector<Port>& ports);
  Result<ExecAction> parse_exec(const YAML::Node& n, std::string_view path);
  Result<Probe> parse_probe(const YAML::Node& n, std::string_view path,
                            const std::vector<Port>& ports);
  Result<WarmupStep> parse_warmup_step(const YAML::Node& n, std::string_view path,
                                       const std::vector<Port>& ports);

  stdfs::path base_dir_;
  int64_t visited_ = 0;
};

Status SpecParser::parse_name(const YAML::Node& root, AppSpec& spec) {
  PW_ASSIGN(spec.name, required_string(root, "", "name"));
  const std::string& name = spec.name;
  if (name.size() > kMaxNameLength)
    return field_error("name", "must be at most " + std::to_string(kMaxNameLength) +
                                   " characters, got " + std::to_string(name.size()));
  bool chars_ok =
      std::all_of(name.begin(), name.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
  if (!chars_ok || name.front() == '-' || name.back() == '-')
    return field_error("name",
                       "must be lowercase letters, digits and '-', starting and ending "
                       "with a letter or digit (it becomes a hostname), got " +
                           quote(name));
  return {};
}

Result<RootfsSource> SpecParser::parse_rootfs(const YAML::Node& n) {
  constexpr std::string_view kPath = "rootfs";
  const Fields kKinds = {"directory", "tarball", "debootstrap"};
  const std::string kExactlyOne = "exactly one of " + join(kKinds) + " is required";
  if (!present(n)) return field_error(kPath, kExactlyOne);
  PW_TRY(check_map(n, kPath, kKinds));
  int given = 0;
  for (std::string_view k : kKinds) given += present(n[std::string(k)]) ? 1 : 0;
  if (given != 1) return field_error(kPath, kExactlyOne);

  RootfsSource out;
  if (present(n["directory"])) {
    out.kind = RootfsKind::kDirectory;
    PW_ASSIGN(out.path, host_path(n, kPath, "directory"));
  } else if (present(n["tarball"])) {
    out.kind = RootfsKind::kTarball;
    PW_ASSIGN(out.path, host_path(n, kPath, "tarball"));
  } else {
    PW_ASSIGN(out, parse_debootstrap(n["debootstrap"], child(kPath, "debootstrap")));
  }
  return out;
}

Result<RootfsSource> SpecParser::parse_debootstrap(const YAML::Node& n, std::string_view path) {
  PW_TRY(check_map(n, path, {"suite", "variant", "packages"}));
  RootfsSource out;
  out.kind = RootfsKind::kDebootstrap;
  // The suite and package names become debootstrap arguments: a leading '-' would read as an
  // option and a ',' would split the --include list.
  PW_ASSIGN(out.suite, required_string(n, path, "suite"));
  bool suite_ok =
      out.suite.front() != '-' && std::all_of(out.suite.begin(), out.suite.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
      });
  if (!suite_ok)
    return field_error(child(path, "suite"),
                       "must be a suite or codename such as bookworm, got " + quote(out.suite));

  PW_ASSIGN(auto variant, optional_string(n, path, "variant"));
  if (variant) {
    const Fields kVariants = {"minbase", "buildd", "fakechroot"};
    if (std::find(kVariants.begin(), kVariants.end(), *variant) == kVariants.end())
      return field_error(child(path, "variant"),
                         "must be one of " + join(kVariants) + ", got " + quote(*variant));
    out.variant = *variant;
  }

  const YAML::Node packages = n["packages"];
  if (present(packages)) {
    std::string p = child(path, "packages");
    PW_ASSIGN(out.packages, string_list(packages, p));
    for (size_t i = 0; i < out.packages.size(); ++i) {
      // Debian policy package names, optionally with an ":arch" qualifier.
      const std::string& pkg = out.packages[i];
      std::string_view name = pkg;
      std::string_view arch;
      if (size_t colon = name.find(':'); colon != std::string_view::npos) {
        arch = name.substr(colon + 1);
        name = name.substr(0, colon);
        if (arch.empty()) arch = "!";  // "python3:" is malformed
      }
      bool ok = name.size() >= 2 && is_lower_alnum(name[0]) &&
                std::all_of(
                    name.begin(), name.end(),
                    [](char c) { return is_lower_alnum(c) || c == '+' || c == '-' || c == '.'; }) &&
                std::all_of(arch.begin(), arch.end(),
                            [](char c) { return is_lower_alnum(c) || c == '-'; });
      if (!ok) return field_error(item(p, i), "not a Debian package name: " + quote(pkg));
    }
  }
  return out;
}

Status SpecParser::parse_env(const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "env";
  if (!present(n)) return {};
  PW_TRY(check_list(n, kPath, "{name, value} entries"));
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node e = n[i];
    PW_TRY(check_map(e, p, {"name", "value"}));
    PW_ASSIGN(std::string name, required_string(e, p, "name"));
    if (name.find('=') != std::string::npos)
      return field_error(child(p, "name"), "must not contain '=', got " + quote(name));
    auto [it, inserted] = first_index.emplace(name, i);
    if (!inserted)
      return field_error(child(p, "name"),
                         quote(name) + " is already set by " + item(kPath, it->second));
    PW_ASSIGN(auto value, optional_string(e, p, "value"));
    spec.env.emplace_back(std::move(name), value.value_or(""));
  }
  return {};
}

// "0755" and 0755 are octal, as everyone writes modes; a plain number without a leading zero is
// decimal, as in Kubernetes' defaultMode (so 420 is 0644).
Result<unsigned> SpecParser::parse_mode(const YAML::Node& n, std::string_view path) {
  if (!n.IsScalar())
    return field_error(path, "expected an octal mode such as \"0644\", got " + describe(n));
  std::string_view s = n.Scalar();
  bool quoted = n.Tag() == "!";
  int base = 10;
  if (s.starts_with("0o")) {
    s.remove_prefix(2);
    base = 8;
  } else if (quoted || (s.size() > 1 && s[0] == '0')) {
    base = 8;
  }
  int64_t v = 0;
  if (!parse_int(s, v, base) || v < 0)
    return field_error(path, "expected an octal mode such as \"0644\", got " + quote(n.Scalar()));
  if (v > 07777) return field_error(path, "must be at most 07777, got " + quote(n.Scalar()));
  return static_cast<unsigned>(v);
}

Status SpecParser::parse_files(const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "files";
  if (!present(n)) return {};
  PW_TRY(check_list(n, kPath, "{path, source|content, mode} entries"));
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node f = n[i];
    PW_TRY(check_map(f, p, {"path", "source", "content", "mode"}));
    FileEntry entry;

    std::string path_field = child(p, "path");
    PW_ASSIGN(std::string target, required_string(f, p, "path"));
    if (target.front() != '/')
      return field_error(path_field, "must be an absolute path, got " + quote(target));
    if (target.back() == '/')
      return field_error(path_field, "must name a file, not a directory, got " + quote(target));
    // Refused rather than normalised: a ".." in a file placed into the rootfs is either a
    // mistake or an attempt to write outside it.
    for (const auto& part : stdfs::path(target))
      if (part == "..")
        return field_error(path_field, "must not contain \"..\", got " + quote(target));
    entry.path = stdfs::path(target).lexically_normal().string();
    auto [it, inserted] = first_index.emplace(entry.path, i);
    if (!inserted)
      return field_error(path_field,
                         quote(entry.path) + " is already placed by " + item(kPath, it->second));

    const YAML::Node content = f["content"];
    const YAML::Node source = f["source"];
    if (present(content) == present(source))
      return field_error(p, "exactly one of source, content is required");
    if (present(source)) {
      PW_ASSIGN(entry.source, host_path(f, p, "source"));
    } else if (content.Tag() == kBinaryTag) {
      std::string cp = child(p, "content");
      if (!content.IsScalar())
        return field_error(cp, "expected base64 text after !!binary, got " + describe(content));
      std::vector<unsigned char> bytes = YAML::DecodeBase64(content.Scalar());
      if (bytes.empty() && content.Scalar().find_first_not_of(" \t\r\n") != std::string::npos)
        return field_error(cp, "!!binary content is not valid base64");
      entry.content = std::string(bytes.begin(), bytes.end());
    } else {
      std::string cp = child(p, "content");
      if (content.IsScalar() && !valid_utf8(content.Scalar()))
        return field_error(cp, "must be valid UTF-8 (write binary content as !!binary base64)");
      PW_ASSIGN(entry.content, as_string(content, cp));
    }

    const YAML::Node mode = f["mode"];
    if (present(mode)) {
      PW_ASSIGN(entry.mode, parse_mode(mode, child(p, "mode")));
    }
    spec.files.push_back(std::move(entry));
  }
  return {};
}

Status SpecParser::parse_ports(const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "ports";
  if (!present(n)) return {};
  PW_TRY(check_list(n, kPath, "{name, containerPort, protocol} entries"));
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node e = n[i];
    PW_TRY(check_map(e, p, {"name", "containerPort", "protocol"}));
    Port port;

    PW_ASSIGN(auto name, optional_string(e, p, "name"));
    if (name) {
      // Kubernetes' IANA_SVC_NAME: the letter requirement is what tells "8080" (a number) from
      // a name when a probe refers to a port.
      const std::string& s = *name;
      bool ok =
          !s.empty() && s.size() <= 15 && s.front() != '-' && s.back() != '-' &&
          s.find("--") == std::string::npos &&
          std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum(c) || c == '-'; }) &&
          std::any_of(s.begin(), s.end(), [](char c) { return c >= 'a' && c <= 'z'; });
      if (!ok)
        return field_error(child(p, "name"),
                           "must be at most 15 lowercase letters, digits and single '-', with at "
                           "least one letter (like \"http\"), got " +
                               quote(s));
      for (size_t j = 0; j < spec.ports.size(); ++j)
        if (spec.ports[j].name == s)
          return field_error(child(p, "name"), quote(s) + " is already used by " + item(kPath, j));
      port.name = s;
    }

    const YAML::Node number = e["containerPort"];
    if (!present(number)) return field_error(child(p, "containerPort"), "required");
    PW_ASSIGN(int64_t num, as_int(number, child(p, "containerPort"), 1, 65535));
    port.container_port = static_cast<int>(num);

    PW_ASSIGN(auto protocol, optional_string(e, p, "protocol"));
    if (protocol) {
      if (*protocol != "TCP" && *protocol != "UDP")
        return field_error(child(p, "protocol"), "must be TCP or UDP, got " + quote(*protocol));
      port.protocol = *protocol;
    }
    for (size_t j = 0; j < spec.ports.size(); ++j)
      if (spec.ports[j].container_port == port.container_port &&
          spec.ports[j].protocol == port.protocol)
        return field_error(child(p, "containerPort"),
                           std::to_string(port.container_port) + "/" + port.protocol +
                               " is already declared by " + item(kPath, j));
    spec.ports.push_back(std::move(port));
  }
  return {};
}

// Kubernetes' IntOrString port: a number, or the name of an entry in `ports`.
Result<int> SpecParser::parse_port_ref(const YAML::Node& map, std::string_view path,
                                       const std::vector<Port>& ports) {
  std::string p = child(path, "port");
  const YAML::Node n = map["port"];
  if (!present(n)) return field_error(p, "required");
  if (!n.IsScalar())
    return field_error(p, "expected a port number or a name from ports, got " + describe(n));
  const std::string& s = n.Scalar();
  // Port names must contain a letter, so anything number-like is meant as a number (even quoted).
  bool numeric = !s.empty() && std::all_of(s.begin() + (s[0] == '-' ? 1 : 0), s.end(),
                                           [](char c) { return c >= '0' && c <= '9'; });
  if (numeric) {
    PW_ASSIGN(int64_t v, as_int(n, p, 1, 65535));
    return static_cast<int>(v);
  }
  for (const Port& port : ports) {
    if (port.name != s) continue;
    if (port.protocol != "TCP")
      return field_error(p,
                         "port " + quote(s) + " is " + port.protocol + "; this needs a TCP port");
    return port.container_port;
  }
  std::string known;
  for (const Port& port : ports)
    if (!port.name.empty()) known += (known.empty() ? "" : ", ") + port.name;
  return field_error(
      p, "unknown port name " + quote(s) +
             (known.empty() ? " (no port in ports has a name)" : " (named ports: " + known + ")"));
}

Result<HttpGetAction> SpecParser::parse_http_get(const YAML::Node& n, std::string_view path,
                                                 const std::vector<Port>& ports) {
  PW_TRY(check_map(n, path, {"path", "port", "httpHeaders"}));
  HttpGetAction out;
  PW_ASSIGN(auto req_path, optional_string(n, path, "path"));
  if (req_path) {
    // It goes into the request line verbatim.
    if (req_path->empty() || req_path->front() != '/' || has_control_char(*req_path) ||
        req_path->find(' ') != std::string::npos)
      return field_error(child(path, "path"),
                         "must start with '/' and contain no spaces or control characters, got " +
                             quote(*req_path));
    out.path = *req_path;
  }
  PW_ASSIGN(out.port, parse_port_ref(n, path, ports));

  const YAML::Node headers = n["httpHeaders"];
  if (present(headers)) {
    std::string hp = child(path, "httpHeaders");
    PW_TRY(check_list(headers, hp, "{name, value} entries"));
    std::set<std::string> seen;
    for (size_t i = 0; i < headers.size(); ++i) {
      PW_TRY(visit(hp));
      std::string p = item(hp, i);
      const YAML::Node h = headers[i];
      PW_TRY(check_map(h, p, {"name", "value"}));
      PW_ASSIGN(std::string name, required_string(h, p, "name"));
      if (!is_token(name))
        return field_error(child(p, "name"), "not a valid HTTP header name: " + quote(name));
      if (!seen.insert(lower(name)).second)
        return field_error(child(p, "name"), "header " + quote(name) + " is given more than once");
      PW_ASSIGN(auto value, optional_string(h, p, "value"));
      // A CR or LF would let the value start a new header line.
      if (value &&
          (value->find('\r') != std::string::npos || value->find('\n') != std::string::npos))
        return field_error(child(p, "value"), "must not contain line breaks");
      out.headers[name] = value.value_or("");
    }
  }
  return out;
}

Result<TcpSocketAction> SpecParser::parse_tcp_socket(const YAML::Node& n, std::string_view path,
                                                     const std::vector<Port>& ports) {
  PW_TRY(check_map(n, path, {"port"}));
  TcpSocketAction out;
  PW_ASSIGN(out.port, parse_port_ref(n, path, ports));
  return out;
}

Result<ExecAction> SpecParser::parse_exec(const YAML::Node& n, std::string_view path) {
  PW_TRY(check_map(n, path, {"command"}));
  ExecAction out;
  PW_ASSIGN(out.command, command_list(n, path, "command"));
  return out;
}

Result<Probe> SpecParser::parse_probe(const YAML::Node& n, std::string_view path,
                                      const std::vector<Port>& ports) {
  PW_TRY(check_map(n, path,
                   {"httpGet", "tcpSocket", "exec", "initialDelaySeconds",
                    "initialDelayMilliseconds", "periodSeconds", "periodMilliseconds",
                    "timeoutSeconds", "timeoutMilliseconds", "failureThreshold"}));
  Probe out;
  const YAML::Node http = n["httpGet"];
  const YAML::Node tcp = n["tcpSocket"];
  const YAML::Node exec = n["exec"];
  if (int(present(http)) + int(present(tcp)) + int(present(exec)) != 1)
    return field_error(path, "exactly one of httpGet, tcpSocket, exec is required");
  if (present(http)) {
    PW_ASSIGN(out.http_get, parse_http_get(http, child(path, "httpGet"), ports));
  }
  if (present(tcp)) {
    PW_ASSIGN(out.tcp_socket, parse_tcp_socket(tcp, child(path, "tcpSocket"), ports));
  }
  if (present(exec)) {
    PW_ASSIGN(out.exec, parse_exec(exec, child(path, "exec")));
  }

  PW_ASSIGN(out.initial_delay, duration(n, path, "initialDelay", out.initial_delay, 0));
  PW_ASSIGN(out.period, duration(n, path, "period", out.period, 1));
  PW_ASSIGN(out.timeout, duration(n, path, "timeout", out.timeout, 1));
  PW_ASSIGN(auto threshold, optional_int(n, path, "failureThreshold", 1, kMaxFailureThreshold));
  if (threshold) out.failure_threshold = static_cast<int>(*threshold);
  return out;
}

Result<WarmupStep> SpecParser::parse_warmup_step(const YAML::Node& n, std::string_view path,
                                                 const std::vector<Port>& ports) {
  PW_TRY(check_map(n, path, {"httpGet", "exec", "repeat"}));
  WarmupStep out;
  const YAML::Node http = n["httpGet"];
  const YAML::Node exec = n["exec"];
  if (present(http) == present(exec))
    return field_error(path, "exactly one of httpGet, exec is required");
  if (present(http)) {
    PW_ASSIGN(out.http_get, parse_http_get(http, child(path, "httpGet"), ports));
  }
  if (present(exec)) {
    PW_ASSIGN(out.exec, parse_exec(exec, child(path, "exec")));
  }
  PW_ASSIGN(auto repeat, optional_int(n, path, "repeat", 1, kMaxRepeat));
  if (repeat) out.repeat = static_cast<int>(*repeat);
  return out;
}

Result<AppSpec> SpecParser::parse(const YAML::Node& root) {
  if (!root.IsMap())
    return field_error("", "expected a mapping at the top level, got " + describe(root));
  PW_TRY(check_map(root, "",
                   {"name", "rootfs", "command", "args", "env", "workingDir", "files", "ports",
                    "readinessProbe", "warmup", "quiesceTimeoutMilliseconds"}));
  AppSpec spec;
  PW_TRY(parse_name(root, spec));
  PW_ASSIGN(spec.rootfs, parse_rootfs(root["rootfs"]));
  PW_ASSIGN(spec.command, command_list(root, "", "command"));
  if (present(root["args"])) {
    PW_ASSIGN(spec.args, string_list(root["args"], "args"));
  }
  PW_TRY(parse_env(root["env"], spec));

  PW_ASSIGN(auto working_dir, optional_string(root, "", "workingDir"));
  if (working_dir) {
    if (working_dir->empty() || working_dir->front() != '/')
      return field_error("workingDir", "must be an absolute path, got " + quote(*working_dir));
    spec.working_dir = *working_dir;
  }

  PW_TRY(parse_files(root["files"], spec));
  // Ports before probes and warm-up steps, whatever the key order: those refer to ports by name.
  PW_TRY(parse_ports(root["ports"], spec));

  const YAML::Node probe = root["readinessProbe"];
  if (present(probe)) {
    PW_ASSIGN(spec.readiness_probe, parse_probe(probe, "readinessProbe", spec.ports));
  }

  const YAML::Node warmup = root["warmup"];
  if (present(warmup)) {
    PW_TRY(check_list(warmup, "warmup", "steps"));
    for (size_t i = 0; i < warmup.size(); ++i) {
      PW_TRY(visit("warmup"));
      PW_ASSIGN(WarmupStep step, parse_warmup_step(warmup[i], item("warmup", i), spec.ports));
      spec.warmup.push_back(std::move(step));
    }
  }

  PW_ASSIGN(auto quiesce, optional_int(root, "", "quiesceTimeoutMilliseconds", 0, kMaxDurationMs));
  if (quiesce) spec.quiesce_timeout = Millis(*quiesce);
  return spec;
}

std::string yaml_error(const YAML::Exception& e) {
  std::string m = "spec: invalid YAML";
  if (!e.mark.is_null())
    m += " at line " + std::to_string(e.mark.line + 1) + ", column " +
         std::to_string(e.mark.column + 1);
  m += ": ";
  m += e.msg;
  return m;
}

// --- writing ---

// Every string double-quoted: a plain `null`, `~`, `0755` or `yes` would read back as something
// other than a string.
void put_string(YAML::Emitter& out, std::string_view key, const std::string& value) {
  out << YAML::Key << std::string(key) << YAML::Value << YAML::DoubleQuoted << value;
}

void put_strings(YAML::Emitter& out, std::string_view key, const std::vector<std::string>& values) {
  out << YAML::Key << std::string(key) << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& v : values) out << YAML::DoubleQuoted << v;
  out << YAML::EndSeq;
}

void put_int(YAML::Emitter& out, std::string_view key, long long value) {
  out << YAML::Key << std::string(key) << YAML::Value << value;
}

void put_http_get(YAML::Emitter& out, const HttpGetAction& h) {
  out << YAML::Key << "httpGet" << YAML::Value << YAML::BeginMap;
  put_string(out, "path", h.path);
  put_int(out, "port", h.port);
  if (!h.headers.empty()) {
    out << YAML::Key << "httpHeaders" << YAML::Value << YAML::BeginSeq;
    for (const auto& [name, value] : h.headers) {
      out << YAML::BeginMap;
      put_string(out, "name", name);
      put_string(out, "value", value);
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

void put_exec(YAML::Emitter& out, const ExecAction& e) {
  out << YAML::Key << "exec" << YAML::Value << YAML::BeginMap;
  put_strings(out, "command", e.command);
  out << YAML::EndMap;
}

std::string octal_mode(unsigned mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0%03o", mode);
  return buf;
}

}  // namespace

Result<AppSpec> parse_spec(std::string_view yaml_text, const std::filesystem::path& base_dir) {
  if (yaml_text.size() > kMaxSpecBytes)
    return Error("spec: " + std::to_string(yaml_text.size()) + " bytes is more than the " +
                     std::to_string(kMaxSpecBytes) + "-byte limit for a spec",
                 EFBIG);
  std::error_code ec;
  stdfs::path base = base_dir.empty() ? stdfs::current_path(ec) : stdfs::absolute(base_dir, ec);
  if (ec) return Error::sys("resolve spec base directory", ec.value(), base_dir.string());
  base = base.lexically_normal();

  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::DeepRecursion& e) {
    return Error("spec: invalid YAML at line " + std::to_string(e.mark.line + 1) +
                     ": nested more deeply than the parser allows",
                 EINVAL);
  } catch (const YAML::Exception& e) {
    return Error(yaml_error(e), EINVAL);
  } catch (const std::exception& e) {
    return Error(std::string("spec: cannot parse YAML: ") + e.what(), EINVAL);
  }
  if (docs.size() > 1)
    return Error("spec: expected one YAML document, found " + std::to_string(docs.size()), EINVAL);
  if (docs.empty() || docs[0].IsNull())
    return Error("spec: the document is empty; expected a mapping with name, rootfs and command",
                 EINVAL);
  // The parser checks every type before converting, so yaml-cpp should not throw past here; the
  // catch keeps a missed case an error value rather than a crash.
  try {
    return SpecParser(std::move(base)).parse(docs[0]);
  } catch (const YAML::Exception& e) {
    return Error(yaml_error(e), EINVAL);
  } catch (const std::exception& e) {
    return Error(std::string("spec: ") + e.what(), EINVAL);
  }
}

Result<AppSpec> load_spec(const std::filesystem::path& file) {
  std::error_code ec;
  stdfs::path abs = stdfs::absolute(file, ec);
  if (ec) return Error::sys("resolve spec path", ec.value(), file.string());
  abs = abs.lexically_normal();
  auto text = fs::read_file(abs, kMaxSpecBytes);
  if (!text.ok()) return std::move(text).error().with_context("reading app spec");
  auto spec = parse_spec(*text, abs.parent_path());
  if (!spec.ok()) return std::move(spec).error().with_context(abs.string());
  return spec;
}

std::string to_yaml(const AppSpec& spec) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  put_string(out, "name", spec.name);

  out << YAML::Key << "rootfs" << YAML::Value << YAML::BeginMap;
  switch (spec.rootfs.kind) {
    case RootfsKind::kDirectory:
      put_string(out, "directory", spec.rootfs.path.string());
      break;
    case RootfsKind::kTarball:
      put_string(out, "tarball", spec.rootfs.path.string());
      break;
    case RootfsKind::kDebootstrap:
      out << YAML::Key << "debootstrap" << YAML::Value << YAML::BeginMap;
      put_string(out, "suite", spec.rootfs.suite);
      put_string(out, "variant", spec.rootfs.variant);
      if (!spec.rootfs.packages.empty()) put_strings(out, "packages", spec.rootfs.packages);
      out << YAML::EndMap;
      break;
  }
  out << YAML::EndMap;

  put_strings(out, "command", spec.command);
  if (!spec.args.empty()) put_strings(out, "args", spec.args);
  if (!spec.env.empty()) {
    out << YAML::Key << "env" << YAML::Value << YAML::BeginSeq;
    for (const auto& [name, value] : spec.env) {
      out << YAML::BeginMap;
      put_string(out, "name", name);
      put_string(out, "value", value);
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }
  put_string(out, "workingDir", spec.working_dir);

  if (!spec.files.empty()) {
    out << YAML::Key << "files" << YAML::Value << YAML::BeginSeq;
    for (const FileEntry& f : spec.files) {
      out << YAML::BeginMap;
      put_string(out, "path", f.path);
      if (f.source) {
        put_string(out, "source", f.source->string());
      } else if (f.content && valid_utf8(*f.content)) {
        put_string(out, "content", *f.content);
      } else if (f.content) {
        // The emitter would replace invalid UTF-8 with U+FFFD; base64 keeps the bytes.
        out << YAML::Key << "content" << YAML::Value
            << YAML::Binary(reinterpret_cast<const unsigned char*>(f.content->data()),
                            f.content->size());
      }
      put_string(out, "mode", octal_mode(f.mode));
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }

  if (!spec.ports.empty()) {
    out << YAML::Key << "ports" << YAML::Value << YAML::BeginSeq;
    for (const Port& p : spec.ports) {
      out << YAML::BeginMap;
      if (!p.name.empty()) put_string(out, "name", p.name);
      put_int(out, "containerPort", p.container_port);
      put_string(out, "protocol", p.protocol);
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }

  if (spec.readiness_probe) {
    const Probe& p = *spec.readiness_probe;
    out << YAML::Key << "readinessProbe" << YAML::Value << YAML::BeginMap;
    if (p.http_get) put_http_get(out, *p.http_get);
    if (p.tcp_socket) {
      out << YAML::Key << "tcpSocket" << YAML::Value << YAML::BeginMap;
      put_int(out, "port", p.tcp_socket->port);
      out << YAML::EndMap;
    }
    if (p.exec) put_exec(out, *p.exec);
    put_int(out, "initialDelayMilliseconds", p.initial_delay.count());
    put_int(out, "periodMilliseconds", p.period.count());
    put_int(out, "timeoutMilliseconds", p.timeout.count());
    put_int(out, "failureThreshold", p.failure_threshold);
    out << YAML::EndMap;
  }

  if (!spec.warmup.empty()) {
    out << YAML::Key << "warmup" << YAML::Value << YAML::BeginSeq;
    for (const WarmupStep& w : spec.warmup) {
      out << YAML::BeginMap;
      if (w.http_get) put_http_get(out, *w.http_get);
      if (w.exec) put_exec(out, *w.exec);
      put_int(out, "repeat", w.repeat);
      out << YAML::EndMap;
    }
    out << YAML::EndSeq;
  }

  put_int(out, "quiesceTimeoutMilliseconds", spec.quiesce_timeout.count());
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace prewarm::spec
