// Reading readiness probes and warm-up steps: Kubernetes-style httpGet, tcpSocket and exec
// handlers, with ports given by number or by the name of an entry in `ports`.
#include "spec/probe_parse.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <set>
#include <string>
#include <utility>

namespace prewarm::spec::detail {

namespace {

constexpr int64_t kMaxRepeat = 1'000'000;
constexpr int64_t kMaxFailureThreshold = 1'000'000;

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

// Kubernetes' IntOrString port: a number, or the name of an entry in `ports`.
Result<int> parse_port_ref(YamlReader& r, const YAML::Node& map, std::string_view path,
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
    PW_ASSIGN(int64_t v, r.as_int(n, p, 1, 65535));
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

Result<HttpGetAction> parse_http_get(YamlReader& r, const YAML::Node& n, std::string_view path,
                                     const std::vector<Port>& ports) {
  PW_TRY(r.check_map(n, path, {"path", "port", "httpHeaders"}));
  HttpGetAction out;
  PW_ASSIGN(auto req_path, r.optional_string(n, path, "path"));
  if (req_path) {
    // It goes into the request line verbatim.
    if (req_path->empty() || req_path->front() != '/' || has_control_char(*req_path) ||
        req_path->find(' ') != std::string::npos)
      return field_error(child(path, "path"),
                         "must start with '/' and contain no spaces or control characters, got " +
                             quote(*req_path));
    out.path = *req_path;
  }
  PW_ASSIGN(out.port, parse_port_ref(r, n, path, ports));

  const YAML::Node headers = n["httpHeaders"];
  if (present(headers)) {
    std::string hp = child(path, "httpHeaders");
    PW_TRY(r.check_list(headers, hp, "{name, value} entries"));
    std::set<std::string> seen;
    for (size_t i = 0; i < headers.size(); ++i) {
      PW_TRY(r.visit(hp));
      std::string p = item(hp, i);
      const YAML::Node h = headers[i];
      PW_TRY(r.check_map(h, p, {"name", "value"}));
      PW_ASSIGN(std::string name, r.required_string(h, p, "name"));
      if (!is_token(name))
        return field_error(child(p, "name"), "not a valid HTTP header name: " + quote(name));
      if (!seen.insert(lower(name)).second)
        return field_error(child(p, "name"), "header " + quote(name) + " is given more than once");
      PW_ASSIGN(auto value, r.optional_string(h, p, "value"));
      // A CR or LF would let the value start a new header line.
      if (value &&
          (value->find('\r') != std::string::npos || value->find('\n') != std::string::npos))
        return field_error(child(p, "value"), "must not contain line breaks");
      out.headers[name] = value.value_or("");
    }
  }
  return out;
}

Result<TcpSocketAction> parse_tcp_socket(YamlReader& r, const YAML::Node& n, std::string_view path,
                                         const std::vector<Port>& ports) {
  PW_TRY(r.check_map(n, path, {"port"}));
  TcpSocketAction out;
  PW_ASSIGN(out.port, parse_port_ref(r, n, path, ports));
  return out;
}

Result<ExecAction> parse_exec(YamlReader& r, const YAML::Node& n, std::string_view path) {
  PW_TRY(r.check_map(n, path, {"command"}));
  ExecAction out;
  PW_ASSIGN(out.command, r.command_list(n, path, "command"));
  return out;
}

Result<WarmupStep> parse_warmup_step(YamlReader& r, const YAML::Node& n, std::string_view path,
                                     const std::vector<Port>& ports) {
  PW_TRY(r.check_map(n, path, {"httpGet", "exec", "repeat"}));
  WarmupStep out;
  const YAML::Node http = n["httpGet"];
  const YAML::Node exec = n["exec"];
  if (present(http) == present(exec))
    return field_error(path, "exactly one of httpGet, exec is required");
  if (present(http)) {
    PW_ASSIGN(out.http_get, parse_http_get(r, http, child(path, "httpGet"), ports));
  }
  if (present(exec)) {
    PW_ASSIGN(out.exec, parse_exec(r, exec, child(path, "exec")));
  }
  PW_ASSIGN(auto repeat, r.optional_int(n, path, "repeat", 1, kMaxRepeat));
  if (repeat) out.repeat = static_cast<int>(*repeat);
  return out;
}

}  // namespace

Result<Probe> parse_probe(YamlReader& r, const YAML::Node& n, std::string_view path,
                          const std::vector<Port>& ports) {
  PW_TRY(r.check_map(n, path,
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
    PW_ASSIGN(out.http_get, parse_http_get(r, http, child(path, "httpGet"), ports));
  }
  if (present(tcp)) {
    PW_ASSIGN(out.tcp_socket, parse_tcp_socket(r, tcp, child(path, "tcpSocket"), ports));
  }
  if (present(exec)) {
    PW_ASSIGN(out.exec, parse_exec(r, exec, child(path, "exec")));
  }

  PW_ASSIGN(out.initial_delay, r.duration(n, path, "initialDelay", out.initial_delay, 0));
  PW_ASSIGN(out.period, r.duration(n, path, "period", out.period, 1));
  PW_ASSIGN(out.timeout, r.duration(n, path, "timeout", out.timeout, 1));
  PW_ASSIGN(auto threshold, r.optional_int(n, path, "failureThreshold", 1, kMaxFailureThreshold));
  if (threshold) out.failure_threshold = static_cast<int>(*threshold);
  return out;
}

Result<std::vector<WarmupStep>> parse_warmup(YamlReader& r, const YAML::Node& n,
                                             const std::vector<Port>& ports) {
  PW_TRY(r.check_list(n, "warmup", "steps"));
  std::vector<WarmupStep> out;
  for (size_t i = 0; i < n.size(); ++i) {
    PW_TRY(r.visit("warmup"));
    PW_ASSIGN(WarmupStep step, parse_warmup_step(r, n[i], item("warmup", i), ports));
    out.push_back(std::move(step));
  }
  return out;
}

}  // namespace prewarm::spec::detail
