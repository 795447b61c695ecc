// Probe handlers: httpGet, tcpSocket and exec, each as one attempt with a timeout.
#include "probe/handlers.h"

#include <cerrno>

#include "probe/tcp_client.h"

namespace prewarm::probe {
namespace {

std::string join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

}  // namespace

Status check_http(const spec::HttpGetAction& action, const std::string& ip,
                  spec::Millis timeout) {
  PW_ASSIGN(HttpResponse resp, http_get(ip, action.port, action.path, action.headers, timeout));
  if (resp.status >= 200 && resp.status < 400) return ok_status();
  std::string path = action.path.empty() || action.path.front() != '/' ? "/" + action.path
                                                                        : action.path;
  Error err("httpGet http://" + ip + ":" + std::to_string(action.port) + path + ": HTTP " +
            std::to_string(resp.status));
  // The app's own words are often the quickest way to see why it isn't ready.
  constexpr size_t kBodyExcerpt = 200;
  if (!resp.body.empty()) {
    std::string excerpt = resp.body.substr(0, kBodyExcerpt);
    if (resp.body.size() > kBodyExcerpt) excerpt += "...";
    return std::move(err).with_detail("response body: " + excerpt);
  }
  return err;
}

Status check_tcp(const spec::TcpSocketAction& action, const std::string& ip,
                 spec::Millis timeout) {
  auto fd = connect_tcp(ip, action.port, Deadline(timeout));
  if (!fd.ok()) {
    return std::move(fd).error().with_context("tcpSocket " + ip + ":" +
                                              std::to_string(action.port));
  }
  // Closing here (the UniqueFd going out of scope) sends FIN straight away, so the app never
  // holds an idle ESTABLISHED connection from the probe.
  return ok_status();
}

Status check_exec(const spec::ExecAction& action, const Target& target, spec::Millis timeout) {
  if (action.command.empty()) return Error("exec: empty command", EINVAL);
  std::string what = "exec [" + join(action.command) + "]";
  if (!target.exec) return Error(what + ": this target cannot run commands", ENOTSUP);
  auto code = target.exec(action.command, timeout);
  if (!code.ok()) return std::move(code).error().with_context(what);
  if (*code != 0) return Error(what + ": exit code " + std::to_string(*code));
  return ok_status();
}

}  // namespace prewarm::probe
