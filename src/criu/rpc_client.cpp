// The swrk transport to CRIU: one `criu swrk 3` child per request over a SOCK_SEQPACKET
// socketpair, and the small requests built on it (version, check, cpuinfo dump/check).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <optional>

#include "base/fs.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "rpc.pb.h"

namespace prewarm::criu {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// A hung criu (e.g. stuck on a frozen cgroup) must not hang prewarm.
constexpr milliseconds kRpcTimeout = std::chrono::seconds(30);
// The fd number `criu swrk <fd>` talks on.
constexpr int kSwrkFd = 3;
// Fds handed to CRIU are moved at or above this, clear of 0-2 and kSwrkFd, so the child's
// dup2 sequence cannot overwrite one with another.
constexpr int kMinPassedFd = 10;
// criu_resp messages are a few hundred bytes; anything near this is not CRIU talking.
constexpr size_t kMaxResponse = 64 << 10;
constexpr size_t kMaxStderr = 16 << 10;

constexpr const char* kSetupHint = "install CRIU 4.2.1 with scripts/setup.sh or set PREWARM_CRIU";

std::string type_name(criu_req_type t) {
  const std::string& n = criu_req_type_Name(t);
  return n.empty() ? "type " + std::to_string(static_cast<int>(t)) : n;
}

milliseconds left_until(steady_clock::time_point deadline) {
  return std::max(milliseconds(0),
                  std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()));
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

// A private directory for CRIU's log (CRIU only accepts a bare log file name, relative to
// its work dir), removed with everything in it.
class TempWorkDir {
 public:
  static Result<TempWorkDir> create() {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string tmpl = (base / "prewarm-criu-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return Error::sys("mkdtemp", errno, tmpl);
    TempWorkDir dir(tmpl);
    PW_ASSIGN(dir.fd_, open_dir(dir.path()));
    return dir;
  }

  const std::filesystem::path& path() const { return dir_.path(); }
  int fd() const { return fd_.get(); }

 private:
  explicit TempWorkDir(std::filesystem::path path) : dir_(std::move(path)) {}
  // Members go in reverse order: the fd is closed before the tree is removed.
  fs::RemoveOnExit dir_;
  UniqueFd fd_;
};

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

// One request, one `criu swrk` process. pass_fds are fds of ours that the request names
// (images_dir_fd, work_dir_fd).
Result<criu_resp> call(const criu_req& req, const std::vector<int>& pass_fds) {
  std::string bin = criu_binary();
  if (bin.empty()) return Error(std::string("criu binary not found: ") + kSetupHint, ENOENT);
  const std::string what = "criu " + type_name(req.type());
  auto deadline = steady_clock::now() + kRpcTimeout;

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return Error::sys("socketpair", errno).with_context(what);
  UniqueFd ours(sv[0]);
  PW_ASSIGN(UniqueFd theirs, move_high(UniqueFd(sv[1]), "criu socket"));
  // stderr goes to a memfd: it never blocks criu and is read only if something fails.
  UniqueFd err_fd(::memfd_create("criu-stderr", MFD_CLOEXEC));
  if (!err_fd.valid()) return Error::sys("memfd_create", errno).with_context(what);

  SpawnOptions so;
  so.argv = {bin, "swrk", std::to_string(kSwrkFd)};
  so.stderr_fd = err_fd.get();
  // SAFETY: the child gets its socket end as fd 3. CRIU resolves images_dir_fd/work_dir_fd
  // as /proc/<peer>/fd/N with the peer pid from SO_PEERCRED, i.e. the socketpair's creator
  // (us), so those fds must stay open here until the answer comes. They are also handed to
  // the child at the same numbers (all >= kMinPassedFd, distinct), so they would resolve
  // there too.
  so.pass_fds.emplace_back(theirs.get(), kSwrkFd);
  for (int fd : pass_fds) so.pass_fds.emplace_back(fd, fd);
  auto spawned = spawn(so);
  if (!spawned.ok()) {
    const Error& e = spawned.error();
    return Error(what + ": " + e.message() + "; " + kSetupHint, e.errno_value());
  }
  Child child = std::move(spawned).value();
  theirs.reset();  // so that a dying criu reads as EOF

  auto failure = [&](std::string message, int err) {
    // Give criu a moment to finish writing what it has to say, then reap it (the guard
    // kills it if it is still there).
    std::string status;
    auto st = child.wait(std::clamp(left_until(deadline), milliseconds(200), milliseconds(1000)));
    if (st.ok()) status = " (criu " + describe_wait_status(*st) + ")";
    Error e(what + ": " + message + status, err);
    std::string err_text = read_memfd(err_fd.get());
    if (err_text.empty()) return e;
    return Error(std::move(e).with_detail("criu stderr: " + err_text));
  };

  std::string wire;
  if (!req.SerializeToString(&wire)) return Error(what + ": cannot serialize the request");
  if (::send(ours.get(), wire.data(), wire.size(), MSG_NOSIGNAL) < 0) {
    if (errno == EPIPE || errno == ECONNRESET)
      return failure("criu exited without answering", EPIPE);
    return failure(std::string("sending the request: ") + std::strerror(errno), errno);
  }

  pollfd p{ours.get(), POLLIN, 0};
  for (;;) {
    milliseconds left = left_until(deadline);
    if (left.count() == 0) {
      child.kill(SIGKILL);
      return failure(
          "no answer within " + std::to_string(kRpcTimeout.count() / 1000) + " s; criu was killed",
          ETIMEDOUT);
    }
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r > 0) break;
    if (r < 0 && errno != EINTR)
      return failure(std::string("poll: ") + std::strerror(errno), errno);
  }

  std::string buf(kMaxResponse, '\0');
  ssize_t n;
  do {
    n = ::recv(ours.get(), buf.data(), buf.size(), MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
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

  // Without keep_open criu exits right after answering; reap it rather than let the
  // guard kill it mid-exit.
  auto st = child.wait(std::max(left_until(deadline), milliseconds(1)));
  if (!st.ok()) child.kill(SIGKILL);
  return resp;
}

// Turns an unsuccessful or mismatched answer into an error carrying CRIU's reason and, when
// the request used a log file, the log lines around the failure.
Status check_response(const criu_resp& resp, criu_req_type type, std::string_view hint,
                      const std::optional<std::filesystem::path>& log_file) {
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
  return std::move(e).with_detail(std::move(tail));
}

criu_req make_req(criu_req_type type) {
  criu_req req;
  req.set_type(type);
  return req;
}

// A request that runs CRIU code with a log in a temp work dir (CRIU's "check" and
// "cpuinfo" need one of images dir / work dir for a log file).
Status call_with_log(criu_req_type type, std::optional<std::filesystem::path> images_dir,
                     std::string_view log_name, std::string_view hint) {
  std::string what = "criu " + type_name(type);
  PW_ASSIGN(TempWorkDir work, TempWorkDir::create());
  std::vector<int> fds = {work.fd()};
  criu_req req = make_req(type);
  criu_opts* opts = req.mutable_opts();
  opts->set_images_dir_fd(-1);
  UniqueFd images_fd;
  if (images_dir) {
    auto dir = open_dir(*images_dir);
    if (!dir.ok()) return std::move(dir).error().with_context(what);
    images_fd = std::move(dir).value();
    opts->set_images_dir_fd(images_fd.get());
    fds.push_back(images_fd.get());
  }
  opts->set_work_dir_fd(work.fd());
  opts->set_log_file(std::string(log_name));
  opts->set_log_level(4);
  PW_ASSIGN(criu_resp resp, call(req, fds));
  return check_response(resp, type, hint, work.path() / log_name);
}

}  // namespace

std::string criu_binary() {
  if (const char* env = ::getenv("PREWARM_CRIU"); env && *env) return env;
  if (::access("/usr/local/sbin/criu", X_OK) == 0) return "/usr/local/sbin/criu";
  return find_executable("criu");
}

Result<Version> version() {
  PW_ASSIGN(criu_resp resp, call(make_req(VERSION), {}));
  PW_TRY(check_response(resp, VERSION, "", std::nullopt));
  if (!resp.has_version()) return Error("criu VERSION: the answer carries no version", EPROTO);
  const criu_version& v = resp.version();
  Version out;
  out.major = v.major_number();
  out.minor = v.minor_number();
  out.sublevel = v.has_sublevel() ? v.sublevel() : 0;
  out.text = std::to_string(out.major) + "." + std::to_string(out.minor);
  if (v.has_sublevel()) out.text += "." + std::to_string(out.sublevel);
  return out;
}

Status check() {
  return call_with_log(CHECK, std::nullopt, "check.log",
                       "this kernel or host cannot checkpoint/restore with CRIU "
                       "(run `criu check` as root for details)");
}

Status cpuinfo_dump(const std::filesystem::path& dir) {
  Status st = call_with_log(CPUINFO_DUMP, dir, "cpuinfo-dump.log", "");
  if (!st.ok())
    return std::move(st).error().with_context("recording this host's CPU in " + dir.string());
  return st;
}

Status cpuinfo_check(const std::filesystem::path& dir) {
  Status st = call_with_log(CPUINFO_CHECK, dir, "cpuinfo-check.log",
                            "the checkpoint needs CPU features this host lacks, or its "
                            "cpuinfo.img is damaged (log below); checkpoint again on this host");
  if (!st.ok())
    return std::move(st).error().with_context("checking " + (dir / "cpuinfo.img").string() +
                                              " against this host's CPU");
  return st;
}

}  // namespace prewarm::criu
