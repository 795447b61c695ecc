#include "images/pulling.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

stdfs::path pulls_dir(const engine::Context& ctx) { return ctx.state_dir / "pulls"; }

}  // namespace

Result<PullMarker> PullMarker::take(const engine::Context& ctx, const std::string& name) {
  const stdfs::path dir = pulls_dir(ctx);
  PW_TRY(fs::make_dirs(dir, 0700));
  const stdfs::path lock = dir / (name + ".lock"), marker = dir / (name + ".json");
  for (;;) {
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error::sys("open", errno, lock.string());
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        return Error(ErrorKind::kConflict,
                     "image " + name + " is being pulled by another prewarm here; wait for it",
                     EBUSY);
      return Error::sys("lock", errno, lock.string());
    }
    // A pull that ended removed the lock file after we opened it: lock the new one.
    struct stat a {}, b {};
    if (::fstat(fd.get(), &a) != 0 || ::stat(lock.c_str(), &b) != 0 || a.st_ino != b.st_ino) continue;
    // What a killed pull of this name left says nothing now.
    std::error_code ec;
    stdfs::remove(marker, ec);
    return PullMarker(marker, lock, std::move(fd));
  }
}

PullMarker::~PullMarker() {
  if (!fd_.valid()) return;
  std::error_code ec;
  stdfs::remove(json_, ec);
  stdfs::remove(lock_, ec);  // still locked: a waiting pull re-checks the inode
}

Status PullMarker::staged(const std::string& manifest_digest) {
  json j = {{"manifestDigest", manifest_digest}};
  return fs::write_file_atomic(json_, j.dump() + "\n", 0600);
}

Status PullMarker::restorable(const std::string& manifest_digest, const stdfs::path& lazy_copy) {
  json j = {{"manifestDigest", manifest_digest}, {"lazyCopy", lazy_copy.string()}};
  return fs::write_file_atomic(json_, j.dump() + "\n", 0600);
}

bool pull_lock_held(const stdfs::path& lock) {
  UniqueFd fd(::open(lock.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return false;  // nobody holds it
  return errno == EWOULDBLOCK;
}

Result<std::optional<PullInProgress>> pull_in_progress(const engine::Context& ctx,
                                                       const std::string& name, bool wait) {
  const stdfs::path lock = pulls_dir(ctx) / (name + ".lock"), marker = pulls_dir(ctx) / (name + ".json");
  bool said = false;
  for (;;) {
    if (!pull_lock_held(lock)) return std::optional<PullInProgress>();
    auto text = fs::read_file(marker, 1 << 16);
    if (text.ok()) {
      json j = json::parse(*text, nullptr, false);
      if (!j.is_object() || !j.value("manifestDigest", json()).is_string() ||
          !j.value("lazyCopy", json("")).is_string())
        return Error(ErrorKind::kIo, marker.string() + ": not a pull record");
      PullInProgress p;
      p.manifest_digest = j["manifestDigest"].get<std::string>();
      p.lazy_copy = j.value("lazyCopy", "");
      p.lock = lock;
      if (!p.lazy_copy.empty() || !wait) return std::optional<PullInProgress>(std::move(p));
    } else if (text.error().errno_value() != ENOENT) {
      return std::move(text).error();
    } else if (!wait) {
      PullInProgress p;
      p.lock = lock;
      return std::optional<PullInProgress>(std::move(p));
    }
    if (!said) {
      ctx.say("image " + name + " is being pulled; waiting for the part a restore needs first");
      said = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::set<std::string> pulling_digests(const engine::Context& ctx) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(pulls_dir(ctx), ec)) {
    const stdfs::path p = e.path();
    if (p.extension() != ".lock") continue;
    auto pull = pull_in_progress(ctx, p.stem().string(), false);
    if (pull.ok() && *pull && !(*pull)->manifest_digest.empty()) out.insert((*pull)->manifest_digest);
  }
  return out;
}

}  // namespace prewarm::images
