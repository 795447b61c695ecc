// Debootstrap bases: a Debian suite plus packages, built once per recipe into
// cache_dir/debootstrap/<key> from the host's own Debian mirror.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "rootfs/internal.h"

namespace prewarm::rootfs {
namespace {

constexpr auto kBuildTimeout = std::chrono::minutes(30);
constexpr size_t kLogTailLines = 25;

bool valid_name(const std::string& s, std::string_view extra) {
  if (s.empty() || !(std::islower(static_cast<unsigned char>(s[0])) ||
                     std::isdigit(static_cast<unsigned char>(s[0]))))
    return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return std::islower(static_cast<unsigned char>(c)) ||
           std::isdigit(static_cast<unsigned char>(c)) || extra.find(c) != std::string_view::npos;
  });
}

// Names end up as debootstrap arguments: refuse anything that could read as an option or
// split the --include list.
Status validate(const spec::RootfsSource& source) {
  if (source.suite.empty()) return Error("rootfs.suite: required for a debootstrap rootfs", EINVAL);
  if (!valid_name(source.suite, "-."))
    return Error("rootfs.suite \"" + source.suite + "\": not a Debian suite name", EINVAL);
  if (!source.variant.empty() && !valid_name(source.variant, "-"))
    return Error("rootfs.variant \"" + source.variant + "\": not a debootstrap variant", EINVAL);
  for (const auto& p : source.packages) {
    if (!valid_name(p, "+-.:"))
      return Error("rootfs.packages: \"" + p + "\" is not a Debian package name", EINVAL);
  }
  return {};
}

std::vector<std::string> sorted_packages(const spec::RootfsSource& source) {
  std::vector<std::string> pkgs = source.packages;
  std::sort(pkgs.begin(), pkgs.end());
  pkgs.erase(std::unique(pkgs.begin(), pkgs.end()), pkgs.end());
  return pkgs;
}

std::string join(const std::vector<std::string>& v, char sep) {
  std::string s;
  for (const auto& x : v) {
    if (!s.empty()) s += sep;
    s += x;
  }
  return s;
}

std::string normalized_mirror(std::string m) {
  while (m.size() > 1 && m.back() == '/') m.pop_back();
  return m;
}

// The last lines of a log, read from its end so a huge log costs nothing.
std::string log_tail(const std::filesystem::path& log) {
  UniqueFd fd(::open(log.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return {};
  off_t size = ::lseek(fd.get(), 0, SEEK_END);
  off_t from = std::max<off_t>(0, size - 16384);
  std::string text(static_cast<size_t>(size - from), '\0');
  ssize_t n = ::pread(fd.get(), text.data(), text.size(), from);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  size_t start = text.size();
  for (size_t lines = 0; start > 0 && lines < kLogTailLines; ++lines) {
    size_t nl = text.rfind('\n', start - 1);
    start = nl == std::string::npos ? 0 : nl;
  }
  if (start > 0) ++start;
  return text.substr(start);
}

// debootstrap leaves every downloaded package in the apt cache; the base never needs them.
Status remove_downloaded_debs(const std::filesystem::path& root) {
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd.valid()) return Error::sys("open", errno, root.string());
  auto dir = detail::open_in_root(root_fd.get(), "var/cache/apt/archives", O_RDONLY | O_DIRECTORY);
  if (!dir.ok()) {
    if (dir.error().errno_value() == ENOENT) return {};
    return std::move(dir).error();
  }
  // SAFETY: fdopendir owns the fd from here on; closedir closes it.
  DIR* d = ::fdopendir(dir->release());
  if (d == nullptr) return Error::sys("opendir", errno, "/var/cache/apt/archives");
  int dfd = ::dirfd(d);
  Status st;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (!name.ends_with(".deb")) continue;
    struct stat sb {};
    if (::fstatat(dfd, e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) continue;
    if (::unlinkat(dfd, e->d_name, 0) != 0 && st.ok())
      st = Error::sys("remove", errno, "/var/cache/apt/archives/" + std::string(name));
  }
  ::closedir(d);
  return st;
}

// The last "I: ..." progress line debootstrap wrote to its log.
std::string last_info_line(const std::filesystem::path& log) {
  auto text = fs::read_file(log, 64 << 20);
  if (!text.ok()) return {};
  size_t pos = text->rfind("\nI: ");
  if (pos == std::string::npos) return {};
  size_t end = text->find('\n', pos + 1);
  return text->substr(pos + 4, end == std::string::npos ? std::string::npos : end - pos - 4);
}

Status run_debootstrap(const spec::RootfsSource& source, const std::string& mirror,
                       const std::filesystem::path& target, const std::filesystem::path& log,
                       const Progress& progress) {
  std::vector<std::string> argv = {"debootstrap"};
  if (!source.variant.empty()) argv.push_back("--variant=" + source.variant);
  auto pkgs = sorted_packages(source);
  if (!pkgs.empty()) argv.push_back("--include=" + join(pkgs, ','));
  argv.insert(argv.end(), {source.suite, target.string(), mirror});

  UniqueFd log_fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!log_fd.valid()) return Error::sys("create", errno, log.string());
  SpawnOptions opts;
  opts.argv = argv;
  opts.env = {"DEBIAN_FRONTEND=noninteractive"};
  opts.stdout_fd = log_fd.get();
  opts.stderr_fd = log_fd.get();
  PW_ASSIGN(Child child, spawn(opts));
  // A build takes minutes: every few seconds, pass on what debootstrap is doing ("I: ..." lines).
  auto deadline = std::chrono::steady_clock::now() + kBuildTimeout;
  std::string last_step;
  Result<int> status = Error("debootstrap did not run");
  for (;;) {
    status = child.wait(std::chrono::seconds(5));
    if (status.ok() || std::chrono::steady_clock::now() >= deadline) break;
    if (!progress) continue;
    std::string step = last_info_line(log);
    if (!step.empty() && step != last_step) progress("  debootstrap: " + step);
    last_step = step;
  }
  if (!status.ok())
    return Error(join(argv, ' ') + ": did not finish within 30 minutes (log: " + log.string() + ")",
                 ETIMEDOUT)
        .with_detail(log_tail(log));
  RunResult r;
  r.status = *status;
  if (!r.success())
    return Error(join(argv, ' ') + " " + r.describe() + " (log: " + log.string() + ")")
        .with_detail(log_tail(log));
  return remove_downloaded_debs(target);
}

}  // namespace

std::string debootstrap_key(const spec::RootfsSource& source, const std::string& mirror) {
  // Field names and a format version keep differently shaped recipes from colliding.
  std::string text = "prewarm-debootstrap-key-v1\n";
  text += "suite=" + source.suite + "\n";
  text += "variant=" + source.variant + "\n";
  text += "packages=" + join(sorted_packages(source), ',') + "\n";
  text += "mirror=" + normalized_mirror(mirror) + "\n";
  return sha256_hex(text);
}

namespace detail {

Result<Base> prepare_debootstrap(const spec::RootfsSource& source,
                                 const std::filesystem::path& cache_dir, const Progress& progress) {
  const std::string what = "rootfs.debootstrap " + source.suite;
  PW_TRY(validate(source));
  auto mirror = host_debian_mirror();
  if (!mirror.ok()) return std::move(mirror).error().with_context(what);
  const std::string key = debootstrap_key(source, *mirror);

  auto build = [&](const std::filesystem::path& tmp) -> Status {
    if (::geteuid() != 0)
      return Error(
          "building it needs root (debootstrap chroots and creates device nodes); "
          "run as root once to fill the cache",
          EPERM);
    if (find_executable("debootstrap").empty())
      return Error("debootstrap is not installed; install it with: apt-get install debootstrap",
                   ENOENT);
    if (progress) {
      std::string msg = "building debootstrap rootfs " + source.suite;
      if (size_t n = sorted_packages(source).size(); n > 0)
        msg += " (+" + std::to_string(n) + (n == 1 ? " package)" : " packages)");
      progress(msg + ", this takes a minute or two");
    }
    const std::filesystem::path log = cache_dir / "debootstrap" / (key + ".log");
    return run_debootstrap(source, normalized_mirror(*mirror), tmp, log, progress);
  };
  auto dir = build_cached(cache_dir, "debootstrap", key, build);
  if (!dir.ok()) return std::move(dir).error().with_context(what);
  return Base{std::move(*dir), "debootstrap:" + key, std::nullopt};
}

}  // namespace detail
}  // namespace prewarm::rootfs
