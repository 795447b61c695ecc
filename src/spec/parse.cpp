// Reading and validating AppSpec YAML: the document as a whole and its sections other than
// probes and warm-up steps (probe_parse.cpp). Every error names the field path.
#include "spec/app_spec.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <exception>
#include <map>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include "base/fs.h"
#include "spec/image_ref.h"
#include "spec/probe_parse.h"
#include "spec/names.h"
#include "spec/yaml_reader.h"

namespace prewarm::spec {

std::vector<std::string> AppSpec::argv() const {
  std::vector<std::string> out = command;
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

namespace {

// Builds the document's node tree from the parser's events, as YAML::Load does, so that one
// parser can then be asked whether a second document follows: a single pass over the text
// (yaml-cpp scans ~14 MB/s here, and a stored spec carries its files' contents). Load itself is
// not used for that check because yaml-cpp 0.7's LoadAll never returns on some invalid input:
// for a stray "," it yields an empty document forever without consuming anything
// (jbeder/yaml-cpp#1040, fixed upstream in #1319; found by fuzz/spec.cpp).
class TreeBuilder : public YAML::EventHandler {
 public:
  // The document's root; undefined when the document had none (empty, or only comments).
  const YAML::Node& root() const { return root_; }
  bool has_root() const { return root_.IsDefined() && !root_.IsNull(); }

  void OnDocumentStart(const YAML::Mark&) override {
    root_ = YAML::Node(YAML::NodeType::Undefined);
    stack_.clear();
    anchors_.clear();
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t anchor) override {
    add(YAML::Node(YAML::NodeType::Null), anchor);
  }
  void OnAlias(const YAML::Mark&, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    // The parser refuses unknown aliases before calling here; stay safe if it did not.
    add(it != anchors_.end() ? it->second : YAML::Node(YAML::NodeType::Null), 0);
  }
  void OnScalar(const YAML::Mark&, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    YAML::Node n(value);
    n.SetTag(tag);
    add(n, anchor);
  }
  void OnSequenceStart(const YAML::Mark&, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(YAML::NodeType::Sequence, tag, anchor);
  }
  void OnSequenceEnd() override { stack_.pop_back(); }
  void OnMapStart(const YAML::Mark&, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(YAML::NodeType::Map, tag, anchor);
  }
  void OnMapEnd() override { stack_.pop_back(); }

 private:
  struct Open {
    YAML::Node node;
    std::optional<YAML::Node> key;  // a map's key waiting for its value
  };

  void open(YAML::NodeType::value type, const std::string& tag, YAML::anchor_t anchor) {
    YAML::Node n(type);
    n.SetTag(tag);
    add(n, anchor);
    stack_.push_back({n, std::nullopt});
  }
  // Puts a finished (or just opened) node where it belongs: the root, the next item of a
  // sequence, or a map's key or value. Duplicate keys are kept in order, as Load keeps them.
  void add(const YAML::Node& n, YAML::anchor_t anchor) {
    if (anchor != 0) anchors_.insert_or_assign(anchor, n);
    if (stack_.empty()) {
      root_ = n;
      return;
    }
    Open& top = stack_.back();
    if (top.node.IsSequence()) {
      top.node.push_back(n);
    } else if (!top.key) {
      top.key = n;
    } else {
      top.node.force_insert(*top.key, n);
      top.key.reset();
    }
  }

  YAML::Node root_{YAML::NodeType::Undefined};
  std::vector<Open> stack_;
  std::map<YAML::anchor_t, YAML::Node> anchors_;
};

// Counts no further than whether a second document has a root.
class RootProbe : public YAML::EventHandler {
 public:
  bool has_root() const { return has_root_; }
  void OnDocumentStart(const YAML::Mark&) override { has_root_ = false; }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { has_root_ = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    has_root_ = true;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    has_root_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    has_root_ = true;
  }
  void OnMapEnd() override {}

 private:
  bool has_root_ = false;
};

using namespace detail;
namespace stdfs = std::filesystem;

constexpr std::string_view kBinaryTag = "tag:yaml.org,2002:binary";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

Status parse_name(YamlReader& r, const YAML::Node& root, AppSpec& spec) {
  PW_ASSIGN(spec.name, r.required_string(root, "", "name"));
  if (Status st = check_name(spec.name, "name"); !st.ok()) {
    // "name must be ..." becomes "name: must be ...", like every other field error.
    std::string why = st.error().message();
    return field_error("name", why.substr(why.find(' ') + 1));
  }
  return {};
}

Result<RootfsSource> parse_debootstrap(YamlReader& r, const YAML::Node& n, std::string_view path) {
  PW_TRY(r.check_map(n, path, {"suite", "variant", "packages"}));
  RootfsSource out;
  out.kind = RootfsKind::kDebootstrap;
  // The suite and package names become debootstrap arguments: a leading '-' would read as an
  // option and a ',' would split the --include list.
  PW_ASSIGN(out.suite, r.required_string(n, path, "suite"));
  bool suite_ok =
      out.suite.front() != '-' && std::all_of(out.suite.begin(), out.suite.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
      });
  if (!suite_ok)
    return field_error(child(path, "suite"),
                       "must be a suite or codename such as bookworm, got " + quote(out.suite));

  PW_ASSIGN(auto variant, r.optional_string(n, path, "variant"));
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
    PW_ASSIGN(out.packages, r.string_list(packages, p));
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

Result<RootfsSource> parse_rootfs(YamlReader& r, const YAML::Node& n) {
  constexpr std::string_view kPath = "rootfs";
  const Fields kKinds = {"directory", "tarball", "debootstrap", "image"};
  const std::string kExactlyOne = "exactly one of " + join(kKinds) + " is required";
  if (!present(n)) return field_error(kPath, kExactlyOne);
  PW_TRY(r.check_map(n, kPath, kKinds));
  int given = 0;
  for (std::string_view k : kKinds) given += present(n[std::string(k)]) ? 1 : 0;
  if (given != 1) return field_error(kPath, kExactlyOne);

  RootfsSource out;
  if (present(n["directory"])) {
    out.kind = RootfsKind::kDirectory;
    PW_ASSIGN(out.path, r.host_path(n, kPath, "directory"));
  } else if (present(n["tarball"])) {
    out.kind = RootfsKind::kTarball;
    PW_ASSIGN(out.path, r.host_path(n, kPath, "tarball"));
  } else if (present(n["image"])) {
    out.kind = RootfsKind::kImage;
    PW_ASSIGN(std::string text, r.required_string(n, kPath, "image"));
    auto ref = parse_image_ref(text, r.base_dir());
    if (!ref.ok()) return field_error(child(kPath, "image"), ref.error().message());
    out.image = ref->to_string();
  } else {
    PW_ASSIGN(out, parse_debootstrap(r, n["debootstrap"], child(kPath, "debootstrap")));
  }
  return out;
}

Status parse_env(YamlReader& r, const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "env";
  if (!present(n)) return {};
  PW_TRY(r.check_list(n, kPath, "{name, value} entries"));
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(r.visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node e = n[i];
    PW_TRY(r.check_map(e, p, {"name", "value"}));
    PW_ASSIGN(std::string name, r.required_string(e, p, "name"));
    if (name.find('=') != std::string::npos)
      return field_error(child(p, "name"), "must not contain '=', got " + quote(name));
    auto [it, inserted] = first_index.emplace(name, i);
    if (!inserted)
      return field_error(child(p, "name"),
                         quote(name) + " is already set by " + item(kPath, it->second));
    PW_ASSIGN(auto value, r.optional_string(e, p, "value"));
    spec.env.emplace_back(std::move(name), value.value_or(""));
  }
  return {};
}

// "0755" and 0755 are octal, as everyone writes modes; a plain number without a leading zero is
// decimal, as in Kubernetes' defaultMode (so 420 is 0644).
Result<unsigned> parse_mode(const YAML::Node& n, std::string_view path) {
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

// A file entry's place in the rootfs, normalised; `first_index` maps the places taken so far
// to their entries' indexes in the list `list`.
Result<std::string> file_target(std::string_view list, size_t i, const std::string& target,
                                std::map<std::string, size_t>& first_index) {
  const std::string path_field = child(item(list, i), "path");
  if (target.empty() || target.front() != '/')
    return field_error(path_field, "must be an absolute path, got " + quote(target));
  if (target.back() == '/')
    return field_error(path_field, "must name a file, not a directory, got " + quote(target));
  // Refused rather than normalised: a ".." in a file placed into the rootfs is either a
  // mistake or an attempt to write outside it.
  for (const auto& part : stdfs::path(target))
    if (part == "..")
      return field_error(path_field, "must not contain \"..\", got " + quote(target));
  std::string normal = stdfs::path(target).lexically_normal().string();
  auto [it, inserted] = first_index.emplace(normal, i);
  if (!inserted)
    return field_error(path_field, quote(normal) + " is already placed by " + item(list, it->second));
  return normal;
}

Status parse_files(YamlReader& r, const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "files";
  if (!present(n)) return {};
  PW_TRY(r.check_list(n, kPath, "{path, source|content, mode} entries"));
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(r.visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node f = n[i];
    PW_TRY(r.check_map(f, p, {"path", "source", "content", "mode"}));
    FileEntry entry;

    PW_ASSIGN(std::string target, r.required_string(f, p, "path"));
    PW_ASSIGN(entry.path, file_target(kPath, i, target, first_index));

    const YAML::Node content = f["content"];
    const YAML::Node source = f["source"];
    if (present(content) == present(source))
      return field_error(p, "exactly one of source, content is required");
    if (present(source)) {
      PW_ASSIGN(entry.source, r.host_path(f, p, "source"));
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
      PW_ASSIGN(entry.content, r.as_string(content, cp));
    }

    const YAML::Node mode = f["mode"];
    if (present(mode)) {
      PW_ASSIGN(entry.mode, parse_mode(mode, child(p, "mode")));
    }
    spec.files.push_back(std::move(entry));
  }
  return {};
}

Status parse_ports(YamlReader& r, const YAML::Node& n, AppSpec& spec) {
  constexpr std::string_view kPath = "ports";
  if (!present(n)) return {};
  PW_TRY(r.check_list(n, kPath, "{name, containerPort, protocol} entries"));
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(r.visit(kPath));
    std::string p = item(kPath, i);
    const YAML::Node e = n[i];
    PW_TRY(r.check_map(e, p, {"name", "containerPort", "protocol"}));
    Port port;

    PW_ASSIGN(auto name, r.optional_string(e, p, "name"));
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
    PW_ASSIGN(int64_t num, r.as_int(number, child(p, "containerPort"), 1, 65535));
    port.container_port = static_cast<int>(num);

    PW_ASSIGN(auto protocol, r.optional_string(e, p, "protocol"));
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

Result<AppSpec> parse_app(YamlReader& r, const YAML::Node& root) {
  if (!root.IsMap())
    return field_error("", "expected a mapping at the top level, got " + describe(root));
  PW_TRY(r.check_map(root, "",
                     {"name", "rootfs", "command", "args", "env", "workingDir", "files", "ports",
                      "readinessProbe", "warmup", "quiesceTimeoutMilliseconds", "restore"}));
  AppSpec spec;
  PW_TRY(parse_name(r, root, spec));
  PW_ASSIGN(spec.rootfs, parse_rootfs(r, root["rootfs"]));
  PW_ASSIGN(spec.command, r.command_list(root, "", "command"));
  if (present(root["args"])) {
    PW_ASSIGN(spec.args, r.string_list(root["args"], "args"));
  }
  PW_TRY(parse_env(r, root["env"], spec));

  PW_ASSIGN(auto working_dir, r.optional_string(root, "", "workingDir"));
  if (working_dir) {
    if (working_dir->empty() || working_dir->front() != '/')
      return field_error("workingDir", "must be an absolute path, got " + quote(*working_dir));
    spec.working_dir = *working_dir;
  }

  PW_TRY(parse_files(r, root["files"], spec));
  // Ports before probes and warm-up steps, whatever the key order: those refer to ports by name.
  PW_TRY(parse_ports(r, root["ports"], spec));

  const YAML::Node probe = root["readinessProbe"];
  if (present(probe)) {
    PW_ASSIGN(spec.readiness_probe, parse_probe(r, probe, "readinessProbe", spec.ports));
  }

  const YAML::Node warmup = root["warmup"];
  if (present(warmup)) {
    PW_ASSIGN(spec.warmup, parse_warmup(r, warmup, spec.ports));
  }

  PW_ASSIGN(auto quiesce,
            r.optional_int(root, "", "quiesceTimeoutMilliseconds", 0, kMaxDurationMs));
  if (quiesce) spec.quiesce_timeout = Millis(*quiesce);

  const YAML::Node restore = root["restore"];
  if (present(restore)) {
    if (!restore.IsMap()) return field_error("restore", "expected a mapping, got " + describe(restore));
    PW_TRY(r.check_map(restore, "restore", {"paging"}));
    PW_ASSIGN(auto paging, r.optional_string(restore, "restore", "paging"));
    if (paging) {
      if (*paging != "auto" && *paging != "lazy" && *paging != "eager")
        return field_error("restore.paging", "must be auto, lazy or eager, got " + quote(*paging));
      spec.restore_paging = *paging;
    }
  }
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

  YAML::Node doc;
  try {
    std::istringstream in{std::string(yaml_text)};
    YAML::Parser parser(in);
    TreeBuilder builder;
    if (!parser.HandleNextDocument(builder) || !builder.has_root())
      return Error("spec: the document is empty; expected a mapping with name, rootfs and command",
                   EINVAL);
    RootProbe probe;
    if (parser.HandleNextDocument(probe))
      return Error("spec: expected one YAML document, found more", EINVAL);
    doc = builder.root();
  } catch (const YAML::DeepRecursion& e) {
    return Error("spec: invalid YAML at line " + std::to_string(e.mark.line + 1) +
                     ": nested more deeply than the parser allows",
                 EINVAL);
  } catch (const YAML::Exception& e) {
    return Error(yaml_error(e), EINVAL);
  } catch (const std::exception& e) {
    return Error(std::string("spec: cannot parse YAML: ") + e.what(), EINVAL);
  }
  // The parser checks every type before converting, so yaml-cpp should not throw past here; the
  // catch keeps a missed case an error value rather than a crash.
  try {
    YamlReader reader(std::move(base));
    return parse_app(reader, doc);
  } catch (const YAML::Exception& e) {
    return Error(yaml_error(e), EINVAL);
  } catch (const std::exception& e) {
    return Error(std::string("spec: ") + e.what(), EINVAL);
  }
}

Result<AppSpec> parse_spec_with_files(std::string_view yaml_text, std::vector<FileEntry> files,
                                      std::string_view where) {
  PW_ASSIGN(AppSpec spec, parse_spec(yaml_text, "/"));
  if (files.empty()) return spec;
  if (!spec.files.empty())
    return Error("spec: files: given both in the YAML and in " + std::string(where), EINVAL);
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < files.size(); ++i) {
    FileEntry& f = files[i];
    if (!f.content || f.source)
      return field_error(item(where, i), "must carry its content (a stored spec names no host file)");
    if (f.mode > 07777)
      return field_error(child(item(where, i), "mode"), "must be at most 07777");
    PW_ASSIGN(f.path, file_target(where, i, f.path, first_index));
  }
  spec.files = std::move(files);
  return spec;
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

}  // namespace prewarm::spec
