// Unit tests for AppSpec parsing, validation, error messages and the to_yaml round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/fs.h"
#include "spec/app_spec.h"
#include "spec/image_ref.h"
#include "spec/names.h"

namespace prewarm::spec {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;

constexpr char kMinimal[] = R"(name: app
rootfs: {directory: /srv/rootfs}
command: ["/bin/app"]
)";

// The example from the format description, every field used.
constexpr char kFull[] = R"(name: counter
rootfs:
  directory: ./rootfs
command: ["/bin/server"]
args: ["--port", "8080"]
env:
  - name: FOO
    value: bar
  - name: EMPTY
workingDir: /app
files:
  - path: /app/app.py
    source: app.py
    mode: "0755"
  - path: /etc/motd
    content: "hello\n"
ports:
  - name: http
    containerPort: 8080
    protocol: TCP
  - containerPort: 5353
    protocol: UDP
readinessProbe:
  httpGet: {path: /healthz, port: http, httpHeaders: [{name: X, value: y}]}
  initialDelaySeconds: 0
  periodSeconds: 10
  timeoutSeconds: 1
  failureThreshold: 3
  periodMilliseconds: 50
warmup:
  - httpGet: {path: /predict, port: 8080}
    repeat: 20
  - exec: {command: ["/bin/sh", "-c", "echo hi"]}
quiesceTimeoutMilliseconds: 1500
)";

Result<AppSpec> parse(std::string_view yaml, const stdfs::path& base = "/base") {
  return parse_spec(yaml, base);
}

// The error message for a spec that must be rejected ("" and a test failure if it parses).
std::string error_of(std::string_view yaml) {
  auto r = parse(yaml);
  if (r.ok()) {
    ADD_FAILURE() << "parsed, but should not have:\n" << yaml;
    return "";
  }
  return r.error().message();
}

// kMinimal with more top-level lines.
std::string minimal_with(std::string_view extra) {
  return std::string(kMinimal) + std::string(extra);
}

AppSpec parse_ok(std::string_view yaml, const stdfs::path& base = "/base") {
  auto r = parse(yaml, base);
  if (!r.ok()) {
    ADD_FAILURE() << r.error().message() << "\nfor:\n" << yaml;
    return {};
  }
  return *std::move(r);
}

// --- valid specs ---

TEST(SpecParse, FullSpec) {
  AppSpec s = parse_ok(kFull, "/srv/counter");
  EXPECT_EQ(s.name, "counter");
  EXPECT_EQ(s.rootfs.kind, RootfsKind::kDirectory);
  EXPECT_EQ(s.rootfs.path, "/srv/counter/rootfs");
  EXPECT_EQ(s.command, (std::vector<std::string>{"/bin/server"}));
  EXPECT_EQ(s.args, (std::vector<std::string>{"--port", "8080"}));
  ASSERT_EQ(s.env.size(), 2u);
  EXPECT_EQ(s.env[0], (std::pair<std::string, std::string>{"FOO", "bar"}));
  EXPECT_EQ(s.env[1], (std::pair<std::string, std::string>{"EMPTY", ""}));
  EXPECT_EQ(s.working_dir, "/app");

  ASSERT_EQ(s.files.size(), 2u);
  EXPECT_EQ(s.files[0].path, "/app/app.py");
  EXPECT_EQ(s.files[0].source, stdfs::path("/srv/counter/app.py"));
  EXPECT_FALSE(s.files[0].content);
  EXPECT_EQ(s.files[0].mode, 0755u);
  EXPECT_EQ(s.files[1].path, "/etc/motd");
  EXPECT_EQ(s.files[1].content, "hello\n");
  EXPECT_FALSE(s.files[1].source);
  EXPECT_EQ(s.files[1].mode, 0644u);

  ASSERT_EQ(s.ports.size(), 2u);
  EXPECT_EQ(s.ports[0].name, "http");
  EXPECT_EQ(s.ports[0].container_port, 8080);
  EXPECT_EQ(s.ports[0].protocol, "TCP");
  EXPECT_EQ(s.ports[1].name, "");
  EXPECT_EQ(s.ports[1].container_port, 5353);
  EXPECT_EQ(s.ports[1].protocol, "UDP");

  ASSERT_TRUE(s.readiness_probe);
  const Probe& p = *s.readiness_probe;
  ASSERT_TRUE(p.http_get);
  EXPECT_FALSE(p.tcp_socket);
  EXPECT_FALSE(p.exec);
  EXPECT_EQ(p.http_get->path, "/healthz");
  EXPECT_EQ(p.http_get->port, 8080);  // "http" resolved through ports
  EXPECT_EQ(p.http_get->headers, (std::map<std::string, std::string>{{"X", "y"}}));
  EXPECT_EQ(p.initial_delay, milliseconds(0));
  EXPECT_EQ(p.period, milliseconds(50));  // periodMilliseconds beats periodSeconds
  EXPECT_EQ(p.timeout, milliseconds(1000));
  EXPECT_EQ(p.failure_threshold, 3);

  ASSERT_EQ(s.warmup.size(), 2u);
  ASSERT_TRUE(s.warmup[0].http_get);
  EXPECT_EQ(s.warmup[0].http_get->path, "/predict");
  EXPECT_EQ(s.warmup[0].http_get->port, 8080);
  EXPECT_EQ(s.warmup[0].repeat, 20);
  EXPECT_FALSE(s.warmup[0].exec);
  ASSERT_TRUE(s.warmup[1].exec);
  EXPECT_EQ(s.warmup[1].exec->command, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(s.warmup[1].repeat, 1);
  EXPECT_EQ(s.quiesce_timeout, milliseconds(1500));
}

TEST(SpecParse, DefaultsForAMinimalSpec) {
  AppSpec s = parse_ok(kMinimal);
  EXPECT_EQ(s.name, "app");
  EXPECT_EQ(s.rootfs.path, "/srv/rootfs");
  EXPECT_TRUE(s.args.empty());
  EXPECT_TRUE(s.env.empty());
  EXPECT_EQ(s.working_dir, "/");
  EXPECT_TRUE(s.files.empty());
  EXPECT_TRUE(s.ports.empty());
  EXPECT_FALSE(s.readiness_probe);
  EXPECT_TRUE(s.warmup.empty());
  EXPECT_EQ(s.quiesce_timeout, milliseconds(2000));
}

TEST(SpecParse, ExplicitNullMeansAbsent) {
  AppSpec s = parse_ok(minimal_with("args:\nenv: ~\nfiles:\nports:\nwarmup:\nreadinessProbe:\n"));
  EXPECT_TRUE(s.args.empty());
  EXPECT_TRUE(s.env.empty());
  EXPECT_FALSE(s.readiness_probe);
}

TEST(SpecParse, ArgvIsCommandThenArgs) {
  AppSpec s = parse_ok(minimal_with("args: [a, '', 8080]\n"));
  EXPECT_EQ(s.argv(), (std::vector<std::string>{"/bin/app", "a", "", "8080"}));
  AppSpec no_args = parse_ok(kMinimal);
  EXPECT_EQ(no_args.argv(), (std::vector<std::string>{"/bin/app"}));
}

TEST(SpecParse, KeyOrderDoesNotMatter) {
  // The probe names a port declared further down.
  AppSpec s = parse_ok(R"(readinessProbe: {tcpSocket: {port: web}}
command: [/x]
ports: [{name: web, containerPort: 81}]
rootfs: {tarball: /t.tar}
name: z
)");
  ASSERT_TRUE(s.readiness_probe && s.readiness_probe->tcp_socket);
  EXPECT_EQ(s.readiness_probe->tcp_socket->port, 81);
}

// --- paths ---

TEST(SpecPaths, RelativeRootfsResolvesAgainstBaseDir) {
  auto dir = [](std::string_view d) {
    return parse_ok("name: a\ncommand: [x]\nrootfs: {directory: \"" + std::string(d) + "\"}\n",
                    "/srv/app")
        .rootfs.path;
  };
  EXPECT_EQ(dir("./rootfs"), "/srv/app/rootfs");
  EXPECT_EQ(dir("rootfs"), "/srv/app/rootfs");
  EXPECT_EQ(dir("../other/./r/"), "/srv/other/r");
  EXPECT_EQ(dir("/abs//dir/../r"), "/abs/r");
  EXPECT_EQ(dir("."), "/srv/app");
  EXPECT_EQ(dir("/"), "/");
}

TEST(SpecPaths, BaseDirIsNormalisedAndMadeAbsolute) {
  AppSpec s = parse_ok("name: a\ncommand: [x]\nrootfs: {tarball: r.tar}\n", "/srv/./x/../app/");
  EXPECT_EQ(s.rootfs.kind, RootfsKind::kTarball);
  EXPECT_EQ(s.rootfs.path, "/srv/app/r.tar");

  AppSpec rel = parse_ok("name: a\ncommand: [x]\nrootfs: {tarball: r.tar}\n", "some/dir");
  EXPECT_TRUE(rel.rootfs.path.is_absolute());
  EXPECT_EQ(rel.rootfs.path, (stdfs::current_path() / "some/dir/r.tar").lexically_normal());

  AppSpec empty_base = parse_ok("name: a\ncommand: [x]\nrootfs: {tarball: r.tar}\n", "");
  EXPECT_EQ(empty_base.rootfs.path, (stdfs::current_path() / "r.tar").lexically_normal());
}

TEST(SpecPaths, FileSourceResolvesAgainstBaseDir) {
  AppSpec s = parse_ok(minimal_with(R"(files:
  - {path: /a, source: app.py}
  - {path: /b, source: ../shared/lib.py}
  - {path: /c, source: /etc/hosts}
)"),
                       "/srv/app");
  EXPECT_EQ(s.files[0].source, stdfs::path("/srv/app/app.py"));
  EXPECT_EQ(s.files[1].source, stdfs::path("/srv/shared/lib.py"));
  EXPECT_EQ(s.files[2].source, stdfs::path("/etc/hosts"));
}

TEST(SpecPaths, FileTargetIsNormalised) {
  AppSpec s = parse_ok(minimal_with("files: [{path: /app//./x.py, content: ''}]\n"));
  EXPECT_EQ(s.files[0].path, "/app/x.py");
  EXPECT_EQ(s.files[0].content, "");
}

// --- rootfs ---

TEST(SpecRootfs, Debootstrap) {
  AppSpec s = parse_ok(R"(name: a
command: [x]
rootfs:
  debootstrap: {suite: bookworm, variant: minbase, packages: [python3, python3-numpy, libc6:amd64, g++]}
)");
  EXPECT_EQ(s.rootfs.kind, RootfsKind::kDebootstrap);
  EXPECT_EQ(s.rootfs.suite, "bookworm");
  EXPECT_EQ(s.rootfs.variant, "minbase");
  EXPECT_EQ(s.rootfs.packages,
            (std::vector<std::string>{"python3", "python3-numpy", "libc6:amd64", "g++"}));
  EXPECT_TRUE(s.rootfs.path.empty());

  AppSpec d = parse_ok("name: a\ncommand: [x]\nrootfs: {debootstrap: {suite: stable}}\n");
  EXPECT_EQ(d.rootfs.variant, "minbase");
  EXPECT_TRUE(d.rootfs.packages.empty());
  AppSpec b =
      parse_ok("name: a\ncommand: [x]\nrootfs: {debootstrap: {suite: sid, variant: buildd}}\n");
  EXPECT_EQ(b.rootfs.variant, "buildd");
}

TEST(SpecRootfs, ExactlyOneKind) {
  const std::string kMsg = "rootfs: exactly one of directory, tarball, debootstrap, image is required";
  EXPECT_EQ(error_of("name: a\ncommand: [x]\n"), kMsg);
  EXPECT_EQ(error_of("name: a\ncommand: [x]\nrootfs: {}\n"), kMsg);
  EXPECT_EQ(error_of("name: a\ncommand: [x]\nrootfs: {directory: /a, tarball: /b}\n"), kMsg);
  EXPECT_EQ(error_of("name: a\ncommand: [x]\nrootfs: {directory: ~}\n"), kMsg);
}

TEST(SpecRootfs, Errors) {
  auto err = [](std::string_view rootfs) {
    return error_of("name: a\ncommand: [x]\nrootfs: " + std::string(rootfs) + "\n");
  };
  EXPECT_EQ(err("/some/dir"), "rootfs: expected a mapping, got \"/some/dir\"");
  EXPECT_EQ(err("{directory: ''}"), "rootfs.directory: must not be empty");
  EXPECT_EQ(err("{directory: [a]}"), "rootfs.directory: expected a string, got a list");
  EXPECT_EQ(err("{dir: /a}"),
            "rootfs.dir: unknown field (expected one of: directory, tarball, "
            "debootstrap, image)");
  EXPECT_EQ(err("{tarbal: /a}"), "rootfs.tarbal: unknown field (did you mean tarball?)");
  EXPECT_EQ(err("{debootstrap: {variant: minbase}}"), "rootfs.debootstrap.suite: required");
  EXPECT_EQ(err("{debootstrap: bookworm}"),
            "rootfs.debootstrap: expected a mapping, got \"bookworm\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, mirror: http://x}}"),
            "rootfs.debootstrap.mirror: unknown field (expected one of: suite, variant, packages)");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, variant: tiny}}"),
            "rootfs.debootstrap.variant: must be one of minbase, buildd, fakechroot, got \"tiny\"");
  EXPECT_EQ(err("{debootstrap: {suite: --foreign}}"),
            "rootfs.debootstrap.suite: must be a suite or codename such as bookworm, got "
            "\"--foreign\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, packages: python3}}"),
            "rootfs.debootstrap.packages: expected a list of strings, got \"python3\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, packages: [curl, 'a,b']}}"),
            "rootfs.debootstrap.packages[1]: not a Debian package name: \"a,b\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, packages: [--force-yes]}}"),
            "rootfs.debootstrap.packages[0]: not a Debian package name: \"--force-yes\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, packages: ['python3:']}}"),
            "rootfs.debootstrap.packages[0]: not a Debian package name: \"python3:\"");
  EXPECT_EQ(err("{debootstrap: {suite: bookworm, packages: [Python]}}"),
            "rootfs.debootstrap.packages[0]: not a Debian package name: \"Python\"");
}

TEST(SpecRootfs, Image) {
  auto image = [](std::string_view ref, const char* base = "/srv/app") {
    return parse_ok("name: a\ncommand: [x]\nrootfs: {image: '" + std::string(ref) + "'}\n", base)
        .rootfs;
  };
  RootfsSource r = image("127.0.0.1:5000/team/app:v1");
  EXPECT_EQ(r.kind, RootfsKind::kImage);
  EXPECT_EQ(r.image, "127.0.0.1:5000/team/app:v1");
  EXPECT_TRUE(r.path.empty());
  const std::string pinned = "registry.example.com/app@sha256:" + std::string(64, 'a');
  EXPECT_EQ(image(pinned).image, pinned);
  // Layout paths resolve against the spec's directory; the tag is kept.
  EXPECT_EQ(image("oci:layout:v2").image, "oci:/srv/app/layout:v2");
  EXPECT_EQ(image("oci:../shared/layout/").image, "oci:/srv/shared/layout");
  EXPECT_EQ(image("oci-archive:/abs/img.tar:latest").image, "oci-archive:/abs/img.tar:latest");
  EXPECT_EQ(image("oci-archive:img.tar").image, "oci-archive:/srv/app/img.tar");
  // What parse_image_ref reads back.
  auto ref = parse_image_ref("oci:/srv/app/layout:v2", "/");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->transport, ImageTransport::kOciLayout);
  EXPECT_EQ(ref->path, "/srv/app/layout");
  EXPECT_EQ(ref->tag, "v2");
  EXPECT_EQ(ref->to_string(), "oci:/srv/app/layout:v2");
}

TEST(SpecRootfs, ImageErrors) {
  auto err = [](std::string_view rootfs) {
    return error_of("name: a\ncommand: [x]\nrootfs: " + std::string(rootfs) + "\n");
  };
  EXPECT_EQ(err("{image: ''}"), "rootfs.image: must not be empty");
  EXPECT_EQ(err("{image: [a]}"), "rootfs.image: expected a string, got a list");
  EXPECT_EQ(err("{image: busybox}"),
            "rootfs.image: invalid image reference 'busybox': no registry host (there is no "
            "default registry); write it first, e.g. registry.example.com/busybox (an image is "
            "HOST[:PORT]/REPO[:TAG][@sha256:DIGEST], oci:PATH[:TAG] or oci-archive:PATH[:TAG])");
  EXPECT_NE(err("{image: 'registry.example.com/App:v1'}").find("must be lowercase"),
            std::string::npos);
  EXPECT_NE(err("{image: 'registry.example.com/app'}").find("no tag or digest"), std::string::npos);
  EXPECT_NE(err("{image: 'registry.example.com/app@sha256:abc'}").find("64 lowercase hex"),
            std::string::npos);
  EXPECT_EQ(err("{image: 'oci:'}"), "rootfs.image: \"oci:\" names no path; write oci:PATH[:TAG]");
  EXPECT_EQ(err("{image: 'oci-archive::v1'}"),
            "rootfs.image: \"oci-archive:\" names no path; write oci-archive:PATH[:TAG]");
  EXPECT_EQ(err("{image: 'oci:/l:bad tag'}"),
            "rootfs.image: oci: tag \"bad tag\" is not an image name (letters, digits and "
            "-._:@/+= only, at most 128)");
  EXPECT_EQ(err("{image: 'oci:/l:'}"),
            "rootfs.image: oci: tag \"\" is not an image name (letters, digits and -._:@/+= "
            "only, at most 128)");
  EXPECT_EQ(err("{image: x, directory: /a}"),
            "rootfs: exactly one of directory, tarball, debootstrap, image is required");
}

// --- name, command, args, workingDir ---

TEST(SpecName, Validation) {
  auto err = [](std::string_view name) {
    return error_of("name: " + std::string(name) + "\nrootfs: {directory: /r}\ncommand: [x]\n");
  };
  EXPECT_EQ(error_of("rootfs: {directory: /r}\ncommand: [x]\n"), "name: required");
  EXPECT_EQ(err("''"), "name: must not be empty");
  EXPECT_EQ(err("[a]"), "name: expected a string, got a list");
  EXPECT_NE(err("MyApp").find("name: must be lowercase letters, digits and '-'"),
            std::string::npos);
  EXPECT_NE(err("my_app").find("got 'my_app'"), std::string::npos);
  EXPECT_NE(err("-app").find("name: must be lowercase"), std::string::npos);
  EXPECT_NE(err("app-").find("name: must be lowercase"), std::string::npos);
  EXPECT_NE(err("a.b").find("name: must be lowercase"), std::string::npos);
  // An instance id (name + "-" + 8 hex) must still be a 63-character hostname.
  EXPECT_NE(err(std::string(55, 'a')).find("name: must be at most 54 characters"),
            std::string::npos);

  for (std::string ok :
       {std::string(54, 'a'), std::string("0"), std::string("a-1-b"), std::string("123")}) {
    EXPECT_EQ(parse_ok("name: '" + ok + "'\nrootfs: {directory: /r}\ncommand: [x]\n").name, ok);
  }
}

TEST(SpecName, OneRuleForSpecsImagesAndInstanceIds) {
  EXPECT_TRUE(check_name("a").ok());
  EXPECT_TRUE(check_name(std::string(kMaxNameLength, 'x')).ok());
  Status too_long = check_name(std::string(kMaxNameLength + 1, 'x'), "image name");
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(too_long.error().message().rfind("image name must be at most 54", 0), 0u);
  for (const char* bad : {"", "A", "a_b", "a.b", "-a", "a-", "a/b"})
    EXPECT_FALSE(check_name(bad).ok()) << bad;
  // An id (name + "-" + 8 hex) is a hostname the kernel and DNS take.
  EXPECT_LE(kMaxNameLength + kInstanceSuffixLength, 63u);
  EXPECT_EQ(to_name("My_Repo.v2"), "my-repo-v2");
  EXPECT_EQ(to_name("__x__"), "x");
  EXPECT_EQ(to_name(std::string(80, 'a')).size(), kMaxNameLength);
  EXPECT_EQ(to_name("___"), "");
}

TEST(SpecCommand, Validation) {
  auto err = [](std::string_view command) {
    return error_of("name: a\nrootfs: {directory: /r}\n" + std::string(command));
  };
  EXPECT_EQ(err(""), "command: required");
  EXPECT_EQ(err("command: ~\n"), "command: required");
  EXPECT_EQ(err("command: []\n"), "command: must not be empty");
  EXPECT_EQ(err("command: /bin/server\n"),
            "command: expected a list of strings, got \"/bin/server\"");
  EXPECT_EQ(err("command: {a: b}\n"), "command: expected a list of strings, got a mapping");
  EXPECT_EQ(err("command: ['', x]\n"), "command[0]: must not be empty");
  EXPECT_EQ(err("command: [x, [y]]\n"), "command[1]: expected a string, got a list");
  EXPECT_EQ(err("command: [x, ~]\n"), "command[1]: expected a string, got null");
  EXPECT_EQ(err("command: [x, {a: 1}]\n"), "command[1]: expected a string, got a mapping");
  EXPECT_EQ(err("command: [\"a\\0b\"]\n"), "command[0]: must not contain NUL bytes");
  EXPECT_EQ(err("command: [\"\xff\xfe\"]\n"), "command[0]: must be valid UTF-8");
}

TEST(SpecArgs, Validation) {
  EXPECT_EQ(error_of(minimal_with("args: --port\n")),
            "args: expected a list of strings, got \"--port\"");
  EXPECT_EQ(error_of(minimal_with("args: [a, b, {c: d}]\n")),
            "args[2]: expected a string, got a mapping");
  // Plain scalars of any YAML type are strings here, as they would be on a command line.
  EXPECT_EQ(parse_ok(minimal_with("args: [8080, true, 1.5]\n")).args,
            (std::vector<std::string>{"8080", "true", "1.5"}));
}

TEST(SpecWorkingDir, MustBeAbsolute) {
  EXPECT_EQ(parse_ok(minimal_with("workingDir: /srv/app\n")).working_dir, "/srv/app");
  EXPECT_EQ(error_of(minimal_with("workingDir: app\n")),
            "workingDir: must be an absolute path, got \"app\"");
  EXPECT_EQ(error_of(minimal_with("workingDir: ''\n")),
            "workingDir: must be an absolute path, got \"\"");
  EXPECT_EQ(error_of(minimal_with("workingDir: [/a]\n")),
            "workingDir: expected a string, got a list");
}

// --- env ---

TEST(SpecEnv, KeepsOrder) {
  AppSpec s = parse_ok(minimal_with(R"(env:
  - {name: Z, value: "1"}
  - {name: A, value: "two words"}
  - {name: M, value: 3}
  - {name: N, value: ~}
)"));
  std::vector<std::pair<std::string, std::string>> want = {
      {"Z", "1"}, {"A", "two words"}, {"M", "3"}, {"N", ""}};
  EXPECT_EQ(s.env, want);
}

TEST(SpecEnv, Errors) {
  EXPECT_EQ(error_of(minimal_with("env:\n  - {name: A, value: b}\n  - {value: c}\n")),
            "env[1].name: required");
  EXPECT_EQ(error_of(minimal_with("env: {FOO: bar}\n")),
            "env: expected a list of {name, value} entries, got a mapping");
  EXPECT_EQ(error_of(minimal_with("env: [FOO=bar]\n")),
            "env[0]: expected a mapping, got \"FOO=bar\"");
  EXPECT_EQ(error_of(minimal_with("env: [{name: 'A=B', value: c}]\n")),
            "env[0].name: must not contain '=', got \"A=B\"");
  EXPECT_EQ(error_of(minimal_with("env: [{name: A}, {name: B}, {name: A}]\n")),
            "env[2].name: \"A\" is already set by env[0]");
  EXPECT_EQ(error_of(minimal_with("env: [{name: A, valueFrom: {secretKeyRef: x}}]\n")),
            "env[0].valueFrom: unknown field (expected one of: name, value)");
  EXPECT_EQ(error_of(minimal_with("env: [{name: A, vaule: x}]\n")),
            "env[0].vaule: unknown field (did you mean value?)");
  EXPECT_EQ(error_of(minimal_with("env: [{name: A, value: [x]}]\n")),
            "env[0].value: expected a string, got a list");
  EXPECT_EQ(error_of(minimal_with("env: [{name: A, value: \"a\\0b\"}]\n")),
            "env[0].value: must not contain NUL bytes");
}

// --- files ---

TEST(SpecFiles, Modes) {
  auto mode = [](std::string_view m) {
    return parse_ok(minimal_with("files: [{path: /f, content: x, mode: " + std::string(m) + "}]\n"))
        .files.at(0)
        .mode;
  };
  EXPECT_EQ(mode("\"0755\""), 0755u);
  EXPECT_EQ(mode("\"755\""), 0755u);  // a string is always octal
  EXPECT_EQ(mode("'0600'"), 0600u);
  EXPECT_EQ(mode("0755"), 0755u);  // a leading zero means octal, as in YAML 1.1 and Kubernetes
  EXPECT_EQ(mode("0o644"), 0644u);
  EXPECT_EQ(mode("420"), 0644u);  // plain decimal, Kubernetes defaultMode style
  EXPECT_EQ(mode("\"04755\""), 04755u);
  EXPECT_EQ(mode("0"), 0u);
  EXPECT_EQ(parse_ok(minimal_with("files: [{path: /f, content: x}]\n")).files[0].mode, 0644u);
}

TEST(SpecFiles, ModeErrors) {
  auto err = [](std::string_view m) {
    return error_of(
        minimal_with("files: [{path: /f, content: x, mode: " + std::string(m) + "}]\n"));
  };
  EXPECT_EQ(err("\"0999\""),
            "files[0].mode: expected an octal mode such as \"0644\", got \"0999\"");
  EXPECT_EQ(err("rwx"), "files[0].mode: expected an octal mode such as \"0644\", got \"rwx\"");
  EXPECT_EQ(err("-1"), "files[0].mode: expected an octal mode such as \"0644\", got \"-1\"");
  EXPECT_EQ(err("[7, 5, 5]"), "files[0].mode: expected an octal mode such as \"0644\", got a list");
  EXPECT_EQ(err("\"010000\""), "files[0].mode: must be at most 07777, got \"010000\"");
  EXPECT_EQ(err("99999"), "files[0].mode: must be at most 07777, got \"99999\"");
}

TEST(SpecFiles, Errors) {
  auto err = [](std::string_view files) {
    return error_of(minimal_with("files:\n" + std::string(files)));
  };
  EXPECT_EQ(err("  - {path: /a, content: x}\n  - {content: y}\n"), "files[1].path: required");
  EXPECT_EQ(err("  - {path: app.py, content: x}\n"),
            "files[0].path: must be an absolute path, got \"app.py\"");
  EXPECT_EQ(err("  - {path: /app/../../etc/passwd, content: x}\n"),
            "files[0].path: must not contain \"..\", got \"/app/../../etc/passwd\"");
  EXPECT_EQ(err("  - {path: /app/, content: x}\n"),
            "files[0].path: must name a file, not a directory, got \"/app/\"");
  EXPECT_EQ(err("  - {path: /, content: x}\n"),
            "files[0].path: must name a file, not a directory, got \"/\"");
  EXPECT_EQ(err("  - {path: /a, content: x, source: y}\n"),
            "files[0]: exactly one of source, content is required");
  EXPECT_EQ(err("  - {path: /a}\n"), "files[0]: exactly one of source, content is required");
  EXPECT_EQ(
      err("  - {path: /a, content: x}\n  - {path: /b, content: x}\n  - {path: //a, content: y}\n"),
      "files[2].path: \"/a\" is already placed by files[0]");
  EXPECT_EQ(err("  - {path: /a, contents: x}\n"),
            "files[0].contents: unknown field (did you mean content?)");
  EXPECT_EQ(err("  - {path: /a, content: {x: 1}}\n"),
            "files[0].content: expected a string, got a mapping");
  EXPECT_EQ(err("  - {path: /a, source: ''}\n"), "files[0].source: must not be empty");
  EXPECT_EQ(error_of(minimal_with("files: {path: /a}\n")),
            "files: expected a list of {path, source|content, mode} entries, got a mapping");
}

TEST(SpecFiles, BinaryContent) {
  AppSpec s = parse_ok(minimal_with("files: [{path: /bin.dat, content: !!binary \"/wAB\"}]\n"));
  EXPECT_EQ(s.files[0].content, std::string("\xff\x00\x01", 3));

  EXPECT_EQ(error_of(minimal_with("files: [{path: /a, content: !!binary \"***\"}]\n")),
            "files[0].content: !!binary content is not valid base64");
  EXPECT_EQ(error_of(minimal_with("files: [{path: /a, content: \"\xff\xfe\"}]\n")),
            "files[0].content: must be valid UTF-8 (write binary content as !!binary base64)");
}

TEST(SpecFiles, ContentMayHoldAnyText) {
  AppSpec s = parse_ok(minimal_with(R"(files:
  - path: /etc/script.sh
    mode: "0755"
    content: |
      #!/bin/sh
      echo "a: b" # not a comment
  - path: /zero
    content: "a\0b"
)"));
  EXPECT_EQ(s.files[0].content, "#!/bin/sh\necho \"a: b\" # not a comment\n");
  EXPECT_EQ(s.files[1].content, std::string("a\0b", 3));
}

// --- ports ---

TEST(SpecPorts, Errors) {
  auto err = [](std::string_view ports) {
    return error_of(minimal_with("ports: " + std::string(ports) + "\n"));
  };
  EXPECT_EQ(err("[{containerPort: 0}]"),
            "ports[0].containerPort: must be between 1 and 65535, got 0");
  EXPECT_EQ(err("[{containerPort: 80}, {containerPort: 70000}]"),
            "ports[1].containerPort: must be between 1 and 65535, got 70000");
  EXPECT_EQ(err("[{containerPort: 99999999999999999999999}]"),
            "ports[0].containerPort: must be between 1 and 65535, got 99999999999999999999999");
  EXPECT_EQ(err("[{containerPort: http}]"),
            "ports[0].containerPort: expected an integer, got \"http\"");
  EXPECT_EQ(err("[{containerPort: 80.5}]"),
            "ports[0].containerPort: expected an integer, got \"80.5\"");
  EXPECT_EQ(err("[{containerPort: [80]}]"),
            "ports[0].containerPort: expected an integer, got a list");
  EXPECT_EQ(err("[{name: http}]"), "ports[0].containerPort: required");
  EXPECT_EQ(err("[{containerPort: 80, protocol: tcp}]"),
            "ports[0].protocol: must be TCP or UDP, got \"tcp\"");
  EXPECT_EQ(err("[{containerPort: 80, protocol: SCTP}]"),
            "ports[0].protocol: must be TCP or UDP, got \"SCTP\"");
  EXPECT_EQ(err("[{containerPort: 80, hostPort: 80}]"),
            "ports[0].hostPort: unknown field (expected one of: name, containerPort, protocol)");
  EXPECT_EQ(err("[{containerPort: 80, name: a}, {containerPort: 81, name: a}]"),
            "ports[1].name: \"a\" is already used by ports[0]");
  EXPECT_EQ(err("[{containerPort: 80}, {containerPort: 80, protocol: TCP}]"),
            "ports[1].containerPort: 80/TCP is already declared by ports[0]");
  EXPECT_EQ(err("8080"),
            "ports: expected a list of {name, containerPort, protocol} entries, got \"8080\"");
  for (std::string_view bad : {"HTTP", "8080", "-web", "web-", "w--b", "a-very-long-port-name"}) {
    std::string e = err("[{containerPort: 80, name: \"" + std::string(bad) + "\"}]");
    EXPECT_EQ(e.rfind("ports[0].name: must be at most 15 lowercase letters", 0), 0u) << e;
  }
  // Same number, other protocol: fine (DNS serves both).
  EXPECT_EQ(
      parse_ok(minimal_with("ports: [{containerPort: 53}, {containerPort: 53, protocol: UDP}]\n"))
          .ports.size(),
      2u);
}

// --- readiness probe ---

std::string probe_spec(std::string_view probe) {
  return minimal_with(
      "ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, "
      "protocol: UDP}]\nreadinessProbe:\n" +
      std::string(probe));
}

TEST(SpecProbe, Defaults) {
  AppSpec s = parse_ok(probe_spec("  httpGet: {port: 8080}\n"));
  const Probe& p = *s.readiness_probe;
  EXPECT_EQ(p.http_get->path, "/");
  EXPECT_TRUE(p.http_get->headers.empty());
  EXPECT_EQ(p.initial_delay, milliseconds(0));
  EXPECT_EQ(p.period, milliseconds(10000));
  EXPECT_EQ(p.timeout, milliseconds(1000));
  EXPECT_EQ(p.failure_threshold, 3);
}

TEST(SpecProbe, SecondsAndMillisecondsPrecedence) {
  AppSpec secs = parse_ok(
      probe_spec("  tcpSocket: {port: 8080}\n  initialDelaySeconds: 2\n  periodSeconds: 3\n"
                 "  timeoutSeconds: 4\n  failureThreshold: 5\n"));
  const Probe& p = *secs.readiness_probe;
  EXPECT_EQ(p.initial_delay, milliseconds(2000));
  EXPECT_EQ(p.period, milliseconds(3000));
  EXPECT_EQ(p.timeout, milliseconds(4000));
  EXPECT_EQ(p.failure_threshold, 5);

  AppSpec both = parse_ok(probe_spec(
      "  tcpSocket: {port: 8080}\n  initialDelayMilliseconds: 7\n  initialDelaySeconds: 2\n"
      "  periodSeconds: 3\n  periodMilliseconds: 20\n  timeoutSeconds: 4\n"
      "  timeoutMilliseconds: 250\n"));
  const Probe& q = *both.readiness_probe;
  EXPECT_EQ(q.initial_delay, milliseconds(7));
  EXPECT_EQ(q.period, milliseconds(20));
  EXPECT_EQ(q.timeout, milliseconds(250));

  AppSpec ms_only = parse_ok(probe_spec("  tcpSocket: {port: 8080}\n  periodMilliseconds: 5\n"));
  EXPECT_EQ(ms_only.readiness_probe->period, milliseconds(5));
  EXPECT_EQ(ms_only.readiness_probe->timeout, milliseconds(1000));
}

TEST(SpecProbe, DurationErrors) {
  auto err = [](std::string_view fields) {
    return error_of(probe_spec("  tcpSocket: {port: 8080}\n" + std::string(fields)));
  };
  EXPECT_EQ(err("  periodSeconds: 0\n"),
            "readinessProbe.periodSeconds: must be between 1 and 86400, got 0");
  EXPECT_EQ(err("  periodMilliseconds: 0\n"),
            "readinessProbe.periodMilliseconds: must be between 1 and 86400000, got 0");
  EXPECT_EQ(err("  timeoutMilliseconds: -5\n"),
            "readinessProbe.timeoutMilliseconds: must be between 1 and 86400000, got -5");
  EXPECT_EQ(err("  initialDelaySeconds: -1\n"),
            "readinessProbe.initialDelaySeconds: must be between 0 and 86400, got -1");
  EXPECT_EQ(err("  periodSeconds: 1.5\n"),
            "readinessProbe.periodSeconds: expected an integer, got \"1.5\"");
  EXPECT_EQ(err("  periodSeconds: 10s\n"),
            "readinessProbe.periodSeconds: expected an integer, got \"10s\"");
  EXPECT_EQ(err("  periodSeconds: {a: 1}\n"),
            "readinessProbe.periodSeconds: expected an integer, got a mapping");
  EXPECT_EQ(err("  failureThreshold: 0\n"),
            "readinessProbe.failureThreshold: must be between 1 and 1000000, got 0");
  // Even when the *Milliseconds variant wins, a bad *Seconds value is reported.
  EXPECT_EQ(err("  periodSeconds: x\n  periodMilliseconds: 10\n"),
            "readinessProbe.periodSeconds: expected an integer, got \"x\"");
}

TEST(SpecProbe, Handlers) {
  AppSpec tcp = parse_ok(probe_spec("  tcpSocket: {port: 9000}\n"));
  EXPECT_EQ(tcp.readiness_probe->tcp_socket->port, 9000);
  EXPECT_FALSE(tcp.readiness_probe->http_get);

  AppSpec exec = parse_ok(probe_spec("  exec: {command: [/bin/true]}\n"));
  EXPECT_EQ(exec.readiness_probe->exec->command, (std::vector<std::string>{"/bin/true"}));

  const std::string kOne = "readinessProbe: exactly one of httpGet, tcpSocket, exec is required";
  EXPECT_EQ(error_of(probe_spec("  periodSeconds: 1\n")), kOne);
  EXPECT_EQ(error_of(probe_spec("  tcpSocket: {port: 1}\n  exec: {command: [x]}\n")), kOne);
  EXPECT_EQ(error_of(minimal_with("readinessProbe: {}\n")), kOne);
  EXPECT_EQ(error_of(minimal_with("readinessProbe: [httpGet]\n")),
            "readinessProbe: expected a mapping, got a list");
  EXPECT_EQ(error_of(probe_spec("  exec: {command: []}\n")),
            "readinessProbe.exec.command: must not be empty");
  EXPECT_EQ(error_of(probe_spec("  exec: {}\n")), "readinessProbe.exec.command: required");
  EXPECT_EQ(error_of(probe_spec("  exec: {command: /bin/true}\n")),
            "readinessProbe.exec.command: expected a list of strings, got \"/bin/true\"");
  EXPECT_EQ(error_of(probe_spec("  grpc: {port: 1}\n")),
            "readinessProbe.grpc: unknown field (expected one of: httpGet, tcpSocket, exec, "
            "initialDelaySeconds, initialDelayMilliseconds, periodSeconds, periodMilliseconds, "
            "timeoutSeconds, timeoutMilliseconds, failureThreshold)");
  EXPECT_EQ(error_of(probe_spec("  httpGet: {port: 1}\n  perodSeconds: 1\n")),
            "readinessProbe.perodSeconds: unknown field (did you mean periodSeconds?)");
  EXPECT_EQ(error_of(probe_spec("  httpGet: {port: 1, scheme: HTTPS}\n")),
            "readinessProbe.httpGet.scheme: unknown field (expected one of: path, port, "
            "httpHeaders)");
  EXPECT_EQ(error_of(probe_spec("  tcpSocket: {port: 1, host: x}\n")),
            "readinessProbe.tcpSocket.host: unknown field (expected one of: port)");
}

TEST(SpecProbe, Ports) {
  auto port = [](std::string_view p) {
    return parse_ok(probe_spec("  httpGet: {port: " + std::string(p) + "}\n"))
        .readiness_probe->http_get->port;
  };
  EXPECT_EQ(port("8080"), 8080);
  EXPECT_EQ(port("\"8080\""), 8080);  // number-like strings are numbers: names need a letter
  EXPECT_EQ(port("http"), 8080);
  EXPECT_EQ(port("9999"), 9999);  // a number need not be declared in ports
  EXPECT_EQ(parse_ok(probe_spec("  tcpSocket: {port: http}\n")).readiness_probe->tcp_socket->port,
            8080);

  auto err = [](std::string_view p) {
    return error_of(probe_spec("  httpGet: {port: " + std::string(p) + "}\n"));
  };
  EXPECT_EQ(err("70000"), "readinessProbe.httpGet.port: must be between 1 and 65535, got 70000");
  EXPECT_EQ(err("0"), "readinessProbe.httpGet.port: must be between 1 and 65535, got 0");
  EXPECT_EQ(err("-1"), "readinessProbe.httpGet.port: must be between 1 and 65535, got -1");
  EXPECT_EQ(err("web"),
            "readinessProbe.httpGet.port: unknown port name \"web\" (named ports: http, dns)");
  EXPECT_EQ(err("dns"), "readinessProbe.httpGet.port: port \"dns\" is UDP; this needs a TCP port");
  EXPECT_EQ(err("[8080]"),
            "readinessProbe.httpGet.port: expected a port number or a name from ports, got a "
            "list");
  EXPECT_EQ(error_of(probe_spec("  httpGet: {path: /}\n")),
            "readinessProbe.httpGet.port: required");
  EXPECT_EQ(error_of(minimal_with("readinessProbe: {tcpSocket: {port: http}}\n")),
            "readinessProbe.tcpSocket.port: unknown port name \"http\" (no port in ports has a "
            "name)");
}

TEST(SpecProbe, HttpPathAndHeaders) {
  AppSpec s = parse_ok(probe_spec(R"(  httpGet:
    path: /ready?full=1
    port: http
    httpHeaders:
      - {name: Host, value: example.com}
      - {name: X-Token, value: "a b"}
      - {name: X-Empty}
)"));
  const HttpGetAction& h = *s.readiness_probe->http_get;
  EXPECT_EQ(h.path, "/ready?full=1");
  EXPECT_EQ(h.headers, (std::map<std::string, std::string>{
                           {"Host", "example.com"}, {"X-Token", "a b"}, {"X-Empty", ""}}));

  auto err = [](std::string_view http) {
    return error_of(probe_spec("  httpGet: " + std::string(http) + "\n"));
  };
  EXPECT_EQ(err("{port: 1, path: healthz}"),
            "readinessProbe.httpGet.path: must start with '/' and contain no spaces or control "
            "characters, got \"healthz\"");
  EXPECT_EQ(err("{port: 1, path: '/a b'}"),
            "readinessProbe.httpGet.path: must start with '/' and contain no spaces or control "
            "characters, got \"/a b\"");
  EXPECT_EQ(err("{port: 1, httpHeaders: [{value: x}]}"),
            "readinessProbe.httpGet.httpHeaders[0].name: required");
  EXPECT_EQ(err("{port: 1, httpHeaders: {X: y}}"),
            "readinessProbe.httpGet.httpHeaders: expected a list of {name, value} entries, got a "
            "mapping");
  EXPECT_EQ(err("{port: 1, httpHeaders: [{name: 'Bad Name', value: x}]}"),
            "readinessProbe.httpGet.httpHeaders[0].name: not a valid HTTP header name: \"Bad "
            "Name\"");
  EXPECT_EQ(err("{port: 1, httpHeaders: [{name: X, value: \"a\\r\\nEvil: 1\"}]}"),
            "readinessProbe.httpGet.httpHeaders[0].value: must not contain line breaks");
  EXPECT_EQ(err("{port: 1, httpHeaders: [{name: X-A, value: 1}, {name: x-a, value: 2}]}"),
            "readinessProbe.httpGet.httpHeaders[1].name: header \"x-a\" is given more than once");
}

// --- warmup ---

TEST(SpecWarmup, Steps) {
  AppSpec s = parse_ok(minimal_with(R"(ports: [{name: http, containerPort: 80}]
warmup:
  - httpGet: {port: http, path: /x}
  - httpGet: {port: 81}
    repeat: 1000
  - exec: {command: [/bin/warm, --all]}
    repeat: 2
)"));
  ASSERT_EQ(s.warmup.size(), 3u);
  EXPECT_EQ(s.warmup[0].http_get->port, 80);
  EXPECT_EQ(s.warmup[0].repeat, 1);
  EXPECT_EQ(s.warmup[1].http_get->path, "/");
  EXPECT_EQ(s.warmup[1].repeat, 1000);
  EXPECT_EQ(s.warmup[2].exec->command, (std::vector<std::string>{"/bin/warm", "--all"}));
  EXPECT_EQ(s.warmup[2].repeat, 2);
}

TEST(SpecWarmup, Errors) {
  auto err = [](std::string_view warmup) {
    return error_of(minimal_with("warmup:\n" + std::string(warmup)));
  };
  EXPECT_EQ(err("  - httpGet: {port: 80}\n    repeat: 0\n"),
            "warmup[0].repeat: must be between 1 and 1000000, got 0");
  EXPECT_EQ(err("  - httpGet: {port: 80}\n    repeat: many\n"),
            "warmup[0].repeat: expected an integer, got \"many\"");
  EXPECT_EQ(err("  - exec: {command: [x]}\n  - {repeat: 2}\n"),
            "warmup[1]: exactly one of httpGet, exec is required");
  EXPECT_EQ(err("  - {httpGet: {port: 80}, exec: {command: [x]}}\n"),
            "warmup[0]: exactly one of httpGet, exec is required");
  EXPECT_EQ(err("  - tcpSocket: {port: 80}\n"),
            "warmup[0].tcpSocket: unknown field (expected one of: httpGet, exec, repeat)");
  EXPECT_EQ(err("  - httpGet: {port: 80}\n    repeats: 3\n"),
            "warmup[0].repeats: unknown field (did you mean repeat?)");
  EXPECT_EQ(err("  - httpGet: {port: api}\n"),
            "warmup[0].httpGet.port: unknown port name \"api\" (no port in ports has a name)");
  EXPECT_EQ(err("  - exec: {command: [\"\"]}\n"), "warmup[0].exec.command[0]: must not be empty");
  EXPECT_EQ(error_of(minimal_with("warmup: {httpGet: {port: 80}}\n")),
            "warmup: expected a list of steps, got a mapping");
}

// --- quiesce ---

TEST(SpecQuiesce, Values) {
  EXPECT_EQ(parse_ok(minimal_with("quiesceTimeoutMilliseconds: 0\n")).quiesce_timeout,
            milliseconds(0));
  EXPECT_EQ(parse_ok(minimal_with("quiesceTimeoutMilliseconds: 30000\n")).quiesce_timeout,
            milliseconds(30000));
  EXPECT_EQ(error_of(minimal_with("quiesceTimeoutMilliseconds: -1\n")),
            "quiesceTimeoutMilliseconds: must be between 0 and 86400000, got -1");
  EXPECT_EQ(error_of(minimal_with("quiesceTimeoutMilliseconds: 2s\n")),
            "quiesceTimeoutMilliseconds: expected an integer, got \"2s\"");
  EXPECT_EQ(error_of(minimal_with("quiesceTimeoutSeconds: 2\n")),
            "quiesceTimeoutSeconds: unknown field (did you mean quiesceTimeoutMilliseconds?)");
}

// --- document-level errors ---

TEST(SpecDocument, UnknownTopLevelFields) {
  EXPECT_EQ(error_of(minimal_with("workingdir: /a\n")),
            "workingdir: unknown field (did you mean workingDir?)");
  EXPECT_EQ(error_of(minimal_with("image: nginx\n")),
            "image: unknown field (expected one of: name, rootfs, command, args, env, workingDir, "
            "files, ports, readinessProbe, warmup, quiesceTimeoutMilliseconds, restore)");
  EXPECT_EQ(error_of(minimal_with("livenessProbe: {}\n")).rfind("livenessProbe: unknown field", 0),
            0u);
}

// restore.paging: how restores get the app's memory (issue 10).
TEST(SpecRestore, PagingIsParsedCheckedAndRoundTrips) {
  EXPECT_EQ(parse_ok(minimal_with("")).restore_paging, "");
  for (const char* p : {"lazy", "eager", "auto"}) {
    AppSpec s = parse_ok(minimal_with(std::string("restore: {paging: ") + p + "}\n"));
    EXPECT_EQ(s.restore_paging, p);
    auto again = parse(to_yaml(s), "/");
    ASSERT_TRUE(again.ok()) << again.error().message();
    EXPECT_EQ(*again, s);
  }
  EXPECT_EQ(error_of(minimal_with("restore: {paging: sometimes}\n")),
            "restore.paging: must be auto, lazy or eager, got \"sometimes\"");
  EXPECT_EQ(error_of(minimal_with("restore: lazy\n")).rfind("restore: expected a mapping", 0), 0u);
  EXPECT_EQ(error_of(minimal_with("restore: {pages: lazy}\n")).rfind("restore.pages: unknown field", 0),
            0u);
}

TEST(SpecDocument, DuplicateAndNonStringKeys) {
  EXPECT_EQ(error_of(minimal_with("name: other\n")), "name: given more than once");
  EXPECT_EQ(error_of(minimal_with("readinessProbe: {tcpSocket: {port: 1, port: 2}}\n")),
            "readinessProbe.tcpSocket.port: given more than once");
  EXPECT_EQ(error_of(minimal_with("? [a, b]\n: c\n")),
            "spec: field names must be strings, got a list");
  EXPECT_EQ(error_of(minimal_with("~: c\n")), "spec: field names must be strings, got null");
}

TEST(SpecDocument, MalformedYaml) {
  std::string e = error_of("name: a\ncommand: [x, y\nrootfs: {directory: /r}\n");
  EXPECT_EQ(e.rfind("spec: invalid YAML at line ", 0), 0u) << e;
  EXPECT_NE(e.find(", column "), std::string::npos) << e;

  EXPECT_EQ(error_of("name: a\n  bad: indent\n"),
            "spec: invalid YAML at line 2, column 6: illegal map value");
  std::string tab = error_of("name: a\n\tcommand: [x]\n");
  EXPECT_EQ(tab.rfind("spec: invalid YAML at line 2", 0), 0u) << tab;
  std::string alias = error_of("name: *nope\n");
  EXPECT_EQ(alias.rfind("spec: invalid YAML at line 1", 0), 0u) << alias;
}

TEST(SpecDocument, WrongShapes) {
  EXPECT_EQ(error_of(""),
            "spec: the document is empty; expected a mapping with name, rootfs and command");
  EXPECT_EQ(error_of("# only a comment\n"),
            "spec: the document is empty; expected a mapping with name, rootfs and command");
  EXPECT_EQ(error_of("~\n"),
            "spec: the document is empty; expected a mapping with name, rootfs and command");
  EXPECT_EQ(error_of("- name: a\n"), "spec: expected a mapping at the top level, got a list");
  EXPECT_EQ(error_of("hello\n"), "spec: expected a mapping at the top level, got \"hello\"");
  EXPECT_EQ(error_of(std::string(kMinimal) + "---\n" + kMinimal),
            "spec: expected one YAML document, found more");
  // yaml-cpp 0.7's LoadAll loops forever on these (fuzz/corpus/spec/regress-*).
  EXPECT_EQ(error_of(","),
            "spec: the document is empty; expected a mapping with name, rootfs and command");
  EXPECT_EQ(error_of(",a\n"),
            "spec: the document is empty; expected a mapping with name, rootfs and command");
  EXPECT_EQ(error_of("{name: a}, "), "spec: expected one YAML document, found more");
}

TEST(SpecDocument, SizeCap) {
  std::string big = minimal_with("args: [\"" + std::string(kMaxSpecBytes, 'x') + "\"]\n");
  auto r = parse(big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message().rfind("spec: ", 0), 0u);
  EXPECT_NE(r.error().message().find("1048576-byte limit"), std::string::npos)
      << r.error().message();

  // Just under the cap is fine.
  std::string content(kMaxSpecBytes - 200, 'y');
  AppSpec s = parse_ok(minimal_with("files: [{path: /f, content: " + content + "}]\n"));
  EXPECT_EQ(s.files[0].content->size(), content.size());
}

TEST(SpecDocument, DeepNestingIsAnErrorNotACrash) {
  std::string deep = minimal_with("args: " + std::string(200000, '[') + "\n");
  std::string e = error_of(deep);
  EXPECT_EQ(e.rfind("spec: invalid YAML", 0), 0u) << e;
}

TEST(SpecDocument, AliasExpansionIsBounded) {
  // 2001 warm-up steps, all one anchored step with 1000 headers: a 40 KB document that names
  // two million headers.
  std::string bomb =
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\n"
      "warmup:\n";
  std::string headers = "[";
  for (int j = 0; j < 1000; ++j)
    headers += (j ? ", " : "") + std::string("{name: X") + std::to_string(j) + ", value: v}";
  headers += "]";
  bomb += "  - &s {httpGet: {port: 80, httpHeaders: " + headers + "}}\n";
  for (int j = 0; j < 2000; ++j) bomb += "  - *s\n";
  std::string e = error_of(bomb);
  EXPECT_EQ(e.rfind("warmup", 0), 0u) << e;
  EXPECT_NE(e.find("more than 1000000 YAML nodes"), std::string::npos) << e;
}

TEST(SpecDocument, ArbitraryShapesNeverThrow) {
  // Every value slot of a full spec, filled with every kind of node: each must either parse or be
  // rejected with a "field: problem" message, never throw.
  const std::vector<std::string> kValues = {"~",
                                            "[]",
                                            "{}",
                                            "x",
                                            "''",
                                            "0",
                                            "-1",
                                            "1.5",
                                            "99999999999999999999",
                                            "[1, [2]]",
                                            "{a: 1}",
                                            "[{name: a}]",
                                            "!!binary AAAA",
                                            "!!str 5",
                                            "http",
                                            "'0755'",
                                            "/abs"};
  const std::vector<std::string> kTemplates = {
      "name: @\nrootfs: {directory: /r}\ncommand: [x]\n",
      "name: a\nrootfs: @\ncommand: [x]\n",
      "name: a\nrootfs: {directory: @}\ncommand: [x]\n",
      "name: a\nrootfs: {debootstrap: @}\ncommand: [x]\n",
      "name: a\nrootfs: {debootstrap: {suite: @, packages: @}}\ncommand: [x]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [@]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nargs: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nenv: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nenv: [@]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nenv: [{name: @, value: @}]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nworkingDir: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nfiles: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nfiles: [{path: @, content: @, mode: @}]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nfiles: [{path: /a, source: @}]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nports: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nports: [{name: @, containerPort: @, "
      "protocol: @}]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {httpGet: @}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {httpGet: {path: @, port: "
      "@, httpHeaders: @}}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {httpGet: {port: 1, "
      "httpHeaders: [{name: @, value: @}]}}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {tcpSocket: {port: @}, "
      "periodSeconds: @, periodMilliseconds: @, failureThreshold: @}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {exec: @}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nreadinessProbe: {exec: {command: @}}\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nwarmup: @\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nwarmup: [@]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nwarmup: [{exec: {command: [x]}, repeat: "
      "@}]\n",
      "name: a\nrootfs: {directory: /r}\ncommand: [x]\nquiesceTimeoutMilliseconds: @\n",
      "@: 1\n",
  };
  int parsed = 0, rejected = 0;
  for (const std::string& t : kTemplates) {
    for (const std::string& v : kValues) {
      std::string y;
      for (char c : t) {
        if (c == '@') {
          y += v;
        } else {
          y += c;
        }
      }
      Result<AppSpec> r = Error("unset");
      EXPECT_NO_THROW(r = parse(y)) << y;
      if (r.ok()) {
        ++parsed;
        // Whatever parsed must survive the round trip too.
        auto again = parse(to_yaml(*r), "/elsewhere");
        ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << to_yaml(*r);
        EXPECT_EQ(*again, *r) << y;
      } else {
        ++rejected;
        const std::string& m = r.error().message();
        EXPECT_NE(m.find(": "), std::string::npos) << m;
        EXPECT_EQ(m.find("yaml-cpp"), std::string::npos) << m;
      }
    }
  }
  EXPECT_GT(parsed, 20);
  EXPECT_GT(rejected, 200);
}

// --- to_yaml round trip ---

TEST(SpecRoundTrip, FullSpec) {
  AppSpec s = parse_ok(kFull, "/srv/counter");
  std::string y = to_yaml(s);
  // Paths are absolute, so the base directory no longer matters.
  AppSpec back = parse_ok(y, "/somewhere/else");
  EXPECT_EQ(back, s) << y;
  EXPECT_EQ(to_yaml(back), y);  // stable
  EXPECT_NE(y.find("periodMilliseconds: 50"), std::string::npos) << y;
  EXPECT_NE(y.find("\"/srv/counter/app.py\""), std::string::npos) << y;
  EXPECT_NE(y.find("\"0755\""), std::string::npos) << y;
  EXPECT_EQ(y.find("Seconds"), std::string::npos) << y;
}

TEST(SpecRoundTrip, EveryRootfsAndHandlerKind) {
  for (std::string rootfs : {"{tarball: /img/r.tar.gz}", "{directory: /r}",
                             "{image: '127.0.0.1:5000/team/app:v1'}", "{image: 'oci:/l:v2'}",
                             "{image: 'oci-archive:/a.tar'}",
                             "{debootstrap: {suite: bookworm, variant: fakechroot, packages: [a1, "
                             "b2]}}",
                             "{debootstrap: {suite: trixie}}"}) {
    for (std::string probe : {"{tcpSocket: {port: 9}, initialDelaySeconds: 3}",
                              "{exec: {command: [/bin/sh, -c, 'exit 0']}, timeoutMilliseconds: 5}",
                              "{httpGet: {port: 9, httpHeaders: [{name: A, value: ''}]}}"}) {
      std::string y = "name: x\nrootfs: " + rootfs + "\ncommand: [c]\nreadinessProbe: " + probe +
                      "\nwarmup: [{exec: {command: [w]}, repeat: 3}]\n";
      AppSpec s = parse_ok(y);
      EXPECT_EQ(parse_ok(to_yaml(s)), s) << to_yaml(s);
    }
  }
}

TEST(SpecRoundTrip, TrickyStrings) {
  const std::vector<std::string> kTricky = {"null",
                                            "~",
                                            "true",
                                            "yes",
                                            "0755",
                                            "0x10",
                                            "1e3",
                                            "",
                                            " leading",
                                            "trailing ",
                                            "multi\nline\n",
                                            "\r\n",
                                            "tab\there",
                                            "# not a comment",
                                            "- dash",
                                            "key: value",
                                            "\"quoted\"",
                                            "'single'",
                                            "back\\slash",
                                            "{flow}",
                                            "[seq]",
                                            "*alias",
                                            "&anchor",
                                            "!tag",
                                            "%percent",
                                            "@at",
                                            "`tick`",
                                            "|",
                                            ">",
                                            "...",
                                            "---",
                                            "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80",
                                            "\xe2\x80\xa8 line sep \xc2\x85 nel",
                                            "\x01\x02\x1b[0m\x7f",
                                            std::string(500, 'z') + " " + std::string(500, 'w')};
  AppSpec s = parse_ok(kMinimal);
  int i = 0;
  for (const std::string& t : kTricky) {
    s.args.push_back(t);
    s.env.emplace_back("V" + std::to_string(i), t);
    s.files.push_back(FileEntry{.path = "/f" + std::to_string(i), .content = t, .mode = 0600});
    ++i;
  }
  s.working_dir = "/with space/and: colon";
  std::string y = to_yaml(s);
  AppSpec back = parse_ok(y);
  EXPECT_EQ(back.args, s.args) << y;
  EXPECT_EQ(back.env, s.env);
  EXPECT_EQ(back, s);
}

TEST(SpecRoundTrip, NonUtf8ContentGoesAsBinary) {
  AppSpec s = parse_ok(kMinimal);
  std::string bytes;
  for (int c = 0; c < 256; ++c) bytes.push_back(static_cast<char>(c));
  s.files.push_back(FileEntry{.path = "/blob", .content = bytes, .mode = 0400});
  std::string y = to_yaml(s);
  EXPECT_NE(y.find("!!binary"), std::string::npos) << y;
  EXPECT_EQ(parse_ok(y), s);
}

TEST(SpecRoundTrip, DefaultsSurvive) {
  AppSpec s = parse_ok(kMinimal);
  std::string y = to_yaml(s);
  EXPECT_EQ(parse_ok(y), s) << y;
  EXPECT_NE(y.find("quiesceTimeoutMilliseconds: 2000"), std::string::npos) << y;
  EXPECT_EQ(y.find("readinessProbe"), std::string::npos) << y;
}

TEST(SpecRoundTrip, ModesAndPorts) {
  AppSpec s = parse_ok(minimal_with(R"(files:
  - {path: /a, content: x, mode: 0}
  - {path: /b, content: x, mode: "04755"}
  - {path: /c, content: x, mode: 0777}
ports: [{containerPort: 1}, {name: p, containerPort: 65535, protocol: UDP}]
)"));
  std::string y = to_yaml(s);
  EXPECT_EQ(parse_ok(y), s) << y;
  EXPECT_NE(y.find("\"04755\""), std::string::npos) << y;
  EXPECT_NE(y.find("\"0000\""), std::string::npos) << y;
}

// --- load_spec ---

class LoadSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = stdfs::path(::testing::TempDir()) / ("spec_test-" + fs::random_hex(6));
    ASSERT_TRUE(stdfs::create_directories(dir_));
  }
  void TearDown() override {
    std::error_code ec;
    stdfs::remove_all(dir_, ec);
  }
  stdfs::path write(const std::string& name, const std::string& text) {
    stdfs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  stdfs::path dir_;
};

TEST_F(LoadSpecTest, ResolvesRelativePathsAgainstTheFilesDirectory) {
  stdfs::create_directories(dir_ / "app");
  stdfs::path file = write("app/prewarm.yaml", kFull);
  auto r = load_spec(file);
  ASSERT_TRUE(r.ok()) << r.error().message();
  stdfs::path app = (dir_ / "app").lexically_normal();
  EXPECT_EQ(r->rootfs.path, app / "rootfs");
  EXPECT_EQ(r->files[0].source, app / "app.py");
  EXPECT_EQ(*r, parse_ok(kFull, app));
}

TEST_F(LoadSpecTest, AcceptsARelativeFileName) {
  stdfs::path file = write("s.yaml", "name: a\ncommand: [x]\nrootfs: {directory: r}\n");
  stdfs::path rel = stdfs::relative(file);
  ASSERT_TRUE(rel.is_relative());
  auto r = load_spec(rel);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->rootfs.path, stdfs::absolute(dir_ / "r").lexically_normal());
}

TEST_F(LoadSpecTest, MissingFileNamesTheFile) {
  auto r = load_spec(dir_ / "nope.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find((dir_ / "nope.yaml").string()), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("No such file"), std::string::npos) << r.error().message();
  EXPECT_EQ(r.error().errno_value(), ENOENT);
}

TEST_F(LoadSpecTest, ErrorsNameTheFileAndTheField) {
  stdfs::path file = write("bad.yaml",
                           "name: a\ncommand: [x]\nrootfs: {directory: r}\nports: "
                           "[{containerPort: 70000}]\n");
  auto r = load_spec(file);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            file.string() + ": ports[0].containerPort: must be between 1 and 65535, got 70000");
}

TEST_F(LoadSpecTest, RefusesOversizedFiles) {
  stdfs::path file = write("huge.yaml", std::string(kMaxSpecBytes + 1, '#'));
  auto r = load_spec(file);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("huge.yaml"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("larger than"), std::string::npos) << r.error().message();
}

TEST_F(LoadSpecTest, DirectoryInsteadOfFile) {
  auto r = load_spec(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(dir_.filename().string()), std::string::npos)
      << r.error().message();
}

}  // namespace
}  // namespace prewarm::spec
