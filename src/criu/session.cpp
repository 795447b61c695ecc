// RESTORE over `criu swrk` with notify_scripts: the NOTIFY loop that hands each notify to the
// caller's callback and answers CRIU with its outcome.
#include "criu/session.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <optional>

#include "base/fs.h"
#include "criu/criu.h"
#include "criu/swrk.h"

namespace prewarm::criu {
namespace {

using std::chrono::steady_clock;

criu_cg_mode to_proto(CgroupMode m) {
  switch (m) {
    case CgroupMode::kIgnore: return IGNORE;
    case CgroupMode::kNone: return CG_NONE;
    case CgroupMode::kProps: return PROPS;
    case CgroupMode::kSoft: return SOFT;
    case CgroupMode::kFull: return FULL;
    case CgroupMode::kStrict: return STRICT;
    case CgroupMode::kDefault: return DEFAULT;
  }
  return SOFT;
}

criu_network_lock_method to_proto(NetworkLock l) {
  switch (l) {
    case NetworkLock::kIptables: return IPTABLES;
    case NetworkLock::kNftables: return NFTABLES;
    case NetworkLock::kSkip: return SKIP;
  }
  return IPTABLES;
}

// Kills a restored root task and reaps it when it is our child (rst_sibling); ECHILD otherwise.
void kill_restored(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

double ms_since(steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

Error runtime_error(Error e, const std::filesystem::path& log, int log_level) {
  if (e.detail().empty()) {
    std::string tail = relevant_log_tail(log);
    if (!tail.empty())
      return std::move(e).with_kind(ErrorKind::kRuntime).with_detail(criu_log_heading(log, log_level) + tail);
  }
  return std::move(e).with_kind(ErrorKind::kRuntime);
}

}  // namespace

Result<RestoreResult> restore(const RestoreRequest& r) {
  const auto start = steady_clock::now();
  const auto deadline = start + r.timeout;
  const std::filesystem::path log = r.work_dir / r.log_file;
  auto fail = [&](Error e) { return runtime_error(std::move(e), log, r.log_level); };

  // Every fd CRIU gets is a private duplicate above kMinPassedFd, so the numbers stay
  // distinct and the child's dup2 sequence cannot clobber one with another.
  std::vector<UniqueFd> held;
  std::vector<int> pass;
  auto hold = [&](UniqueFd fd) {
    pass.push_back(fd.get());
    held.push_back(std::move(fd));
    return pass.back();
  };
  criu_req req;
  req.set_type(RESTORE);
  criu_opts* o = req.mutable_opts();
  {
    auto images = detail::open_dir(r.image_dir);
    if (!images.ok()) return fail(std::move(images).error().with_context("criu restore"));
    o->set_images_dir_fd(hold(std::move(images).value()));
    auto work = detail::open_dir(r.work_dir);
    if (!work.ok()) return fail(std::move(work).error().with_context("criu restore"));
    o->set_work_dir_fd(hold(std::move(work).value()));
  }
  for (const auto& [key, fd] : r.inherit_fds) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, detail::kMinPassedFd));
    if (!dup.valid()) return fail(Error::sys("fcntl(F_DUPFD_CLOEXEC)", errno, "inherit fd " + key));
    auto* ie = o->add_inherit_fd();
    ie->set_key(key);
    ie->set_fd(hold(std::move(dup)));
  }
  o->set_log_file(r.log_file);
  if (r.validate_files_by_size) {
    // CRIU's RPC has no field for it; a config file named in the request does (runc passes
    // its runc.conf the same way). Its settings override the request's.
    const std::filesystem::path conf = r.work_dir / "criu-restore.conf";
    if (Status st = fs::write_file(conf, "file-validation filesize\n", 0600); !st.ok())
      return fail(std::move(st).error().with_context("criu restore"));
    o->set_config_file(conf.string());
  }
  o->set_log_level(r.log_level);
  o->set_root(r.root.string());
  for (const auto& [key, val] : r.ext_mounts) {
    auto* m = o->add_ext_mnt();
    m->set_key(key);
    m->set_val(val);
  }
  for (const auto& [ctrl, path] : r.cgroup_roots) {
    auto* c = o->add_cg_root();
    if (!ctrl.empty()) c->set_ctrl(ctrl);
    c->set_path(path);
  }
  o->set_manage_cgroups(r.cgroup_mode != CgroupMode::kIgnore);
  o->set_manage_cgroups_mode(to_proto(r.cgroup_mode));
  o->set_network_lock(to_proto(r.network_lock));
  o->set_tcp_established(r.tcp_established);
  o->set_file_locks(r.file_locks);
  o->set_evasive_devices(r.evasive_devices);
  o->set_rst_sibling(r.rst_sibling);
  o->set_notify_scripts(true);
  if (r.lazy_pages) o->set_lazy_pages(true);

  RestoreResult out;
  std::shared_ptr<void> spawn_scope;
  if (r.around_spawn) {
    auto scope = r.around_spawn();
    if (!scope.ok()) return fail(std::move(scope).error().with_context("criu RESTORE: preparing"));
    spawn_scope = std::move(scope).value();
  }
  std::vector<std::string> env;
  if (r.huge_pages) env.emplace_back(kFillHugePagesEnv);
  if (r.populate) env.emplace_back(kFillPopulateEnv);
  if (r.skip_network_lock_by_env) env.emplace_back(kRestoreSkipNetworkLockEnv);
  auto spawned = detail::Swrk::spawn("criu RESTORE", pass, deadline, env);
  spawn_scope.reset();
  if (!spawned.ok()) return fail(std::move(spawned).error());
  detail::Swrk criu = std::move(spawned).value();
  out.phases.emplace_back("criu_spawn", ms_since(start));
  if (r.before_request) {
    Status st = r.before_request(criu.pid());
    if (!st.ok()) {
      criu.kill();
      return fail(std::move(st).error().with_context("criu RESTORE: preparing criu"));
    }
  }
  const auto sent = steady_clock::now();
  if (Status st = criu.send(req); !st.ok()) return fail(std::move(st).error());

  // The root task's pid as the notifies report it, so a failure after CRIU's own kill point
  // can still be cleaned up.
  pid_t restored_pid = 0;
  std::optional<Error> handler_error;
  for (;;) {
    auto got = criu.receive();
    if (!got.ok()) {
      // criu died or timed out mid-restore: a root task that got as far as being our sibling
      // must not outlive it.
      kill_restored(restored_pid);
      return fail(handler_error ? std::move(*handler_error) : std::move(got).error());
    }
    criu_resp resp = std::move(got).value();
    if (resp.type() != NOTIFY) {
      Status st = detail::check_response(resp, RESTORE, "", log, r.log_level);
      if (!st.ok()) {
        criu.finish();
        // The callback's error says why CRIU aborted; CRIU's log lines go with it.
        return fail(handler_error ? std::move(*handler_error).with_detail(st.error().detail())
                                  : std::move(st).error());
      }
      if (!resp.has_restore() || resp.restore().pid() <= 0) {
        criu.finish();
        kill_restored(restored_pid);
        return fail(Error("criu RESTORE: the answer carries no pid", EPROTO));
      }
      out.pid = resp.restore().pid();
      if (handler_error) {
        // A notify whose failure CRIU does not act on (pre-resume, post-resume).
        criu.finish();
        kill_restored(out.pid);
        return fail(std::move(*handler_error));
      }
      break;
    }
    const std::string script = resp.has_notify() ? resp.notify().script() : "";
    const pid_t pid = resp.has_notify() ? resp.notify().pid() : 0;
    if (pid > 0 && script == "post-restore") restored_pid = pid;
    out.phases.emplace_back("criu_until_" + script, ms_since(sent));
    bool ok = true;
    if (auto it = r.on_notify.find(script); it != r.on_notify.end() && !handler_error) {
      Status st = it->second(pid);
      if (!st.ok()) {
        ok = false;
        handler_error = std::move(st).error().with_context("criu notify " + script);
      }
    }
    criu_req answer;
    answer.set_type(NOTIFY);
    answer.set_notify_success(ok);
    if (Status st = criu.send(answer); !st.ok()) {
      kill_restored(restored_pid);
      return fail(handler_error ? std::move(*handler_error) : std::move(st).error());
    }
  }
  criu.finish();
  out.phases.emplace_back("criu_total", ms_since(sent));
  return out;
}

}  // namespace prewarm::criu
