// One-shot CRIU requests, one `criu swrk` child each (transport in swrk.cpp): version, check,
// cpuinfo dump/check.
#include <stdlib.h>
#include <unistd.h>

#include <sys/stat.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "criu/swrk.h"

namespace prewarm::criu {
namespace {

using detail::check_response;
using detail::open_dir;
using detail::type_name;

// A hung criu (e.g. stuck on a frozen cgroup) must not hang prewarm.
constexpr std::chrono::milliseconds kRpcTimeout = std::chrono::seconds(30);

// A private directory for CRIU's log (CRIU only accepts a bare log file name, relative to
// its work dir), removed with everything in it. It is a staging dir (locked while it lives),
// so the ones a killed prewarm left are cleared by the next one made and by `gc`.
class TempWorkDir {
 public:
  static Result<TempWorkDir> create() {
    const std::filesystem::path base = scratch_parent();
    (void)fs::remove_stale_staging(base, {kScratchPrefix});
    PW_ASSIGN(fs::StagingDir dir, fs::StagingDir::create(base, kScratchPrefix));
    TempWorkDir out(std::move(dir));
    PW_ASSIGN(out.fd_, open_dir(out.path()));
    return out;
  }

  const std::filesystem::path& path() const { return dir_.path(); }
  int fd() const { return fd_.get(); }

 private:
  explicit TempWorkDir(fs::StagingDir dir) : dir_(std::move(dir)) {}
  // Members go in reverse order: the fd is closed before the tree is removed.
  fs::StagingDir dir_;
  UniqueFd fd_;
};

criu_req make_req(criu_req_type type) {
  criu_req req;
  req.set_type(type);
  // The session ends when we close our end, not after one answer; CRIU's CHECK does not take
  // keep_open (criu exits without answering), so it is a session's last request.
  req.set_keep_open(type != CHECK);
  return req;
}

}  // namespace

struct Session::Impl {
  detail::Swrk criu;
  bool ended = false;

  Result<criu_resp> call(const criu_req& req) {
    if (ended)
      return Error(ErrorKind::kInternal, "criu " + type_name(req.type()) +
                                             ": the session ended with its last request");
    ended = !req.keep_open();
    PW_TRY(criu.send(req));
    return criu.receive();
  }

  // A request that runs CRIU code with a log in a temp work dir (CRIU's "check" and "cpuinfo"
  // need one of images dir / work dir for a log file). CRIU opens the dir fds through
  // /proc/<peer>/fd, i.e. in this process, so they need not be passed at spawn.
  Status call_with_log(criu_req_type type, std::optional<std::filesystem::path> images_dir,
                       std::string_view log_name, std::string_view hint) {
    std::string what = "criu " + type_name(type);
    PW_ASSIGN(TempWorkDir work, TempWorkDir::create());
    criu_req req = make_req(type);
    criu_opts* opts = req.mutable_opts();
    opts->set_images_dir_fd(-1);
    UniqueFd images_fd;
    if (images_dir) {
      auto dir = open_dir(*images_dir);
      if (!dir.ok()) return std::move(dir).error().with_context(what);
      images_fd = std::move(dir).value();
      opts->set_images_dir_fd(images_fd.get());
    }
    opts->set_work_dir_fd(work.fd());
    opts->set_log_file(std::string(log_name));
    opts->set_log_level(4);
    PW_ASSIGN(criu_resp resp, call(req));
    return check_response(resp, type, hint, work.path() / log_name);
  }
};

Result<Session> Session::open() {
  auto deadline = std::chrono::steady_clock::now() + kRpcTimeout;
  PW_ASSIGN(detail::Swrk criu, detail::Swrk::spawn("criu", {}, deadline));
  Session s;
  s.impl_ = std::make_unique<Impl>(Impl{std::move(criu)});
  return s;
}

Session::Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() {
  if (!impl_) return;
  if (impl_->ended) {
    impl_->criu.finish();
  } else {
    impl_->criu.close();
  }
}

pid_t Session::pid() const { return impl_ ? impl_->criu.pid() : -1; }

Result<Version> Session::version() {
  PW_ASSIGN(criu_resp resp, impl_->call(make_req(VERSION)));
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

Status Session::check() {
  return impl_->call_with_log(CHECK, std::nullopt, "check.log",
                              "this kernel or host cannot checkpoint/restore with CRIU "
                              "(run `criu check` as root for details)");
}

Status Session::cpuinfo_dump(const std::filesystem::path& dir) {
  Status st = impl_->call_with_log(CPUINFO_DUMP, dir, "cpuinfo-dump.log", "");
  if (!st.ok())
    return std::move(st).error().with_context("recording this host's CPU in " + dir.string());
  return st;
}

Status Session::cpuinfo_check(const std::filesystem::path& dir) {
  Status st = impl_->call_with_log(
      CPUINFO_CHECK, dir, "cpuinfo-check.log",
      "the checkpoint needs CPU features this host lacks, or its cpuinfo.img is damaged (log "
      "below); checkpoint again on this host");
  if (!st.ok())
    return std::move(st).error().with_context("checking " + (dir / "cpuinfo.img").string() +
                                              " against this host's CPU");
  return st;
}

std::filesystem::path scratch_parent() {
  std::error_code ec;
  std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  return ec ? std::filesystem::path("/tmp") : base;
}

Result<fs::StaleStaging> remove_stale_scratch() {
  return fs::remove_stale_staging(scratch_parent(), {kScratchPrefix});
}

std::string criu_binary() {
  if (const char* env = ::getenv("PREWARM_CRIU"); env && *env) return env;
  if (::access("/usr/local/sbin/criu", X_OK) == 0) return "/usr/local/sbin/criu";
  return find_executable("criu");
}

namespace {

// The environment variables prewarm's CRIU patches read.
constexpr std::string_view kPatchEnvs[] = {kFillHugePagesEnv, kFillPopulateEnv,
                                           kRestoreSkipNetworkLockEnv};

std::string_view variable(std::string_view env) { return env.substr(0, env.find('=')); }

// The patch variables `criu_bin` names (the patches that read them), found by scanning the
// binary (~3 MB) once per binary: remembered in this process and, for later processes, in
// kFeaturesDir as a file named after the binary's path, inode, size and mtime.
std::string patch_variables(const std::string& criu_bin) {
  struct stat st {};
  if (criu_bin.empty() || ::stat(criu_bin.c_str(), &st) != 0) return "";
  const std::string key = sha256_hex(criu_bin + ":" + std::to_string(st.st_ino) + ":" +
                                     std::to_string(st.st_size) + ":" +
                                     std::to_string(st.st_mtim.tv_sec) + "." +
                                     std::to_string(st.st_mtim.tv_nsec));
  static std::mutex mu;
  static std::map<std::string, std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = seen.find(key); it != seen.end()) return it->second;
  const std::filesystem::path memo = std::filesystem::path(kFeaturesDir) / ("criu-env-" + key);
  if (auto cached = fs::read_file(memo, 4096); cached.ok()) return seen[key] = *cached;
  auto bytes = fs::read_file(criu_bin);
  if (!bytes.ok()) return "";
  std::string found;
  for (std::string_view env : kPatchEnvs)
    if (bytes->find(variable(env)) != std::string::npos) found += std::string(variable(env)) + "\n";
  if (fs::make_dirs(kFeaturesDir, 0700).ok()) (void)fs::write_file_atomic(memo, found, 0600);
  return seen[key] = found;
}

// Whether `criu_bin` names the variable of `env` ("NAME=value"): the patch that reads it.
bool names_variable(const std::string& criu_bin, std::string_view env) {
  const std::string found = patch_variables(criu_bin);
  return found.find(std::string(variable(env)) + "\n") != std::string::npos;
}

}  // namespace

bool criu_skips_network_lock_by_env(const std::string& criu_bin) {
  return names_variable(criu_bin, kRestoreSkipNetworkLockEnv);
}

bool criu_fills_huge_pages(const std::string& criu_bin) {
  return names_variable(criu_bin, kFillHugePagesEnv);
}

bool criu_fills_populate(const std::string& criu_bin) {
  return names_variable(criu_bin, kFillPopulateEnv);
}

Result<Version> version() {
  PW_ASSIGN(Session s, Session::open());
  return s.version();
}

Status check() {
  PW_ASSIGN(Session s, Session::open());
  return s.check();
}

Status cpuinfo_dump(const std::filesystem::path& dir) {
  PW_ASSIGN(Session s, Session::open());
  return s.cpuinfo_dump(dir);
}

Status cpuinfo_check(const std::filesystem::path& dir) {
  PW_ASSIGN(Session s, Session::open());
  return s.cpuinfo_check(dir);
}

}  // namespace prewarm::criu
