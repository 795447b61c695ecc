// Removing, listing and recovering instances.
#include <algorithm>
#include <set>

#include "criu/lazy_pages.h"
#include "base/fault.h"
#include "base/fs.h"
#include "base/log.h"
#include "lifecycle/instance.h"
#include "lifecycle/lock.h"

namespace prewarm::lifecycle {
namespace {

namespace stdfs = std::filesystem;

// A start holds the lock for as long as it takes the app to become ready (a cold fallback can
// take minutes); removal waits that long, not forever.
constexpr auto kRemoveWait = std::chrono::minutes(10);

bool is_instance_dir(const stdfs::directory_entry& e) {
  std::error_code ec;
  std::string n = e.path().filename().string();
  return !n.empty() && n[0] != '.' && e.is_directory(ec);
}

// An id names a directory under instances/: no path of its own, nothing hidden.
Status check_id(const std::string& id) {
  if (id.empty() || id.find('/') != std::string::npos || id[0] == '.')
    return Error(ErrorKind::kInvalidInput, "invalid instance id '" + id + "'");
  return {};
}

}  // namespace

Status Instances::undo(const std::string& id, const InstanceRecord* rec) {
  const auto dir = ctx_.instance_dir(id);
  std::string problems;
  auto note = [&](Status st) {
    if (!st.ok()) problems += (problems.empty() ? "" : "; ") + st.error().message();
  };
  // A lazy restore's page server first: it would stop the instance itself, and call that a
  // failure, once its pages can no longer be copied.
  note(criu::stop_lazy_pages(dir / "criu"));
  // The backend that made the container; without a record, each one (removing a container a
  // runtime does not know is fine).
  if (rec != nullptr && !rec->runtime.empty()) {
    note(ctx_.runtime_named(rec->runtime)->remove(id));
    fault_point("rm.after_runtime");
  } else {
    std::set<oci::Runtime*> seen;
    for (const auto& [name, rt] : ctx_.runtimes)
      if (seen.insert(rt.get()).second) note(rt->remove(id));
    if (seen.insert(ctx_.runtime.get()).second) note(ctx_.runtime->remove(id));
  }
  note(seams_.release_rootfs ? seams_.release_rootfs(dir) : release_overlay(dir));
  // A pod's sandbox is the pod's; prewarm's own is undone from the id alone.
  const std::string kind = rec != nullptr ? rec->sandbox : "";
  if (kind != "given") {
    if (kind.empty() || kind == seams_.sandbox->kind()) {
      note(seams_.sandbox->destroy(id));
    } else {
      note(make_own_sandbox(ctx_.net)->destroy(id));
    }
  }
  fault_point("rm.after_sandbox");
  // Whatever a killed CRIU or runc left mounted inside (e.g. CRIU's cgroup yard).
  note(fs::unmount_under(dir));
  if (problems.empty()) note(fs::remove_all(dir));
  // A bake's app log lives beside the directory (it is opened before the directory exists).
  std::error_code ec;
  stdfs::remove(ctx_.instances_dir() / (id + ".log"), ec);
  if (!problems.empty())
    return Error(ErrorKind::kRuntime, "removing instance " + id + ": " + problems);
  return {};
}

Status Instances::remove(const std::string& id) {
  PW_TRY(check_id(id));
  const auto dir = ctx_.instance_dir(id);
  auto lock = InstanceLock::acquire(dir, kRemoveWait);
  if (!lock.ok()) {
    if (lock.error().kind() == ErrorKind::kNotFound)
      return Error(ErrorKind::kNotFound, "no instance " + id + " (see `prewarm ps`)");
    return std::move(lock).error();
  }
  auto rec = load_record(dir);
  if (rec.ok()) {
    rec->state = InstanceState::kStopping;
    (void)save_record(dir, *rec);
  }
  return undo(id, rec.ok() ? &*rec : nullptr);
}

Result<std::vector<InstanceStatus>> Instances::list() {
  std::vector<InstanceStatus> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir(), ec)) {
    if (!is_instance_dir(e)) continue;
    InstanceStatus s;
    auto rec = load_record(e.path());
    if (rec.ok()) {
      s.record = *rec;
    } else {
      s.record.id = e.path().filename().string();
      s.record.error = rec.error().message();
    }
    out.push_back(std::move(s));
  }
  if (ec) return Error::sys("read", ec.value(), ctx_.instances_dir().string());

  // Each runtime the records name, asked once (`runc list` is a process; the criu backend's
  // list includes runc's).
  std::map<oci::Runtime*, std::map<std::string, oci::ContainerState>> states;
  for (auto& s : out) {
    oci::Runtime* rt = ctx_.runtime_named(s.record.runtime).get();
    auto [known, fresh] = states.try_emplace(rt);
    if (fresh) {
      auto l = rt->list();
      if (!l.ok())
        return std::move(l).error().with_context("listing " + rt->name() + "'s containers");
      for (auto& c : *l) known->second[c.id] = c;
    }
    auto it = known->second.find(s.record.id);
    s.runtime_state = it == known->second.end() ? "missing" : it->second.status;
    s.pid = it == known->second.end() ? 0 : it->second.pid;
    note_lazy_failure(s);
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.record.created < b.record.created; });
  return out;
}

void Instances::note_lazy_failure(InstanceStatus& s) const {
  if (s.record.paging != "lazy" || !s.record.error.empty()) return;
  auto lazy = criu::lazy_pages_outcome(ctx_.instance_dir(s.record.id) / "criu");
  if (lazy.state == criu::LazyPagesOutcome::State::kFailed)
    s.record.error = "lazy restore failed: " + lazy.reason;
}

Result<InstanceStatus> Instances::inspect(const std::string& id) {
  PW_TRY(check_id(id));
  const auto dir = ctx_.instance_dir(id);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return Error(ErrorKind::kNotFound, "no instance " + id + " (see `prewarm ps`)");
  InstanceStatus s;
  auto rec = load_record(dir);
  if (rec.ok()) {
    s.record = *rec;
  } else {
    s.record.id = id;
    s.record.error = rec.error().message();
  }
  // Its own runtime only, asked for this container alone (no `runc list`).
  auto st = ctx_.runtime_named(s.record.runtime)->state(id);
  if (st.ok()) {
    s.runtime_state = st->status;
    s.pid = st->pid;
  } else if (st.error().kind() == ErrorKind::kNotFound) {
    s.runtime_state = "missing";
  } else {
    return std::move(st).error().with_context("state of " + id);
  }
  note_lazy_failure(s);
  return s;
}

Result<RecoveryReport> Instances::recover() {
  RecoveryReport rep;
  std::error_code ec;
  std::vector<stdfs::path> dirs;
  for (const auto& e : stdfs::directory_iterator(ctx_.instances_dir(), ec)) {
    if (is_instance_dir(e)) {
      dirs.push_back(e.path());
      continue;
    }
    // The log of a bake that died before making its instance's directory (it opens the log
    // first, then at once the directory: a minute is long past that).
    std::error_code fec;
    if (e.path().extension() == ".log" && e.is_regular_file(fec) &&
        !stdfs::exists(ctx_.instances_dir() / e.path().stem(), fec) &&
        stdfs::last_write_time(e.path(), fec) <
            stdfs::file_time_type::clock::now() - std::chrono::minutes(1))
      stdfs::remove(e.path(), fec);
  }
  if (ec) return Error::sys("read", ec.value(), ctx_.instances_dir().string());
  for (const auto& dir : dirs) {
    const std::string id = dir.filename().string();
    auto lock = InstanceLock::try_acquire(dir);
    if (!lock.ok()) {
      if (lock.error().kind() != ErrorKind::kNotFound)
        rep.problems.push_back(lock.error().message());
      continue;  // removed meanwhile
    }
    if (!lock->has_value()) {
      rep.busy.push_back(id);
      continue;
    }
    auto rec = load_record(dir);
    // A ready or parked instance of an image is adopted. One without an image is a bake's, which holds
    // its lock until it is done: free, its bake died.
    if (rec.ok() && !is_transitional(rec->state) && !rec->image.empty()) {
      rep.adopted.push_back(id);
      continue;
    }
    // Its starter or remover died (the kernel dropped the lock): undo what it made. Without a
    // record the instance died before its first write; names derive from the id.
    Status st = undo(id, rec.ok() ? &*rec : nullptr);
    if (st.ok()) {
      rep.removed.push_back(id);
    } else {
      rep.problems.push_back(st.error().message());
    }
  }
  return rep;
}

Status remove_instance(const Context& ctx, const std::string& id) {
  return Instances(ctx).remove(id);
}

Result<std::vector<InstanceStatus>> list_instances(const Context& ctx) {
  return Instances(ctx).list();
}

Result<std::set<std::string>> digests_in_use(const Context& ctx) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(ctx.instances_dir(), ec)) {
    if (!is_instance_dir(e)) continue;
    if (auto rec = load_record(e.path()); rec.ok() && !rec->image_digest.empty())
      out.insert(rec->image_digest);
  }
  if (ec) return Error::sys("read", ec.value(), ctx.instances_dir().string());
  return out;
}

}  // namespace prewarm::lifecycle
