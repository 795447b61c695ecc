// The bad-input corpus (issue 8): specs, names and image manifests a user or an attacker could
// hand prewarm, each of which must be refused with an error that names what is wrong (the
// field, the name, the file). The spec cases are made by mutating a valid spec one field at a
// time, so every field is tried with wrong types, out-of-range values and unknown keys. The
// suite prints how many inputs it tried and how many were refused well (the README's figure).
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "image/manifest.h"
#include "spec/app_spec.h"
#include "spec/names.h"

namespace prewarm {
namespace {

constexpr char kValid[] = R"(name: counter
rootfs: {directory: /srv/rootfs}
command: ["/bin/server"]
args: ["--port", "8080"]
env:
  - {name: FOO, value: bar}
workingDir: /app
files:
  - {path: /etc/motd, content: "hello\n", mode: "0644"}
ports:
  - {name: http, containerPort: 8080, protocol: TCP}
readinessProbe:
  httpGet: {path: /healthz, port: http}
  periodMilliseconds: 50
  failureThreshold: 3
warmup:
  - httpGet: {path: /, port: 8080}
    repeat: 2
quiesceTimeoutMilliseconds: 1500
)";

struct Tally {
  int tried = 0, refused_well = 0;
  void add(bool ok) {
    ++tried;
    refused_well += ok ? 1 : 0;
  }
};
Tally& tally() {
  static Tally t;
  return t;
}

// Sets the node at `path` (keys, or indexes for sequences, e.g. {"ports", "0", "containerPort"})
// in a copy of the valid spec to `value` (YAML text; "~DELETE~" removes the key).
std::string mutate(const std::vector<std::string>& path, const std::string& value) {
  YAML::Node root = YAML::Load(kValid);
  std::vector<YAML::Node> chain = {root};
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    const YAML::Node& cur = chain.back();
    bool index = cur.IsSequence();
    chain.push_back(index ? cur[std::stoul(path[i])] : cur[path[i]]);
  }
  YAML::Node parent = chain.back();
  const std::string& last = path.back();
  if (value == "~DELETE~") {
    parent.remove(last);
  } else if (parent.IsSequence()) {
    parent[std::stoul(last)] = YAML::Load(value);
  } else {
    parent[last] = YAML::Load(value);
  }
  YAML::Emitter out;
  out << root;
  return out.c_str();
}

// A spec that must fail with `expect` in its message.
void expect_refused(const std::string& yaml, const std::string& expect, const std::string& what) {
  auto r = spec::parse_spec(yaml, "/base");
  bool ok = !r.ok() && r.error().kind() == ErrorKind::kInvalidInput &&
            r.error().message().find(expect) != std::string::npos;
  tally().add(ok);
  if (r.ok()) {
    ADD_FAILURE() << what << ": accepted\n" << yaml;
  } else {
    EXPECT_TRUE(ok) << what << ": error does not name " << expect << ": " << r.error().message();
  }
}

TEST(BadInput, ValidSpecParses) {
  auto r = spec::parse_spec(kValid, "/base");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  // The mutation itself keeps a spec valid when the value is: only the bad values fail.
  auto changed = spec::parse_spec(mutate({"ports", "0", "containerPort"}, "9090"), "/base");
  ASSERT_TRUE(changed.ok()) << changed.error().to_string();
  EXPECT_EQ(changed->ports[0].container_port, 9090);
  auto renamed = spec::parse_spec(mutate({"warmup", "0", "repeat"}, "7"), "/base");
  ASSERT_TRUE(renamed.ok()) << renamed.error().to_string();
}

void every_spec_field_with_wrong_values() {
  struct Field {
    std::vector<std::string> path;
    std::vector<std::string> bad;  // YAML values
    std::string named;             // what the error must name
  };
  const std::string kMap = "{a: 1}", kList = "[1, 2]";
  const std::vector<Field> fields = {
      {{"name"}, {"", "UPPER", "-lead", "trail-", "a_b", "a b", std::string(60, 'a'), kMap, kList, "~DELETE~"}, "name"},
      {{"rootfs"}, {"~DELETE~", "/x", kList, "{}", "{directory: /a, tarball: /b}", "{nfs: x}"}, "rootfs"},
      {{"rootfs", "directory"}, {"", kMap, kList}, "rootfs"},
      {{"rootfs"}, {"{image: ''}", "{image: [1]}", "{image: busybox}", "{image: 'oci:'}",
                    "{image: 'oci-archive:'}", "{image: 'oci:/l:bad tag'}", "{image: 'oci:/l:'}",
                    "{image: 'r.example.com/App:v1'}", "{image: 'r.example.com/app'}",
                    "{image: 'r.example.com/app@sha256:abc'}", "{image: 'r.example.com/app@md5:ab'}",
                    "{image: 'r.example.com/:v1'}", "{image: x, tarball: /t}",
                    "{image: {oci: /l}}"}, "rootfs"},
      {{"command"}, {"~DELETE~", "[]", "/bin/sh", kMap, "[[1]]", "[\"\"]"}, "command"},
      {{"args"}, {kMap, "[{a: 1}]", "x"}, "args"},
      {{"env"}, {"x", kMap, "[x]", "[{value: v}]", "[{name: \"\", value: v}]",
                 "[{name: A, value: v}, {name: A, value: w}]", "[{name: A, value: [1]}]",
                 "[{name: \"A=B\", value: v}]", "[{name: A, value: v, extra: 1}]"}, "env"},
      {{"workingDir"}, {"relative/dir", kMap, kList, "\"\""}, "workingDir"},
      {{"files"}, {"x", kMap, "[x]"}, "files"},
      {{"files", "0", "path"}, {"relative", "/a/../b", "\"\"", "/dir/", kMap, "~DELETE~"}, "files[0]"},
      {{"files", "0", "content"}, {kMap, kList, "~DELETE~"}, "files[0]"},
      {{"files", "0", "mode"}, {"\"9999\"", "\"0999\"", "\"rwx\"", "-1", "70000", kMap}, "files[0].mode"},
      {{"files", "0", "source"}, {"/etc/passwd"}, "files[0]"},  // both content and source
      {{"files", "0", "extra"}, {"1"}, "files[0]"},
      {{"ports"}, {"x", kMap, "[x]"}, "ports"},
      {{"ports", "0", "containerPort"}, {"0", "-1", "65536", "70000", "http", kList, "~DELETE~", "1.5"}, "ports[0].containerPort"},
      {{"ports", "0", "protocol"}, {"ICMP", "tcp6", kList}, "ports[0].protocol"},
      {{"ports", "0", "name"}, {"HTTP", "a_b", std::string(20, 'a'), kList}, "ports[0].name"},
      {{"readinessProbe"}, {"x", kList, "{}", "{httpGet: {path: /, port: http}, tcpSocket: {port: http}}"}, "readinessProbe"},
      {{"readinessProbe", "httpGet", "port"}, {"0", "65536", "nosuchport", kList, "~DELETE~"}, "readinessProbe.httpGet.port"},
      {{"readinessProbe", "httpGet", "path"}, {"relative", kMap, kList}, "readinessProbe.httpGet.path"},
      {{"readinessProbe", "periodMilliseconds"}, {"0", "-5", "x", kList}, "readinessProbe.periodMilliseconds"},
      {{"readinessProbe", "failureThreshold"}, {"0", "-1", "x", kMap}, "readinessProbe.failureThreshold"},
      {{"readinessProbe", "timeoutSeconds"}, {"-1", "x", kList}, "readinessProbe.timeoutSeconds"},
      {{"readinessProbe", "initialDelaySeconds"}, {"-1", "x", kMap}, "readinessProbe.initialDelaySeconds"},
      {{"readinessProbe", "bogus"}, {"1"}, "readinessProbe"},
      {{"warmup"}, {"x", kMap, "[x]", "[{}]", "[{httpGet: {path: /, port: 1}, exec: {command: [a]}}]"}, "warmup"},
      {{"warmup", "0", "repeat"}, {"0", "-1", "x", kList, "100000000"}, "warmup[0].repeat"},
      {{"warmup", "0", "httpGet", "port"}, {"0", "99999", "nosuch"}, "warmup[0].httpGet.port"},
      {{"quiesceTimeoutMilliseconds"}, {"-1", "x", kList}, "quiesceTimeoutMilliseconds"},
      {{"unknownTopLevel"}, {"1", "x"}, "unknownTopLevel"},
  };
  for (const auto& f : fields)
    for (const auto& v : f.bad) {
      std::string where;
      for (const auto& p : f.path) where += "/" + p;
      expect_refused(mutate(f.path, v), f.named, where + " = " + v);
    }
}

void malformed_yaml() {
  for (const char* text : {"", "name: [", "{{{", "- a\n- b\n", "name: a\n  bad: indent\n",
                           "\t\tname: x", "name: &a *a", "42", "~"}) {
    auto r = spec::parse_spec(text, "/base");
    bool ok = !r.ok() && !r.error().message().empty();
    tally().add(ok);
    EXPECT_TRUE(ok) << "accepted: " << text;
  }
}

void image_and_instance_names() {
  const std::vector<std::string> names = {"", "../x", "/etc", "a/b", "..", ".", "A", "-a", "a-", "a_b", "a b",
                                 "a..b", std::string(55, 'a'), std::string("a\0b", 3), "a\nb",
                                 "é", "a:b", "a@b", "%2e%2e", "a\\b"};
  for (const std::string& name : names) {
    Status st = spec::check_name(name, "image name");
    bool ok = !st.ok() && st.error().kind() == ErrorKind::kInvalidInput &&
              st.error().message().find("image name") != std::string::npos;
    tally().add(ok);
    EXPECT_TRUE(ok) << "accepted or unclear for '" << name << "'";
  }
}

void image_manifests() {
  // A valid manifest, then one field at a time broken.
  image::Manifest m;
  m.name = "app";
  m.created = "2026-01-01T00:00:00Z";
  m.spec_yaml = kValid;
  m.rootfs_id = "tar:" + std::string(64, 'a');
  m.rootfs_dir = "/x";
  const std::string good = image::to_json(m);
  if (!image::parse_manifest(good).ok()) {
    ADD_FAILURE() << "the valid manifest does not parse";
    return;
  }
  // An image base's record, and the round trip of a valid one.
  const std::string kDigest = "sha256:" + std::string(64, 'a');
  auto image_rootfs = [&](const std::string& image) {
    return "{\"id\": \"image:" + kDigest + "\", \"dir\": \"/x\", \"image\": " + image + "}";
  };
  image::Manifest with_image = m;
  with_image.rootfs_id = "image:" + kDigest;
  with_image.rootfs_image = image::RootfsImage{"127.0.0.1:5000/a:1", kDigest, kDigest};
  auto back = image::parse_manifest(image::to_json(with_image));
  if (!back.ok() || back->rootfs_image != with_image.rootfs_image) {
    ADD_FAILURE() << "a manifest with rootfs.image does not round-trip";
    return;
  }
  auto with = [&](const std::string& key, const std::string& raw_value) {
    // Replace "key": <value> in the JSON text.
    std::string s = good;
    auto k = s.find("\"" + key + "\"");
    if (k == std::string::npos) return s;
    auto colon = s.find(':', k);
    size_t end = colon + 1, depth = 0;
    bool in_str = false;
    for (; end < s.size(); ++end) {
      char c = s[end];
      if (in_str) {
        if (c == '\\') ++end;
        else if (c == '"') in_str = false;
        continue;
      }
      if (c == '"') in_str = true;
      else if (c == '{' || c == '[') ++depth;
      else if (c == '}' || c == ']') {
        if (depth == 0) break;
        --depth;
      } else if (c == ',' && depth == 0) break;
    }
    return s.substr(0, colon + 1) + raw_value + s.substr(end);
  };
  std::vector<std::pair<std::string, std::string>> cases = {
      {"", "empty"}, {"{", "truncated"}, {"[]", "not an object"}, {"null", "null"},
      {with("magic", "\"other\""), "magic"}, {with("magic", "1"), "magic"},
      {with("formatVersion", "999"), "format"}, {with("formatVersion", "\"1\""), "format"},
      {with("name", "1"), "name"}, {with("spec", "[]"), "spec"},
      {with("files", "{}"), "files"}, {with("files", "[1]"), "files"},
      {with("files", "[{\"path\": 1}]"), "files"},
      {with("files", "[{\"path\": \"a\", \"sha256\": \"x\", \"size\": -1}]"), "files"},
      {with("tcpEstablished", "\"yes\""), "tcpEstablished"},
      {with("host", "1"), "host"}, {with("rootfs", "[]"), "rootfs"},
      {with("rootfs", "{\"id\": 1}"), "rootfs"}, {with("timingsSeconds", "[]"), "timings"},
      {with("rootfs", image_rootfs("1")), "rootfs.image"},
      {with("rootfs", image_rootfs("{\"reference\": \"r/a:1\"}")), "rootfs.image fields"},
      {with("rootfs", image_rootfs("{\"reference\": 1, \"manifestDigest\": \"" + kDigest +
                                   "\", \"configDigest\": \"" + kDigest + "\"}")),
       "rootfs.image.reference"},
      {with("rootfs", image_rootfs("{\"reference\": \"r/a:1\", \"manifestDigest\": \"sha256:zz\", "
                                   "\"configDigest\": \"" + kDigest + "\"}")),
       "rootfs.image.manifestDigest"},
      {with("rootfs", image_rootfs("{\"reference\": \"r/a:1\", \"manifestDigest\": \"" +
                                   kDigest + "\", \"configDigest\": \"md5:1\"}")),
       "rootfs.image.configDigest"},
      {with("rootfs", image_rootfs("{\"reference\": \"r/a:1\", \"manifestDigest\": \"sha256:" +
                                   std::string(64, 'b') + "\", \"configDigest\": \"" + kDigest +
                                   "\"}")),
       "rootfs.image.manifestDigest not the base id"},
      {with("created", "{}"), "created"},
  };
  for (const auto& [text, what] : cases) {
    auto r = image::parse_manifest(text);
    bool ok = !r.ok() && !r.error().message().empty();
    tally().add(ok);
    EXPECT_TRUE(ok) << what << ": accepted:\n" << text;
  }
}

// Every group in one test (ctest runs each test in a process of its own), then the figure for
// the README.
TEST(BadInput, CorpusIsRefusedWithClearErrors) {
  every_spec_field_with_wrong_values();
  malformed_yaml();
  image_and_instance_names();
  image_manifests();
  std::printf("{\"bad_inputs_tried\": %d, \"refused_with_a_clear_error\": %d}\n", tally().tried,
              tally().refused_well);
  EXPECT_GE(tally().tried, 150);
  EXPECT_EQ(tally().refused_well, tally().tried);
}

}  // namespace
}  // namespace prewarm
