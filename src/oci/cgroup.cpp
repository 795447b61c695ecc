// Container cgroups on a v1 (or hybrid) host, written through cgroupfs files directly.
#include "oci/cgroup.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <map>
#include <sstream>
#include <thread>

#include "base/fs.h"
#include "base/log.h"

namespace prewarm::oci {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr const char* kCgroupRoot = "/sys/fs/cgroup";

// runc's default device rules (libcontainer/specconv AllowedDevices), applied after "a" is
// denied: mknod of any device, and use of the usual pseudo devices.
constexpr const char* kAllowedDevices[] = {
    "c *:* m",   "b *:* m",   "c 1:3 rwm", "c 1:8 rwm",   "c 1:7 rwm",  "c 5:0 rwm",
    "c 1:5 rwm", "c 1:9 rwm", "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm",  "c 10:200 rwm",
};

Status write_cg(const stdfs::path& file, std::string_view value) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error::sys("open", errno, file.string());
  ssize_t n = ::write(fd, value.data(), value.size());
  int err = errno;
  ::close(fd);
  if (n < 0) return Error::sys("write '" + std::string(value) + "' to", err, file.string());
  return {};
}

std::string read_cg(const stdfs::path& file) {
  auto r = fs::read_file(file, 1 << 20);
  return r.ok() ? *r : std::string();
}

}  // namespace

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string part;
  while (std::getline(in, part, sep)) out.push_back(part);
  return out;
}

struct CgroupMount {
  stdfs::path path;               // /sys/fs/cgroup/<name>
  // The cgroup mounted there: "/" on a host; inside a container often the container's own
  // cgroup, and paths under `path` are then relative to it.
  std::string root = "/";
  bool v2 = false;
  std::vector<std::string> opts;  // super options: "rw", "cpu", "name=systemd", ...
};

// The cgroup hierarchies mounted under /sys/fs/cgroup, read once from /proc/self/mountinfo
// (which grows with every instance's mounts, so not re-read per restore).
const std::vector<CgroupMount>& cgroup_mounts() {
  static const std::vector<CgroupMount> found = [] {
    std::vector<CgroupMount> out;
    auto text = fs::read_file("/proc/self/mountinfo", 4 << 20);
    if (!text.ok()) return out;
    for (const auto& line : split(*text, '\n')) {
      // "id parent major:minor root mountpoint options ... - fstype source superopts"
      std::istringstream f(line);
      std::string id, parent, dev, root, mnt;
      f >> id >> parent >> dev >> root >> mnt;
      auto dash = line.find(" - ");
      if (dash == std::string::npos) continue;
      std::istringstream tail(line.substr(dash + 3));
      std::string fstype, source, superopts;
      tail >> fstype >> source >> superopts;
      if (fstype != "cgroup" && fstype != "cgroup2") continue;
      if (stdfs::path(mnt).parent_path() != kCgroupRoot) continue;
      if (std::any_of(out.begin(), out.end(), [&](const auto& m) { return m.path == mnt; }))
        continue;
      out.push_back({mnt, root, fstype == "cgroup2", split(superopts, ',')});
    }
    return out;
  }();
  return found;
}

}  // namespace

const std::vector<stdfs::path>& cgroup_hierarchies() {
  static const std::vector<stdfs::path> paths = [] {
    std::vector<stdfs::path> out;
    for (const auto& m : cgroup_mounts()) out.push_back(m.path);
    return out;
  }();
  return paths;
}

namespace {

struct V1Hierarchy {
  stdfs::path mount;
  std::string key;  // as /proc/self/cgroup names it: "cpu", "cpu,cpuacct", "name=systemd"
};

// The v1 hierarchies and, for each, the calling thread's cgroup in it.
Result<std::vector<std::pair<V1Hierarchy, std::string>>> thread_v1_cgroups() {
  PW_ASSIGN(std::string own, fs::read_file("/proc/thread-self/cgroup", 1 << 20));
  std::map<std::string, std::string> path_of;  // key -> path
  for (const auto& line : split(own, '\n')) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string key = line.substr(a + 1, b - a - 1);
    if (!key.empty()) path_of[key] = line.substr(b + 1);  // "" : the v2 hierarchy
  }
  std::vector<std::pair<V1Hierarchy, std::string>> out;
  for (const auto& m : cgroup_mounts()) {
    if (m.v2) continue;
    for (const auto& [key, path] : path_of) {
      bool all = true;
      for (const auto& part : split(key, ','))
        all = all && std::find(m.opts.begin(), m.opts.end(), part) != m.opts.end();
      if (all) {
        // The thread's cgroup as a path under this mount.
        std::string under = path;
        if (m.root != "/" && (under == m.root || under.rfind(m.root + "/", 0) == 0))
          under = under.substr(m.root.size());
        out.push_back({{m.path, key}, under.empty() ? "/" : under});
        break;
      }
    }
  }
  return out;
}

}  // namespace

std::string own_cgroup() {
  std::string under;
  if (auto v1 = thread_v1_cgroups(); v1.ok()) {
    for (const auto& [h, path] : *v1) {
      for (const auto& part : split(h.key, ','))
        if (part == "memory") under = path;
    }
  }
  if (under.empty()) {
    // v2 only: the unified line "0::PATH", under the cgroup2 mount's root.
    auto own = fs::read_file("/proc/thread-self/cgroup", 1 << 20);
    for (const auto& line : split(own.ok() ? *own : std::string(), '\n'))
      if (line.rfind("0::", 0) == 0) under = line.substr(3);
    for (const auto& m : cgroup_mounts())
      if (m.v2 && m.root != "/" && (under == m.root || under.rfind(m.root + "/", 0) == 0))
        under = under.substr(m.root.size());
  }
  return under == "/" ? std::string() : under;
}

ThreadInCgroups::~ThreadInCgroups() {
  // Back where it was, each hierarchy; a thread left in an instance's cgroups would keep them
  // from being removed.
  for (const auto& file : back_)
    if (Status st = write_cg(file, "0"); !st.ok())
      log::warn("moving this thread back out of an instance's cgroups: " + st.error().message());
}

Result<std::unique_ptr<ThreadInCgroups>> CgroupSet::enter_this_thread() const {
  PW_ASSIGN(auto hierarchies, thread_v1_cgroups());
  auto guard = std::unique_ptr<ThreadInCgroups>(new ThreadInCgroups());
  for (const auto& [h, original] : hierarchies) {
    stdfs::path target = h.mount / rel_;
    std::error_code ec;
    if (!stdfs::exists(target, ec)) continue;  // a hierarchy create() did not know
    // "0" written to `tasks` moves the writing thread alone, which the kernel does without
    // the global threadgroup lock (and its RCU grace period): ~µs instead of ~1 ms each.
    PW_TRY(write_cg(target / "tasks", "0"));
    std::string rel_original = original;
    while (!rel_original.empty() && rel_original.front() == '/') rel_original.erase(0, 1);
    guard->back_.push_back(h.mount / rel_original / "tasks");
  }
  return guard;
}

CgroupSet::CgroupSet(std::string rel) : rel_(std::move(rel)) {
  while (!rel_.empty() && rel_.front() == '/') rel_.erase(0, 1);
}

std::vector<stdfs::path> CgroupSet::dirs() const {
  std::vector<stdfs::path> out;
  for (const auto& h : cgroup_hierarchies()) out.push_back(h / rel_);
  return out;
}

stdfs::path CgroupSet::in(const char* hierarchy) const {
  return stdfs::path(kCgroupRoot) / hierarchy / rel_;
}

Status CgroupSet::create() {
  if (rel_.empty() || rel_.find("..") != std::string::npos)
    return Error(ErrorKind::kInvalidInput, "cgroup path '" + rel_ + "' is not usable");
  if (cgroup_hierarchies().empty())
    return Error(ErrorKind::kIncompatibleHost, "no cgroup hierarchy mounted under /sys/fs/cgroup");
  std::vector<stdfs::path> made;
  auto undo = [&] {
    for (auto it = made.rbegin(); it != made.rend(); ++it) ::rmdir(it->c_str());
  };
  for (const auto& d : dirs()) {
    std::error_code ec;
    // Parents of a nested path may exist already (shared with other containers). New v1
    // cpuset parents get their own parent's CPUs and memory nodes, or nothing could join
    // anything below them.
    std::vector<stdfs::path> missing;
    for (auto p = d.parent_path(); !p.empty() && p != p.parent_path() && !stdfs::exists(p, ec);
         p = p.parent_path())
      missing.push_back(p);
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (::mkdir(it->c_str(), 0755) != 0 && errno != EEXIST) break;
      if (d == in("cpuset"))
        for (const char* f : {"cpuset.cpus", "cpuset.mems"})
          if (std::string v = read_cg(it->parent_path() / f); !v.empty() && v != "\n")
            (void)write_cg(*it / f, v.substr(0, v.find_last_not_of('\n') + 1));
    }
    if (::mkdir(d.c_str(), 0755) != 0) {
      int err = errno;
      undo();
      Error e = Error::sys("mkdir", err, d.string());
      return err == EEXIST ? std::move(e).with_kind(ErrorKind::kConflict) : e;
    }
    made.push_back(d);
  }
  // A new v1 cpuset starts with no CPUs and no memory nodes; nothing can join it until it has
  // its parent's.
  if (stdfs::path cs = in("cpuset"); stdfs::exists(cs / "cpuset.cpus")) {
    Status st;
    for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
      std::string v = read_cg(cs.parent_path() / f);
      while (!v.empty() && v.back() == '\n') v.pop_back();
      if (st.ok()) st = write_cg(cs / f, v);
    }
    if (!st.ok()) {
      undo();
      return std::move(st).error().with_context("cpuset of cgroup " + rel_);
    }
  }
  if (stdfs::path dev = in("devices"); stdfs::exists(dev / "devices.deny")) {
    Status st = write_cg(dev / "devices.deny", "a");
    for (const char* rule : kAllowedDevices) {
      if (!st.ok()) break;
      st = write_cg(dev / "devices.allow", rule);
    }
    if (!st.ok()) {
      undo();
      return std::move(st).error().with_context("device rules of cgroup " + rel_);
    }
  }
  return {};
}

Status CgroupSet::add(pid_t pid) const {
  const std::string p = std::to_string(pid);
  for (const auto& d : dirs()) PW_TRY(write_cg(d / "cgroup.procs", p));
  return {};
}

Status CgroupSet::freeze(milliseconds timeout) const {
  stdfs::path f = in("freezer") / "freezer.state";
  PW_TRY(write_cg(f, "FROZEN"));
  auto deadline = steady_clock::now() + timeout;
  // FREEZING until every task has stopped.
  for (;;) {
    if (read_cg(f).starts_with("FROZEN")) return {};
    if (steady_clock::now() > deadline) {
      (void)write_cg(f, "THAWED");
      return Error(ErrorKind::kUnavailable, "cgroup " + rel_ + " did not freeze in time",
                   ETIMEDOUT);
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
}

Status CgroupSet::leave_freezer(pid_t pid) const {
  return write_cg(in("freezer").parent_path() / "cgroup.procs", std::to_string(pid));
}

Status CgroupSet::thaw() const { return write_cg(in("freezer") / "freezer.state", "THAWED"); }

bool CgroupSet::frozen() const {
  return read_cg(in("freezer") / "freezer.state").starts_with("FROZEN");
}

std::vector<pid_t> CgroupSet::pids() const {
  std::vector<pid_t> out;
  for (const char* h : {"pids", "freezer"}) {
    stdfs::path f = in(h) / "cgroup.procs";
    std::error_code ec;
    if (!stdfs::exists(f, ec)) continue;
    std::istringstream in_s(read_cg(f));
    pid_t p;
    while (in_s >> p) out.push_back(p);
    return out;
  }
  return out;
}

Status CgroupSet::destroy(milliseconds timeout) const {
  std::error_code ec;
  // Dying is background work: every thread goes to SCHED_IDLE first, so that its exit (freeing
  // all of the app's memory) does not take CPU from the instances still serving, or from a
  // claim beside it.
  for (const char* h : {"pids", "freezer"}) {
    std::string tasks = read_cg(in(h) / "tasks");
    if (tasks.empty()) continue;
    struct sched_param idle {};
    for (size_t at = 0; at < tasks.size();) {
      size_t end = tasks.find('\n', at);
      if (end == std::string::npos) end = tasks.size();
      const pid_t tid = static_cast<pid_t>(std::strtol(tasks.c_str() + at, nullptr, 10));
      if (tid > 0) ::sched_setscheduler(tid, SCHED_IDLE, &idle);
      at = end + 1;
    }
    break;
  }
  if (stdfs::exists(in("freezer"), ec)) (void)thaw();
  auto deadline = steady_clock::now() + timeout;
  for (;;) {
    auto left = pids();
    if (left.empty()) break;
    for (pid_t p : left) ::kill(p, SIGKILL);
    if (steady_clock::now() > deadline)
      return Error(ErrorKind::kUnavailable,
                   "cgroup " + rel_ + " still has " + std::to_string(left.size()) +
                       " processes after SIGKILL",
                   EBUSY);
    std::this_thread::sleep_for(milliseconds(2));
  }
  std::optional<Error> first;
  for (const auto& d : dirs()) {
    for (;;) {
      if (::rmdir(d.c_str()) == 0 || errno == ENOENT) break;
      // EBUSY while the last tasks are still leaving.
      if (errno == EBUSY && steady_clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(2));
        continue;
      }
      if (!first) first = Error::sys("rmdir", errno, d.string());
      break;
    }
  }
  if (first) return std::move(*first);
  return {};
}

}  // namespace prewarm::oci
