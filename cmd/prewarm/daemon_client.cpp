#include "daemon_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "base/log.h"
#include "base/unique_fd.h"
#include "daemon/daemon.h"
#include "engine/context.h"

namespace prewarm::cli {

using nlohmann::json;

std::optional<DaemonClient> DaemonClient::find(const Globals& g) {
  if (g.no_daemon) return std::nullopt;
  const char* env = std::getenv("PREWARM_DAEMON_SOCKET");
  std::string socket = env && *env ? env : daemon::kDefaultSocket;
  std::error_code ec;
  if (!std::filesystem::exists(socket, ec)) return std::nullopt;
  DaemonClient c(socket);
  auto health = c.call("GET", "/v1/health");
  if (!health.ok() || health->status != 200) {
    log::debug("prewarmd at " + socket + " does not answer; working without it");
    return std::nullopt;
  }
  // Only the daemon of this state directory.
  std::string mine = g.state_dir.empty() ? engine::config_from_env().state_dir.string() : g.state_dir;
  mine = std::filesystem::absolute(mine).lexically_normal().string();
  if (health->body.value("stateDir", "") != mine) return std::nullopt;
  return c;
}

Result<DaemonClient::Answer> DaemonClient::call(const std::string& method, const std::string& path,
                                                const json& body) const {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::sys("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::sys("connect", errno, socket_).with_kind(ErrorKind::kUnavailable);
  const std::string text = body.is_null() ? "" : body.dump();
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: prewarmd\r\nConnection: close\r\n" +
                    "Content-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
                    "\r\n\r\n" + text;
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd.get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return Error::sys("send", errno, socket_);
    off += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[65536];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) resp.append(buf, static_cast<size_t>(n));
  size_t head = resp.find("\r\n\r\n");
  if (resp.size() < 12 || head == std::string::npos)
    return Error(ErrorKind::kRuntime, "prewarmd at " + socket_ + " gave no HTTP answer");
  Answer a;
  a.status = std::atoi(resp.c_str() + 9);
  a.body = json::parse(resp.substr(head + 4), nullptr, false);
  if (a.body.is_discarded()) a.body = nullptr;
  return a;
}

Error DaemonClient::error_of(const Answer& a) {
  const std::string msg = a.body.is_object() ? a.body.value("error", "") : "";
  const std::string kind = a.body.is_object() ? a.body.value("kind", "") : "";
  ErrorKind k = ErrorKind::kRuntime;
  for (ErrorKind c : {ErrorKind::kNotFound, ErrorKind::kInvalidInput, ErrorKind::kConflict,
                      ErrorKind::kIncompatibleHost, ErrorKind::kUnavailable, ErrorKind::kIo,
                      ErrorKind::kPermissionDenied, ErrorKind::kInternal})
    if (kind == error_kind_name(c)) k = c;
  return Error(k, "prewarmd: " + (msg.empty() ? "status " + std::to_string(a.status) : msg));
}

}  // namespace prewarm::cli
