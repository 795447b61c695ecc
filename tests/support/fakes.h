// Fakes of the lifecycle's seams (runtime, sandbox, rootfs, identity) for unit tests without
// root: they keep what they "made" in memory so a test can check that a failure undid it all.
#pragma once

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "base/fs.h"
#include "lifecycle/instance.h"
#include "oci/runtime.h"

namespace prewarm::testing {

// What happened, in order, across all fakes (e.g. "restore app-1", "identity app-1 1001").
class EventLog {
 public:
  void add(std::string e) {
    std::lock_guard l(mu_);
    events_.push_back(std::move(e));
  }
  std::vector<std::string> events() const {
    std::lock_guard l(mu_);
    return events_;
  }
  bool has(const std::string& prefix) const {
    for (const auto& e : events())
      if (e.rfind(prefix, 0) == 0) return true;
    return false;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> events_;
};

class FakeRuntime final : public oci::Runtime {
 public:
  explicit FakeRuntime(EventLog& log) : log_(log) {}
  std::string name() const override { return "fake"; }

  Status run(const std::string& id, const std::filesystem::path&, int) override {
    log_.add("run " + id);
    if (fail_run) return Error(ErrorKind::kRuntime, "fake run failed");
    std::lock_guard l(mu_);
    containers_[id] = {id, "running", next_pid_++, {}};
    return {};
  }
  Status checkpoint(const std::string&, const oci::CheckpointOptions&) override {
    return Error(ErrorKind::kRuntime, "fake: no checkpoints");
  }
  Result<oci::Restored> restore(const std::string& id, const std::filesystem::path&,
                                const oci::RestoreOptions& o) override {
    log_.add("restore " + id);
    if (fail_restore)
      return Error(ErrorKind::kRuntime, "fake restore failed")
          .with_detail("CRIU log: (00.1) Error (criu/cr-restore.c:1): fake reason");
    pid_t pid;
    {
      std::lock_guard l(mu_);
      pid = next_pid_++;
      containers_[id] = {id, "created", pid, {}};
    }
    if (o.before_resume) {
      Status st = o.before_resume(pid);
      if (!st.ok()) {
        std::lock_guard l(mu_);
        containers_.erase(id);
        return std::move(st).error();
      }
    }
    log_.add((o.leave_frozen ? "freeze " : "resume ") + id);
    std::lock_guard l(mu_);
    containers_[id].status = o.leave_frozen ? "paused" : "running";
    oci::Restored r;
    r.pid = pid;
    r.phases = {{"criu_ms", 1.0}};
    return r;
  }
  Result<oci::ContainerState> state(const std::string& id) override {
    std::lock_guard l(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) return Error(ErrorKind::kNotFound, "no container " + id);
    return it->second;
  }
  Result<int> exec(const std::string&, const std::vector<std::string>&,
                   std::chrono::milliseconds) override {
    return 0;
  }
  Status kill(const std::string&, int) override { return {}; }
  Status pause(const std::string& id) override { return set_status(id, "pause", "paused"); }
  Status resume(const std::string& id) override { return set_status(id, "thaw", "running"); }
  Status remove(const std::string& id) override {
    log_.add("remove " + id);
    std::lock_guard l(mu_);
    containers_.erase(id);
    return {};
  }
  Result<std::vector<oci::ContainerState>> list() override {
    if (fail_list) return Error(ErrorKind::kRuntime, "fake list failed");
    std::lock_guard l(mu_);
    std::vector<oci::ContainerState> out;
    for (const auto& [id, s] : containers_) out.push_back(s);
    return out;
  }
  Result<std::string> version() override { return std::string("fake-1"); }

  size_t count() const {
    std::lock_guard l(mu_);
    return containers_.size();
  }

  bool fail_restore = false, fail_run = false, fail_list = false;

 private:
  Status set_status(const std::string& id, const std::string& event, const std::string& status) {
    log_.add(event + " " + id);
    std::lock_guard l(mu_);
    auto it = containers_.find(id);
    if (it == containers_.end()) return Error(ErrorKind::kNotFound, "no container " + id);
    it->second.status = status;
    return {};
  }

  EventLog& log_;
  mutable std::mutex mu_;
  std::map<std::string, oci::ContainerState> containers_;
  pid_t next_pid_ = 1000;
};

class FakeSandbox final : public lifecycle::Sandbox {
 public:
  explicit FakeSandbox(EventLog& log) : log_(log) {}
  std::string kind() const override { return "own"; }
  Result<lifecycle::SandboxInfo> create(const std::string& id) override {
    log_.add("sandbox " + id);
    if (fail_create) return Error(ErrorKind::kIo, "fake sandbox failed");
    std::lock_guard l(mu_);
    live_.insert(id);
    lifecycle::SandboxInfo s;
    s.netns_path = "/fake/netns/" + id;
    s.netns = "pw-" + id;
    s.ip = "10.0.0." + std::to_string(++n_);
    return s;
  }
  Status destroy(const std::string& id) override {
    log_.add("unsandbox " + id);
    std::lock_guard l(mu_);
    live_.erase(id);
    return {};
  }
  Result<lifecycle::SandboxInfo> renew(const std::string& id) override {
    PW_TRY(destroy(id));
    return create(id);
  }
  // As attach() does before a crash: the sandbox exists, nothing recorded it.
  void leak(const std::string& id) {
    std::lock_guard l(mu_);
    live_.insert(id);
  }
  std::set<std::string> live() const {
    std::lock_guard l(mu_);
    return live_;
  }
  bool fail_create = false;

 private:
  EventLog& log_;
  mutable std::mutex mu_;
  std::set<std::string> live_;
  int n_ = 1;
};

// A rootfs that is a plain directory DIR/rootfs (the real overlay's release also works on it).
class FakeRootfs final : public lifecycle::RootfsProvider {
 public:
  FakeRootfs(EventLog& log, bool fail) : log_(log), fail_(fail) {}
  Result<std::filesystem::path> prepare(const std::filesystem::path& dir,
                                        lifecycle::RootfsPurpose purpose) override {
    log_.add(std::string(purpose == lifecycle::RootfsPurpose::kRestore ? "rootfs-restore "
                                                                      : "rootfs-cold ") +
             dir.filename().string());
    if (fail_) return Error(ErrorKind::kIo, "fake rootfs failed");
    PW_TRY(fs::make_dirs(dir / "rootfs", 0755));
    return dir / "rootfs";
  }
  Status release(const std::filesystem::path& dir) override {
    return fs::remove_all(dir / "rootfs");
  }

 private:
  EventLog& log_;
  bool fail_;
};

class FakeIdentity final : public lifecycle::Identity {
 public:
  FakeIdentity(EventLog& log, std::string hostname, bool fail)
      : log_(log), hostname_(std::move(hostname)), fail_(fail) {}
  Status apply(pid_t pid) override {
    log_.add("identity " + hostname_ + " " + std::to_string(pid));
    if (fail_) return Error(ErrorKind::kRuntime, "fake identity failed");
    return {};
  }

 private:
  EventLog& log_;
  std::string hostname_;
  bool fail_;
};

}  // namespace prewarm::testing
