// Runtime backend that restores through one CRIU RPC session instead of `runc restore`, and
// keeps the little state it needs for the containers it restored.
#include "oci/criu_direct.h"
#include "oci/private_tmp.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <optional>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/clock.h"
#include "base/fault.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "criu/criu.h"
#include "criu/session.h"
#include "oci/cgroup.h"

namespace prewarm::oci {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr int kStateFormat = 1;
constexpr size_t kMaxConfig = 4 << 20;
constexpr size_t kMaxSmallJson = 1 << 20;
constexpr auto kStopTimeout = std::chrono::seconds(10);

double ms_since(steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

// What restore needs from config.json.
struct BundleConfig {
  stdfs::path root;
  std::string cgroups_path;
  stdfs::path netns_path;
  std::vector<std::pair<std::string, std::string>> bind_mounts;  // destination -> source
  bool has_masked_paths = false;
  std::vector<std::string> cgroup_mounts;  // destinations of "cgroup" mounts
  std::vector<std::string> env;
  std::string cwd = "/";
};

Result<BundleConfig> read_config(const stdfs::path& bundle) {
  const stdfs::path file = bundle / "config.json";
  PW_ASSIGN(std::string text, fs::read_file(file, kMaxConfig));
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(ErrorKind::kInvalidInput, file.string() + ": not a JSON object");
  BundleConfig c;
  try {
    std::string root = j.at("root").at("path").get<std::string>();
    c.root = stdfs::path(root).is_absolute() ? stdfs::path(root) : bundle / root;
    const json& linux_ = j.value("linux", json::object());
    c.cgroups_path = linux_.value("cgroupsPath", "");
    for (const auto& ns : linux_.value("namespaces", json::array()))
      if (ns.value("type", "") == "network") c.netns_path = ns.value("path", "");
    c.has_masked_paths = !linux_.value("maskedPaths", json::array()).empty();
    for (const auto& m : j.value("mounts", json::array())) {
      bool bind = m.value("type", "") == "bind";
      for (const auto& o : m.value("options", json::array()))
        if (o == "bind" || o == "rbind") bind = true;
      if (bind) c.bind_mounts.emplace_back(m.at("destination"), m.at("source"));
      if (m.value("type", "") == "cgroup") c.cgroup_mounts.push_back(m.at("destination"));
    }
    const json& proc = j.value("process", json::object());
    c.env = proc.value("env", std::vector<std::string>{});
    c.cwd = proc.value("cwd", "/");
  } catch (const json::exception& e) {
    return Error(ErrorKind::kInvalidInput, file.string() + ": " + e.what());
  }
  return c;
}

// The keys CRIU recorded for the app's stdio pipes at checkpoint (runc writes them).
// Each pipe key, and whether the app only reads it (its stdin and nothing else).
struct StdioPipe {
  std::string key;
  bool input_only = true;
};
Result<std::vector<StdioPipe>> stdio_pipe_keys(const stdfs::path& image_dir) {
  const stdfs::path file = image_dir / "descriptors.json";
  PW_ASSIGN(std::string text, fs::read_file(file, kMaxSmallJson));
  auto j = json::parse(text, nullptr, false);
  if (!j.is_array()) return Error(ErrorKind::kInvalidInput, file.string() + ": not a JSON array");
  std::vector<StdioPipe> keys;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    if (!e.is_string() || !e.get<std::string>().starts_with("pipe:")) continue;
    auto it = std::find_if(keys.begin(), keys.end(),
                           [&](const StdioPipe& p) { return p.key == e.get<std::string>(); });
    if (it == keys.end()) it = keys.insert(keys.end(), {e.get<std::string>(), true});
    if (i != 0) it->input_only = false;
  }
  return keys;
}

bool is_mount_root(const stdfs::path& p) {
  struct statx stx{};
  if (::statx(AT_FDCWD, p.c_str(), 0, STATX_BASIC_STATS, &stx) != 0) return false;
  return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
         (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

// Brings lo up in the network namespace (a new one has it down, and CRIU leaves an external
// netns as it is). On a throw-away thread: setns there does not move the caller.
Status ensure_loopback_up(int netns_fd) {
  Status result;
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      result = Error::sys("setns(CLONE_NEWNET)", errno);
      return;
    }
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) {
      result = Error::sys("socket", errno);
      return;
    }
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) {
      result = Error::sys("SIOCGIFFLAGS", errno, "lo");
      return;
    }
    if (ifr.ifr_flags & IFF_UP) return;
    ifr.ifr_flags |= IFF_UP;
    if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) result = Error::sys("SIOCSIFFLAGS", errno, "lo");
  });
  t.join();
  if (!result.ok()) return std::move(result).error().with_context("bring lo up in the netns");
  return result;
}

// CRIU restores with the network-lock method recorded in the checkpoint's inventory.img, not the
// one in the request: runc checkpoints with iptables, so every restore ran iptables-restore
// four times to "unlock" a namespace that was never locked (~40 ms). The netns of a restore is
// new and private (an external namespace that CRIU neither locks nor fills), so the restore
// reads the images through a view whose inventory says "skip": links to every image file,
// and a copy of inventory.img with network_lock_method (field 11) = NETWORK_LOCK_SKIP appended
// (a later value of a protobuf field overrides an earlier one). The image itself is untouched.
constexpr uint32_t kInventoryMagic = 0x58313116;
constexpr unsigned char kInventorySkipLock[] = {0x58, 0x02};  // field 11, varint 2 (SKIP)

Result<stdfs::path> image_view_without_network_lock(const stdfs::path& image_dir,
                                                     const stdfs::path& work_dir) {
  PW_ASSIGN(std::string inv, fs::read_file(image_dir / "inventory.img", 64 << 10));
  uint32_t magic = 0, size = 0;
  if (inv.size() < 8) return Error(ErrorKind::kInvalidInput, "inventory.img is truncated");
  std::memcpy(&magic, inv.data(), 4);
  std::memcpy(&size, inv.data() + 4, 4);
  if (magic != kInventoryMagic || size != inv.size() - 8)
    return Error(ErrorKind::kInvalidInput,
                 (image_dir / "inventory.img").string() + ": not a CRIU inventory image");
  inv.append(reinterpret_cast<const char*>(kInventorySkipLock), sizeof kInventorySkipLock);
  size += sizeof kInventorySkipLock;
  std::memcpy(inv.data() + 4, &size, 4);

  stdfs::path view = work_dir / "images";
  PW_TRY(fs::symlink_view(image_dir, view, {"inventory.img"}));
  PW_TRY(fs::write_file(view / "inventory.img", inv, 0600));
  return view;
}

struct OwnState {
  std::string id;
  pid_t pid = 0;
  unsigned long long start_time = 0;
  stdfs::path bundle;
  std::string cgroup;  // relative path below each hierarchy
  std::string created;
};

class CriuDirect final : public Runtime {
 public:
  CriuDirect(std::shared_ptr<Runtime> runc, stdfs::path root)
      : runc_(std::move(runc)), root_(std::move(root)) {}

  std::string name() const override { return "criu"; }

  Status run(const std::string& id, const stdfs::path& bundle, int stdio_fd) override {
    return runc_->run(id, bundle, stdio_fd);
  }

  Status checkpoint(const std::string& id, const CheckpointOptions& opts) override {
    if (owned(id))
      return Error(ErrorKind::kInvalidInput,
                   "checkpoint of " + id +
                       ": it was restored by the criu backend; only runc-run containers can be "
                       "checkpointed");
    return runc_->checkpoint(id, opts);
  }

  Result<Restored> restore(const std::string& id, const stdfs::path& bundle,
                           const RestoreOptions& o) override {
    auto r = restore_impl(id, bundle, o);
    if (!r.ok()) return std::move(r).error().with_context("restore of " + id + " (criu backend)");
    return r;
  }

  Result<ContainerState> state(const std::string& id) override {
    if (!owned(id)) return runc_->state(id);
    PW_ASSIGN(OwnState s, load(id));
    ContainerState out;
    out.id = id;
    out.bundle = s.bundle;
    // An exited init its parent has not reaped yet (a long-lived prewarm restored it) is
    // stopped too.
    if (!alive(s) || process_is_zombie(s.pid)) {
      out.status = "stopped";
      return out;
    }
    out.pid = s.pid;
    out.status = CgroupSet(s.cgroup).frozen() ? "paused" : "running";
    return out;
  }

  Result<int> exec(const std::string& id, const std::vector<std::string>& cmd,
                   milliseconds timeout) override {
    if (!owned(id)) return runc_->exec(id, cmd, timeout);
    PW_ASSIGN(OwnState s, load(id));
    if (!alive(s)) return Error(ErrorKind::kConflict, "exec in " + id + ": it is not running");
    PW_ASSIGN(BundleConfig cfg, read_config(s.bundle));
    SpawnOptions so;
    auto argv = enter_argv(s.pid, s.cgroup, cfg.env, cfg.cwd, cmd);
    if (!argv.ok()) return std::move(argv).error().with_context("exec in " + id);
    so.argv = std::move(argv).value();
    PW_ASSIGN(RunResult r, run_capture(so, timeout));
    if (WIFEXITED(r.status)) return WEXITSTATUS(r.status);
    return Error(ErrorKind::kRuntime, "exec in " + id + " " + r.describe());
  }

  Status kill(const std::string& id, int signal) override {
    if (!owned(id)) return runc_->kill(id, signal);
    PW_ASSIGN(OwnState s, load(id));
    PW_ASSIGN(UniqueFd pidfd, open_pidfd(s));
    if (::syscall(SYS_pidfd_send_signal, pidfd.get(), signal, nullptr, 0) != 0)
      return Error::sys("pidfd_send_signal", errno, id).with_kind(ErrorKind::kRuntime);
    return {};
  }

  Status pause(const std::string& id) override {
    if (!owned(id)) return runc_->pause(id);
    PW_ASSIGN(OwnState s, load(id));
    if (!alive(s)) return Error(ErrorKind::kConflict, "pause " + id + ": it is not running");
    Status st = CgroupSet(s.cgroup).freeze();
    if (!st.ok()) return std::move(st).error().with_context("pause " + id);
    return st;
  }

  Status resume(const std::string& id) override {
    if (!owned(id)) return runc_->resume(id);
    PW_ASSIGN(OwnState s, load(id));
    Status st = CgroupSet(s.cgroup).thaw();
    if (!st.ok()) return std::move(st).error().with_context("resume " + id);
    return st;
  }

  Status remove(const std::string& id) override {
    std::error_code ec;
    // The state dir, even without a state in it (a restore that died right after claiming the
    // id), is ours to remove.
    if (!valid_id(id) || !stdfs::is_directory(dir_of(id), ec)) return runc_->remove(id);
    auto s = load(id);
    if (!s.ok()) {
      // A state dir without a readable state: nothing to stop, just the dir.
      return discard_dir(id);
    }
    Status st = stop_and_clean(*s);
    if (!st.ok()) return std::move(st).error().with_context("remove " + id);
    return discard_dir(id);
  }

  Result<std::vector<ContainerState>> list() override {
    PW_ASSIGN(std::vector<ContainerState> out, runc_->list());
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(root_, ec)) {
      auto s = state(e.path().filename().string());
      if (s.ok()) out.push_back(std::move(s).value());
    }
    if (ec && ec != std::errc::no_such_file_or_directory)
      return Error::sys("list", ec.value(), root_.string());
    return out;
  }

  Result<std::string> version() override {
    PW_ASSIGN(criu::Version v, criu::version());
    return "criu " + v.text;
  }

 private:
  stdfs::path dir_of(const std::string& id) const { return root_ / id; }
  static bool valid_id(const std::string& id) {
    return !id.empty() && id.find('/') == std::string::npos && id != "." && id != "..";
  }
  bool owned(const std::string& id) const {
    if (!valid_id(id)) return false;
    std::error_code ec;
    return stdfs::exists(dir_of(id) / "state.json", ec);
  }
  // Removes the state dir. A root bind-mounted there (criu-root) while its restore ran is
  // unmounted first: removing the tree through it would delete the container's files.
  Status discard_dir(const std::string& id) const {
    PW_TRY(fs::unmount_under(dir_of(id)));
    return fs::remove_all(dir_of(id));
  }

  Result<OwnState> load(const std::string& id) const {
    const stdfs::path file = dir_of(id) / "state.json";
    auto text = fs::read_file(file, kMaxSmallJson);
    if (!text.ok()) {
      if (text.error().errno_value() == ENOENT)
        return Error(ErrorKind::kNotFound, "no container " + id);
      return std::move(text).error();
    }
    auto j = json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("format", 0) != kStateFormat)
      return Error(ErrorKind::kInvalidInput, file.string() + ": not a state file of format " +
                                                 std::to_string(kStateFormat));
    OwnState s;
    s.id = id;
    s.pid = j.value("pid", 0);
    s.start_time = j.value("startTime", 0ULL);
    s.bundle = j.value("bundle", "");
    s.cgroup = j.value("cgroup", "");
    s.created = j.value("created", "");
    return s;
  }

  Status save(const OwnState& s) const {
    json j = {{"format", kStateFormat}, {"id", s.id},         {"pid", s.pid},
              {"startTime", s.start_time}, {"bundle", s.bundle.string()},
              {"cgroup", s.cgroup},        {"created", s.created}};
    // Atomic, not durable: the processes it describes do not survive a reboot either.
    return fs::write_file_atomic(dir_of(s.id) / "state.json", j.dump(), 0600, /*durable=*/false);
  }

  static bool alive(const OwnState& s) {
    if (s.pid <= 0) return false;
    auto t = process_start_time(s.pid);
    return t && *t == s.start_time;
  }

  static Result<UniqueFd> open_pidfd(const OwnState& s) {
    UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, s.pid, 0)));
    // Checked after opening: the pidfd then names the process whose start time matched.
    if (!fd.valid() || !alive(s))
      return Error(ErrorKind::kConflict, "container " + s.id + " is not running", ESRCH);
    return fd;
  }

  // SIGKILL to the init (its pid namespace goes with it), wait for it, reap it if it is our
  // child, then empty and remove the cgroups.
  static Status stop_and_clean(const OwnState& s) {
    CgroupSet cg(s.cgroup);
    if (auto pidfd = open_pidfd(s); pidfd.ok()) {
      if (cg.frozen()) (void)cg.thaw();
      ::syscall(SYS_pidfd_send_signal, pidfd->get(), SIGKILL, nullptr, 0);
      pollfd p{pidfd->get(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(milliseconds(kStopTimeout).count()));
    }
    reap(s.pid);
    if (s.cgroup.empty()) return {};
    return cg.destroy();
  }

  static void reap(pid_t pid) {
    if (pid <= 0) return;
    // Only succeeds for our own child (rst_sibling made the init one); ECHILD otherwise.
    while (::waitpid(pid, nullptr, WNOHANG) < 0 && errno == EINTR) {
    }
  }

  Result<Restored> restore_impl(const std::string& id, const stdfs::path& bundle,
                                const RestoreOptions& o) {
    const auto t0 = steady_clock::now();
    if (!valid_id(id))
      return Error(ErrorKind::kInvalidInput, "container id '" + id + "' is not usable");
    PW_ASSIGN(BundleConfig cfg, read_config(bundle));
    PW_ASSIGN(std::vector<StdioPipe> pipe_keys, stdio_pipe_keys(o.image_dir));

    // The state dir claims the id; everything made from here on is undone on failure.
    PW_TRY(fs::make_dirs(root_, 0700));
    if (::mkdir(dir_of(id).c_str(), 0700) != 0) {
      if (errno == EEXIST)
        return Error(ErrorKind::kConflict, "a container " + id + " exists already", EEXIST);
      return Error::sys("mkdir", errno, dir_of(id).string());
    }
    struct Undo {
      CriuDirect* self;
      std::string id;
      std::optional<CgroupSet> cg;
      stdfs::path bind_root;
      pid_t pid = 0;
      bool armed = true;
      ~Undo() {
        if (!armed) return;
        if (pid > 0) {
          ::kill(pid, SIGKILL);
          while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
          }
        }
        if (cg) (void)cg->destroy();
        (void)self->discard_dir(id);
      }
    } undo{this, id, std::nullopt, {}, 0, true};

    OwnState st;
    st.id = id;
    st.bundle = stdfs::absolute(bundle);
    st.cgroup = cfg.cgroups_path.empty() ? "prewarm-" + id : cfg.cgroups_path;
    // Recorded before the cgroup or CRIU exist (pid still 0): if prewarm dies during the
    // restore, remove() finds the cgroup, where CRIU and whatever it restored live, and
    // empties and removes it.
    st.created = now_rfc3339();
    PW_TRY(save(st));
    CgroupSet cg(st.cgroup);
    undo.cg = cg;
    PW_TRY(cg.create());

    // CRIU wants a mount point for root. An instance's overlay is one; anything else gets a
    // private bind mount, as runc does.
    stdfs::path root = cfg.root;
    if (!is_mount_root(root)) {
      stdfs::path bind = dir_of(id) / "criu-root";
      PW_TRY(fs::make_dirs(bind, 0755));
      if (::mount(cfg.root.c_str(), bind.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
        return Error::sys("bind mount", errno, cfg.root.string() + " on " + bind.string());
      undo.bind_root = bind;
      root = bind;
    }

    criu::RestoreRequest req;
    req.image_dir = o.image_dir;
    if (!cfg.netns_path.empty() && !o.tcp_established) {
      // CRIU takes the lock method from the checkpoint; prewarm's CRIU can be told to skip it,
      // any other is given a view of the image whose inventory says so.
      if (criu::criu_skips_network_lock_by_env(criu::criu_binary())) {
        req.skip_network_lock_by_env = true;
      } else {
        PW_ASSIGN(req.image_dir, image_view_without_network_lock(o.image_dir, o.work_dir));
      }
    }
    req.work_dir = o.work_dir;
    req.root = root;
    req.tcp_established = o.tcp_established;
    req.huge_pages = o.huge_pages;
    req.populate = o.populate;
    req.validate_files_by_size = o.validate_files_by_size;
    req.log_level = o.criu_log_level;
    req.lazy_pages = o.lazy_pages;
    // The netns is the instance's own and new: nothing outside can reach it during the
    // restore, so no iptables lock and unlock.
    req.network_lock = criu::NetworkLock::kSkip;
    // The tasks inherit the cgroups criu is moved into below; CRIU need not touch them.
    req.cgroup_mode = criu::CgroupMode::kIgnore;
    // runc records masked files as external mounts named "/dev/null"; bind mounts by their
    // destination.
    if (cfg.has_masked_paths) req.ext_mounts.emplace_back("/dev/null", "/dev/null");
    for (const auto& [dest, source] : cfg.bind_mounts) req.ext_mounts.emplace_back(dest, source);
    // A cgroup mount (a Podman or CRI-O container has one) is, on cgroup v1, one bind mount per
    // hierarchy that runc records as external, keyed by its destination: each becomes this
    // container's own cgroup in that hierarchy, as runc does it.
    for (const auto& dest : cfg.cgroup_mounts)
      for (const auto& dir : cg.dirs())
        req.ext_mounts.emplace_back(
            (stdfs::path(dest) / dir.lexically_relative("/sys/fs/cgroup").begin()->string()).string(),
            dir.string());

    UniqueFd netns;
    if (!cfg.netns_path.empty()) {
      netns.reset(::open(cfg.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!netns.valid()) return Error::sys("open network namespace", errno, cfg.netns_path.string());
      PW_TRY(ensure_loopback_up(netns.get()));
      req.inherit_fds.emplace_back("extRootNetNS", netns.get());
    }
    // Output pipes become the log (stdio_fd); the app's stdin pipe, an empty input.
    UniqueFd devnull_out, devnull_in;
    int stdio = o.stdio_fd;
    for (const auto& p : pipe_keys) {
      if (p.input_only) {
        if (!devnull_in.valid()) devnull_in.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!devnull_in.valid()) return Error::sys("open", errno, "/dev/null");
        req.inherit_fds.emplace_back(p.key, devnull_in.get());
        continue;
      }
      if (stdio < 0) {
        devnull_out.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
        if (!devnull_out.valid()) return Error::sys("open", errno, "/dev/null");
        stdio = devnull_out.get();
      }
      req.inherit_fds.emplace_back(p.key, stdio);
    }

    // criu starts inside the container's cgroups (spawned while this thread is in them), so
    // the restored tasks are born there: no process migration on the restore path.
    double join_ms = 0;
    bool joined_v1 = false;
    req.around_spawn = [&]() -> Result<std::shared_ptr<void>> {
      auto t = steady_clock::now();
      PW_ASSIGN(auto in, cg.enter_this_thread());
      joined_v1 = in->joined() > 0;
      join_ms = ms_since(t);
      PW_ASSIGN(auto tmp, PrivateTmpForThread::enter());
      using Both = std::pair<std::unique_ptr<ThreadInCgroups>, std::unique_ptr<PrivateTmpForThread>>;
      return std::shared_ptr<void>(std::make_shared<Both>(std::move(in), std::move(tmp)));
    };
    // With cgroup v2 alone a thread cannot move by itself: move criu, before it forks.
    pid_t criu_pid_seen = 0;
    req.before_request = [&](pid_t criu_pid) -> Status {
      criu_pid_seen = criu_pid;
      if (joined_v1) return {};
      auto t = steady_clock::now();
      Status st = cg.add(criu_pid);
      join_ms += ms_since(t);
      return st;
    };
    double before_resume_ms = 0;
    req.on_notify["post-restore"] = [&](pid_t pid) -> Status {
      undo.pid = pid;
      // The fault suite: CRIU dies with the tasks restored and stopped.
      if (fault_armed("criu.kill_at_post_restore")) ::kill(criu_pid_seen, SIGKILL);
      if (!o.before_resume) return {};
      auto t = steady_clock::now();
      Status s = o.before_resume(pid);
      before_resume_ms = ms_since(t);
      return s;
    };
    // Frozen before CRIU lets the tasks go (after pre-resume it only detaches from them, which
    // a frozen task allows): a parked instance has not run since its checkpoint. CRIU itself
    // leaves the freezer cgroup first, or it would freeze with them.
    double freeze_ms = 0;
    if (o.leave_frozen)
      req.on_notify["pre-resume"] = [&](pid_t) -> Status {
        auto t = steady_clock::now();
        PW_TRY(cg.leave_freezer(criu_pid_seen));
        Status s = cg.freeze();
        freeze_ms = ms_since(t);
        return s;
      };
    Restored out;
    out.phases.emplace_back("prepare_ms", ms_since(t0));
    const auto t_criu = steady_clock::now();
    auto r = criu::restore(req);
    if (!r.ok()) return std::move(r).error();
    out.phases.emplace_back("criu_ms", ms_since(t_criu));
    out.phases.emplace_back("cgroup_join_ms", join_ms);
    for (const auto& [k, v] : r->phases) out.phases.emplace_back(k + "_ms", v);
    if (o.before_resume) out.phases.emplace_back("before_resume_ms", before_resume_ms);
    if (o.leave_frozen) out.phases.emplace_back("freeze_ms", freeze_ms);
    undo.pid = r->pid;

    const auto t_state = steady_clock::now();
    auto started = process_start_time(r->pid);
    if (!started) return Error(ErrorKind::kRuntime, "restored init " + std::to_string(r->pid) + " is gone");
    st.pid = r->pid;
    st.start_time = *started;
    PW_TRY(save(st));
    if (!undo.bind_root.empty()) {
      // The restored mount namespace holds its own copy; ours is not needed any more.
      ::umount2(undo.bind_root.c_str(), MNT_DETACH);
      ::rmdir(undo.bind_root.c_str());
    }
    undo.armed = false;
    out.pid = r->pid;
    out.hook_before_resume = true;
    out.phases.emplace_back("state_ms", ms_since(t_state));
    out.phases.emplace_back("total_ms", ms_since(t0));
    return out;
  }

  std::shared_ptr<Runtime> runc_;
  stdfs::path root_;
};

}  // namespace

Result<std::vector<std::string>> enter_argv(pid_t pid, const std::string& cgroup,
                                            const std::vector<std::string>& env,
                                            const std::string& cwd,
                                            const std::vector<std::string>& cmd,
                                            std::optional<std::pair<uid_t, gid_t>> user) {
  // The shell joins the container's cgroups first, then becomes env + nsenter, which enter
  // the init's namespaces, root and cwd and run the command with the given environment.
  std::vector<std::string> argv = {
      "/bin/sh", "-c",
      "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; "
      "exec \"$@\"",
      "sh"};
  for (const auto& d : CgroupSet(cgroup).dirs()) argv.push_back((d / "cgroup.procs").string());
  argv.push_back("--");
  std::string nsenter = find_executable("nsenter");
  std::string env_bin = find_executable("env");
  if (nsenter.empty() || env_bin.empty())
    return Error(ErrorKind::kIncompatibleHost, "nsenter or env not found");
  // The host's env clears the environment to the given one; nsenter (after --root) finds the
  // command on the container's PATH.
  argv.push_back(env_bin);
  argv.push_back("-i");
  argv.insert(argv.end(), env.begin(), env.end());
  for (std::string a : {nsenter, std::string("--target"), std::to_string(pid),
                        std::string("--mount"), std::string("--uts"), std::string("--ipc"),
                        std::string("--net"), std::string("--pid"), std::string("--root"),
                        "--wd=" + cwd})
    argv.push_back(std::move(a));
  if (user)
    argv.insert(argv.end(), {"--setuid", std::to_string(user->first), "--setgid",
                             std::to_string(user->second)});
  argv.push_back("--");
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return argv;
}

std::unique_ptr<Runtime> make_criu_direct(std::shared_ptr<Runtime> runc, stdfs::path state_root) {
  return std::make_unique<CriuDirect>(std::move(runc), std::move(state_root));
}

}  // namespace prewarm::oci
