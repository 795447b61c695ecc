// The `criu swrk` transport: a criu child per session over a SOCK_SEQPACKET socketpair, its
// stderr in a memfd, a deadline on every wait and a cap on what it may answer.
#include "criu/swrk.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "criu/criu.h"

namespace prewarm::criu::detail {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// The fd number `criu swrk <fd>` talks on.
constexpr int kSwrkFd = 3;
// criu_resp messages are a few hundred bytes; anything near this is not CRIU talking.
constexpr size_t kMaxResponse = 64 << 10;
constexpr size_t kMaxStderr = 16 << 10;

milliseconds left_until(steady_clock::time_point deadline) {
  return std::max(milliseconds(0),
                  std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()));
}

std::string read_memfd(int fd) {
  std::string out(kMaxStderr, '\0');
  ssize_t n = ::pread(fd, out.data(), out.size(), 0);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string describe_wait_status(int st) {
  RunResult r;
  r.status = st;
  return r.describe();
}

}  // namespace

std::string type_name(criu_req_type t) {
  const std::string& n = criu_req_type_Name(t);
  return n.empty() ? "type " + std::to_string(static_cast<int>(t)) : n;
}

Result<UniqueFd> move_high(UniqueFd fd, std::string_view what) {
  UniqueFd high(::fcntl(fd.get(), F_DUPFD_CLOEXEC, kMinPassedFd));
  if (!high.valid()) return Error::sys("fcntl(F_DUPFD_CLOEXEC)", errno, what);
  return high;
}

Result<UniqueFd> open_dir(const std::filesystem::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open directory", errno, dir.string());
  return move_high(std::move(fd), dir.string());
}

Result<Swrk> Swrk::spawn(std::string what, const std::vector<int>& pass_fds,
                         steady_clock::time_point deadline, std::vector<std::string> env) {
  std::string bin = criu_binary();
  if (bin.empty()) return Error(std::string("criu binary not found: ") + kSetupHint, ENOENT);
  Swrk s;
  s.what_ = std::move(what);
  s.deadline_ = deadline;

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return Error::sys("socketpair", errno).with_context(s.what_);
  s.sock_.reset(sv[0]);
  PW_ASSIGN(UniqueFd theirs, move_high(UniqueFd(sv[1]), "criu socket"));
  // stderr goes to a memfd: it never blocks criu and is read only if something fails.
  s.err_fd_.reset(::memfd_create("criu-stderr", MFD_CLOEXEC));
  if (!s.err_fd_.valid()) return Error::sys("memfd_create", errno).with_context(s.what_);

  SpawnOptions so;
  so.argv = {bin, "swrk", std::to_string(kSwrkFd)};
  so.env = std::move(env);
  so.stderr_fd = s.err_fd_.get();
  // SAFETY: the child gets its socket end as fd 3. CRIU resolves fds named in a request
  // (images_dir_fd, work_dir_fd, inherit_fd) as /proc/<peer>/fd/N with the peer pid from
  // SO_PEERCRED, i.e. the socketpair's creator (us), so those fds must stay open here until
  // the final answer. They are also handed to the child at the same numbers (all >=
  // kMinPassedFd, distinct), so they would resolve there too.
  so.pass_fds.emplace_back(theirs.get(), kSwrkFd);
  for (int fd : pass_fds) so.pass_fds.emplace_back(fd, fd);
  auto spawned = prewarm::spawn(so);
  if (!spawned.ok()) {
    const Error& e = spawned.error();
    return Error(s.what_ + ": " + e.message() + "; " + kSetupHint, e.errno_value());
  }
  s.child_ = std::move(spawned).value();
  return s;  // `theirs` closes here, so that a dying criu reads as EOF
}

milliseconds Swrk::left() const { return left_until(deadline_); }

Error Swrk::failure(std::string message, int err) {
  // Give criu a moment to finish writing what it has to say, then reap it (the guard kills it
  // if it is still there).
  std::string status;
  if (child_.pid() > 0) {
    auto st = child_.wait(std::clamp(left(), milliseconds(200), milliseconds(1000)));
    if (st.ok()) status = " (criu " + describe_wait_status(*st) + ")";
  }
  Error e(what_ + ": " + message + status, err);
  std::string err_text = err_fd_.valid() ? read_memfd(err_fd_.get()) : "";
  if (err_text.empty()) return e;
  return Error(std::move(e).with_detail("criu stderr: " + err_text));
}

Status Swrk::send(const criu_req& req) {
  std::string wire;
  if (!req.SerializeToString(&wire)) return Error(what_ + ": cannot serialize the request");
  if (::send(sock_.get(), wire.data(), wire.size(), MSG_NOSIGNAL) < 0) {
    if (errno == EPIPE || errno == ECONNRESET)
      return failure("criu exited without answering", EPIPE);
    return failure(std::string("sending the request: ") + std::strerror(errno), errno);
  }
  return {};
}

Result<criu_resp> Swrk::receive() {
  pollfd p{sock_.get(), POLLIN, 0};
  for (;;) {
    milliseconds l = left();
    if (l.count() == 0) {
      child_.kill(SIGKILL);
      return failure("no answer before the deadline; criu was killed", ETIMEDOUT);
    }
    int r = ::poll(&p, 1, static_cast<int>(l.count()));
    if (r > 0) break;
    if (r < 0 && errno != EINTR)
      return failure(std::string("poll: ") + std::strerror(errno), errno);
  }

  std::string buf(kMaxResponse, '\0');
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock_.get(), &msg, MSG_TRUNC | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  // Fds CRIU sends (orphan-pts-master) are not ours to keep.
  if (n >= 0)
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        ::close(fd);
      }
    }
  // A peer that closes with our request unread shows as ECONNRESET rather than EOF.
  if (n == 0 || (n < 0 && errno == ECONNRESET))
    return failure("criu exited without answering", EPIPE);
  if (n < 0) return failure(std::string("receiving the answer: ") + std::strerror(errno), errno);
  if (static_cast<size_t>(n) > buf.size())
    return failure("answer of " + std::to_string(n) + " bytes exceeds the " +
                       std::to_string(kMaxResponse) + "-byte limit",
                   EMSGSIZE);

  criu_resp resp;
  if (!resp.ParseFromArray(buf.data(), static_cast<int>(n)))
    return failure("cannot parse the answer (is rpc.proto from the same CRIU version?)", EPROTO);
  return resp;
}

void Swrk::finish() {
  // Without keep_open criu exits right after answering; reap it rather than let the guard
  // kill it mid-exit.
  auto st = child_.wait(std::max(left(), milliseconds(1)));
  if (!st.ok()) child_.kill(SIGKILL);
}

void Swrk::close() {
  sock_.reset();
  finish();
}

Status check_response(const criu_resp& resp, criu_req_type type, std::string_view hint,
                      const std::optional<std::filesystem::path>& log_file, int log_level) {
  std::string what = "criu " + type_name(type);
  if (resp.type() != type)
    return Error(what + ": criu answered with " + type_name(resp.type()), EPROTO);
  if (resp.success()) return {};

  std::string msg = what + " failed";
  // cr_errmsg is CRIU's first logged error, as logged: "Error (file.c:1): text\n".
  std::string_view reason = resp.has_cr_errmsg() ? std::string_view(resp.cr_errmsg()) : "";
  if (reason.starts_with("Error (")) {
    if (auto p = reason.find("): "); p != std::string_view::npos) reason.remove_prefix(p + 3);
  }
  while (!reason.empty() && std::isspace(static_cast<unsigned char>(reason.back())))
    reason.remove_suffix(1);
  if (!reason.empty() && !is_benign_error(reason)) msg += ": " + std::string(reason);
  int err = resp.has_cr_errno() ? resp.cr_errno() : 0;
  if (err != 0) msg += std::string(" (") + std::strerror(err) + ")";
  if (!hint.empty()) msg += "; " + std::string(hint);
  Error e(std::move(msg), err);
  std::string tail = log_file ? relevant_log_tail(*log_file) : "";
  if (tail.empty()) return e;
  return std::move(e).with_detail(criu_log_heading(*log_file, log_level) + tail);
}

}  // namespace prewarm::criu::detail
