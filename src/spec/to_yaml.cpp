// Writing an AppSpec back to YAML, in a form parse_spec reads to an equal AppSpec.
#include "spec/app_spec.h"

#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "spec/yaml_reader.h"

namespace prewarm::spec {

namespace {

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
    case RootfsKind::kImage:
      put_string(out, "image", spec.rootfs.image);
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
  if (!spec.restore_paging.empty()) {
    out << YAML::Key << "restore" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "paging" << YAML::Value << spec.restore_paging;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace prewarm::spec
