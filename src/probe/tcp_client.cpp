// Non-blocking TCP connect and fd waits bounded by a Deadline.
#include "probe/tcp_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace prewarm::probe {
namespace {

Error connect_error(int err) {
  // The common case while an instance is starting; keep it short and lower-case.
  if (err == ECONNREFUSED) return Error("connection refused", err);
  return Error::sys("connect", err);
}

}  // namespace

int Deadline::poll_ms() const {
  auto left = at_ - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 1'000'000'000 ? 1'000'000'000 : static_cast<int>(ms);
}

Error Deadline::timed_out() const {
  return Error("timed out after " + std::to_string(budget_.count()) + " ms", ETIMEDOUT);
}

Status wait_fd(int fd, short events, const Deadline& deadline) {
  for (;;) {
    int ms = deadline.poll_ms();
    if (ms == 0) return deadline.timed_out();
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("poll", errno);
    }
    // POLLERR/POLLHUP also end the wait: the following recv/send/getsockopt reports why.
    if (n > 0) return ok_status();
  }
}

Result<UniqueFd> connect_tcp(const std::string& ip, int port, const Deadline& deadline) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (port < 1 || port > 65535) {
    return Error("invalid port " + std::to_string(port) + " (must be 1..65535)", EINVAL);
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return Error("invalid IPv4 address \"" + ip + "\"", EINVAL);
  }

  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::sys("socket", errno);
  // Requests are written in one send; don't let Nagle delay anything on the probe path.
  int one = 1;
  (void)::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  // SAFETY: addr is a fully initialised sockaddr_in and its size is passed alongside.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return fd;
  }
  if (errno != EINPROGRESS && errno != EINTR) return connect_error(errno);

  PW_TRY(wait_fd(fd.get(), POLLOUT, deadline));
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    return Error::sys("getsockopt(SO_ERROR)", errno);
  }
  if (err != 0) return connect_error(err);
  return fd;
}

}  // namespace prewarm::probe
