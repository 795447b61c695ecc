// AppSpec: what the user writes (YAML shaped like a Kubernetes container) to describe an app.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace prewarm::spec {

using Millis = std::chrono::milliseconds;

// Kubernetes probe handlers. Exactly one of http/tcp/exec is set.
struct HttpGetAction {
  std::string path = "/";
  int port = 0;
  std::map<std::string, std::string> headers;  // httpHeaders: [{name, value}]

  bool operator==(const HttpGetAction&) const = default;
};
struct TcpSocketAction {
  int port = 0;

  bool operator==(const TcpSocketAction&) const = default;
};
struct ExecAction {
  std::vector<std::string> command;

  bool operator==(const ExecAction&) const = default;
};

struct Probe {
  std::optional<HttpGetAction> http_get;
  std::optional<TcpSocketAction> tcp_socket;
  std::optional<ExecAction> exec;
  // Kubernetes fields in seconds; the *Milliseconds variants (an extension) take precedence.
  Millis initial_delay{0};
  Millis period{10000};
  Millis timeout{1000};
  int failure_threshold = 3;

  bool operator==(const Probe&) const = default;
};

// One warm-up step: an HTTP request repeated `repeat` times, or a command run in the container.
struct WarmupStep {
  std::optional<HttpGetAction> http_get;  // method GET
  std::optional<ExecAction> exec;
  int repeat = 1;

  bool operator==(const WarmupStep&) const = default;
};

enum class RootfsKind { kDirectory, kTarball, kDebootstrap, kImage };

struct RootfsSource {
  RootfsKind kind = RootfsKind::kDirectory;
  std::filesystem::path path;  // directory or tarball; relative paths resolve against the spec's dir
  // debootstrap recipe
  std::string suite;
  std::vector<std::string> packages;
  std::string variant = "minbase";
  // container image: a reference as spec/image_ref.h reads it (registry, oci:, oci-archive:),
  // with a relative layout path already resolved against the spec's dir
  std::string image;

  bool operator==(const RootfsSource&) const = default;
};

struct FileEntry {
  std::string path;                     // absolute path inside the rootfs
  std::optional<std::string> content;   // inline content, or
  std::optional<std::filesystem::path> source;  // a host file (relative to the spec's dir)
  unsigned mode = 0644;

  bool operator==(const FileEntry&) const = default;
};

struct Port {
  std::string name;
  int container_port = 0;
  std::string protocol = "TCP";

  bool operator==(const Port&) const = default;
};

struct AppSpec {
  std::string name;
  RootfsSource rootfs;
  std::vector<std::string> command;  // Kubernetes `command` (entrypoint)
  std::vector<std::string> args;     // Kubernetes `args`
  std::vector<std::pair<std::string, std::string>> env;  // env: [{name, value}], in order
  std::string working_dir = "/";
  std::vector<FileEntry> files;
  std::vector<Port> ports;
  std::optional<Probe> readiness_probe;
  std::vector<WarmupStep> warmup;
  // How long to wait for open client connections to close before the checkpoint.
  Millis quiesce_timeout{2000};
  // restore.paging: how restores get the app's memory ("lazy", "eager", "auto"; "" as auto).
  std::string restore_paging;

  // command followed by args: what the container runs.
  std::vector<std::string> argv() const;

  // Field-by-field; lets callers (and tests) check that to_yaml/parse_spec round-trips.
  bool operator==(const AppSpec&) const = default;
};

// load_spec and parse_spec refuse larger input: a spec is a page of YAML, and the cap keeps a
// stray multi-gigabyte file (or one stored in a damaged image) from being read into memory.
inline constexpr size_t kMaxSpecBytes = 1 << 20;

// Parses and validates. Errors name the field ("readinessProbe.httpGet.port: must be 1..65535").
// `base_dir` resolves relative paths (normally the spec file's directory).
Result<AppSpec> parse_spec(std::string_view yaml_text, const std::filesystem::path& base_dir);
Result<AppSpec> load_spec(const std::filesystem::path& file);

// Images store a spec in two parts: its YAML without the files (to_yaml of the spec with
// `files` emptied) and the files, which the image's manifest keeps as JSON. yaml-cpp scans
// ~14 MB/s here, so a few KB of an app's source inside the YAML cost every restore ~0.3 ms.
// Parses `yaml_text` and adds `files` with the checks parse_spec makes of its own (each must
// carry its content); errors name "<where>[i]...". The YAML may list files only when `files` is
// empty (images stored before the split).
Result<AppSpec> parse_spec_with_files(std::string_view yaml_text, std::vector<FileEntry> files,
                                      std::string_view where);

// Serialises a parsed spec back to YAML (stored inside checkpoint images; parse_spec reads it).
std::string to_yaml(const AppSpec& spec);

}  // namespace prewarm::spec
