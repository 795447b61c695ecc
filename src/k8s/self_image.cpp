// The prewarm container image, made from this host's binaries.
#include "k8s/self_image.h"

#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <sstream>

#include "base/fs.h"
#include "base/subprocess.h"
#include "criu/criu.h"
#include "k8s/pod_restore.h"

namespace prewarm::k8s {
namespace {

namespace stdfs = std::filesystem;

// The shared objects `binary` loads, as ldd resolves them on this host (absolute paths).
Result<std::vector<stdfs::path>> libraries_of(const stdfs::path& binary) {
  SpawnOptions o;
  o.argv = {"ldd", binary.string()};
  PW_ASSIGN(RunResult r, run_capture(o, std::chrono::seconds(30)));
  // A static binary: ldd says so and exits 1.
  if (!r.success()) {
    if (r.out.find("not a dynamic executable") != std::string::npos ||
        r.err.find("not a dynamic executable") != std::string::npos)
      return std::vector<stdfs::path>{};
    return Error(ErrorKind::kRuntime, "ldd " + binary.string() + " " + r.describe() + ": " + r.err);
  }
  std::vector<stdfs::path> libs;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.find("not found") != std::string::npos)
      return Error(ErrorKind::kNotFound, binary.string() + " needs a library this host lacks: " + line);
    // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    std::string path;
    if (auto arrow = line.find("=> "); arrow != std::string::npos)
      path = line.substr(arrow + 3);
    else
      path = line.substr(line.find_first_not_of(" \t"));
    path = path.substr(0, path.find(" ("));
    if (!path.empty() && path[0] == '/') libs.emplace_back(path);
  }
  return libs;
}

// Copies `from` (following links) to root/`at`, making parents.
Status place(const stdfs::path& from, const stdfs::path& root, const stdfs::path& at,
             mode_t mode) {
  const stdfs::path dest = root / at.relative_path();
  PW_TRY(fs::make_dirs(dest.parent_path(), 0755));
  std::error_code ec;
  stdfs::copy_file(from, dest, stdfs::copy_options::overwrite_existing, ec);
  if (ec) return Error::sys("copy", ec.value(), from.string() + " to " + dest.string());
  if (::chmod(dest.c_str(), mode) != 0) return Error::sys("chmod", errno, dest.string());
  return {};
}

}  // namespace

Result<ociimage::WrittenImage> write_self_image(const SelfImageOptions& o,
                                                const stdfs::path& out_tar) {
  std::error_code ec;
  const stdfs::path prewarm = stdfs::canonical(o.prewarm, ec);
  if (ec) return Error::sys("resolve", ec.value(), o.prewarm.string());
  const stdfs::path runc = o.runc.empty() ? stdfs::path(runc_binary()) : o.runc;
  const stdfs::path criu = o.criu.empty() ? stdfs::path(criu::criu_binary()) : o.criu;
  for (const auto& [what, p] : {std::pair{"runc", runc}, {"criu", criu}, {"busybox", o.busybox}})
    if (p.empty() || ::access(p.c_str(), X_OK) != 0)
      return Error(ErrorKind::kNotFound, std::string(what) + " not found at '" + p.string() +
                                             "' (scripts/setup.sh installs it)");

  const stdfs::path out_dir = stdfs::absolute(out_tar, ec).parent_path();
  if (ec) return Error::sys("resolve", ec.value(), out_tar.string());
  PW_ASSIGN(fs::StagingDir staging, fs::StagingDir::create(out_dir, ".self-image-"));
  const stdfs::path root = staging.path() / "rootfs";
  for (const char* d : {"tmp", "run", "var/lib/prewarm", "var/cache/prewarm", "etc", "proc",
                        "sys", "dev", "bin", "usr/bin", "usr/sbin", "usr/local/bin",
                        "usr/local/sbin"})
    PW_TRY(fs::make_dirs(root / d, 0755));
  if (::chmod((root / "tmp").c_str(), 01777) != 0) return Error::sys("chmod", errno, "tmp");

  // prewarm without its debug sections (a tenth of the size).
  const stdfs::path bin = root / "usr/local/bin/prewarm";
  SpawnOptions strip;
  strip.argv = {"objcopy", "--strip-debug", prewarm.string(), bin.string()};
  PW_ASSIGN(RunResult sr, run_capture(strip, std::chrono::minutes(2)));
  if (!sr.success()) PW_TRY(place(prewarm, root, "/usr/local/bin/prewarm", 0755));
  if (::chmod(bin.c_str(), 0755) != 0) return Error::sys("chmod", errno, bin.string());
  // The runtime's launcher lives beside prewarm (cmd/prewarm-runtime).
  const stdfs::path launcher = prewarm.parent_path() / "prewarm-runtime";
  if (::access(launcher.c_str(), X_OK) != 0)
    return Error(ErrorKind::kNotFound, "prewarm-runtime not found beside " + prewarm.string());
  PW_TRY(place(launcher, root, "/usr/local/bin/prewarm-runtime", 0755));
  PW_TRY(place(runc, root, "/usr/sbin/runc", 0755));
  PW_TRY(place(criu, root, "/usr/local/sbin/criu", 0755));
  PW_TRY(place(o.busybox, root, "/bin/busybox", 0755));
  for (const char* applet : {"sh", "cat", "ls", "mkdir", "rm", "cp", "mv", "ln", "sleep", "awk",
                             "sed", "grep", "cmp", "mktemp", "nsenter", "env", "hostname", "ps",
                             "kill", "test", "["}) {
    stdfs::create_symlink("busybox", root / "bin" / applet, ec);
    if (ec) return Error::sys("symlink", ec.value(), std::string("bin/") + applet);
  }
  std::set<stdfs::path> libs;
  for (const stdfs::path& b : {prewarm, launcher, runc, criu}) {
    PW_ASSIGN(auto needed, libraries_of(b));
    libs.insert(needed.begin(), needed.end());
  }
  for (const auto& lib : libs) PW_TRY(place(lib, root, lib, 0755));
  PW_TRY(fs::write_file(root / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0644));
  PW_TRY(fs::write_file(root / "etc/group", "root:x:0:\n", 0644));

  ociimage::ImageConfig config;
  config.entrypoint = {"/usr/local/bin/prewarm"};
  config.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  config.labels = {{"org.opencontainers.image.title", "prewarm"}};
  ociimage::WriteOptions wo;
  wo.name = o.name;
  return ociimage::write_archive(root, config, wo, out_tar);
}

}  // namespace prewarm::k8s
