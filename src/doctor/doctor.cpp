// Host checks for CRIU, runc, iptables and the kernel features prewarm relies on.
#include "doctor/doctor.h"

#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <linux/magic.h>

#include "base/fs.h"
#include "base/subprocess.h"
#include "base/thp.h"
#include "criu/criu.h"
#include "oci/runtime.h"

namespace prewarm::doctor {
namespace {

constexpr const char* kSetupHint = "run `scripts/setup.sh` as root";

Check check_root() {
  bool root = ::geteuid() == 0;
  return {"root", root, root ? "running as root" : "prewarm needs root (CRIU, namespaces, mounts)"};
}

Check check_criu_version() {
  std::string bin = criu::criu_binary();
  if (bin.empty()) return {"criu", false, "criu not found; " + std::string(kSetupHint) +
                                              " (builds CRIU 4.2.1 into /usr/local/sbin)"};
  auto v = criu::version();
  if (!v.ok()) return {"criu", false, bin + ": " + v.error().message() + "; " + kSetupHint};
  bool ok = v->major > 4 || (v->major == 4 && v->minor >= 2);
  return {"criu", ok,
          ok ? bin + " " + v->text
             : bin + " is " + v->text + "; CRIU >= 4.2 is needed on kernel >= 6.16 (older "
                                        "versions can't dump TCP sockets); " + kSetupHint};
}

Check check_criu_check() {
  Status st = criu::check();
  return {"criu check", st.ok(), st.ok() ? "looks good" : st.error().to_string()};
}

Check check_runc() {
  auto rt = oci::make_runc();
  auto v = rt->version();
  if (!v.ok()) return {"runc", false, "runc not usable: " + v.error().message() +
                                          "; install it with `apt-get install runc`"};
  return {"runc", true, "runc " + *v};
}

Check check_binary(const std::string& name, const std::string& why, const std::string& pkg) {
  std::string path = find_executable(name);
  if (path.empty())
    return {name, false, name + " not found (" + why + "); install with `apt-get install " + pkg + "`"};
  return {name, true, path};
}

Check check_kernel_features() {
  std::string missing;
  auto fsys = fs::read_file("/proc/filesystems");
  if (!fsys.ok() || fsys->find("overlay") == std::string::npos) missing += " overlayfs";
  if (!std::filesystem::exists("/proc/sys/kernel/ns_last_pid")) missing += " CHECKPOINT_RESTORE";
  for (const char* ns : {"net", "pid", "uts", "ipc", "mnt", "cgroup"})
    if (!std::filesystem::exists(std::string("/proc/self/ns/") + ns))
      missing += std::string(" ") + ns + "-namespace";
  if (missing.empty()) return {"kernel", true, "overlayfs, CHECKPOINT_RESTORE, namespaces"};
  return {"kernel", false, "missing:" + missing + " (a kernel with these options is needed)"};
}

Check check_rundir() {
  struct statfs s {};
  bool tmpfs = ::statfs("/dev/shm", &s) == 0 && s.f_type == TMPFS_MAGIC;
  return {"/dev/shm", tmpfs,
          tmpfs ? "tmpfs (CRIU caches kernel facts there)"
                : "/dev/shm is not tmpfs: CRIU re-probes the kernel on every call (~50 ms)"};
}

// Restores can fill memory with huge pages only with prewarm's CRIU patch and THP not "never".
Check check_huge_pages() {
  std::string bin = criu::criu_binary();
  Check c{"huge pages", false, "", /*advisory=*/true};
  if (!criu::criu_fills_huge_pages(bin)) {
    c.detail = bin + " lacks prewarm's huge-page fill patch: restores fill memory with 4 KiB "
               "pages (slower); " + kSetupHint;
    return c;
  }
  const thp::AdvisedSizes sizes = thp::advised_sizes();
  if (!sizes.pmd && sizes.smaller.empty()) {
    c.detail = "transparent huge pages are off for advised memory on this host "
               "(/sys/kernel/mm/transparent_hugepage): restores fill memory with 4 KiB pages "
               "(slower)";
    return c;
  }
  c.ok = true;
  if (thp::small_folios_only(sizes)) {
    std::string list;
    for (uint64_t b : sizes.smaller) list += (list.empty() ? "" : ", ") + std::to_string(b >> 10) + " KiB";
    c.detail = "on by default: advised memory gets folios of " + list +
               " and no 2 MiB ones, so restores fill memory in large folios (PREWARM_HUGE_PAGES=0 "
               "turns it off)";
    return c;
  }
  c.detail = "off by default: advised memory may get 2 MiB folios, which fill slowly on VMs that "
             "return free memory to the host; hugepages-64kB/enabled=madvise with "
             "hugepages-2048kB/enabled=never turns it on by default (see README), "
             "PREWARM_HUGE_PAGES=1 forces it";
  return c;
}

// Restores fault in the pages they fill in one call per range: prewarm's CRIU patch and a
// kernel with MADV_POPULATE_WRITE (5.14+), tried here on a page of this process.
Check check_fill_populate() {
  Check c{"populate fill", false, "", /*advisory=*/true};
  std::string bin = criu::criu_binary();
  if (!criu::criu_fills_populate(bin)) {
    c.detail = bin + " lacks prewarm's populate patch: restores fault in memory one page at a "
               "time (slower); " + kSetupHint;
    return c;
  }
  const long page = ::sysconf(_SC_PAGESIZE);
  void* p = ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    c.detail = std::string("mmap of one page failed: ") + std::strerror(errno);
    return c;
  }
  constexpr int kMadvPopulateWrite = 23;  // <linux/mman.h>, Linux 5.14
  const bool supported = ::madvise(p, page, kMadvPopulateWrite) == 0;
  const int err = errno;
  ::munmap(p, page);
  if (!supported) {
    c.detail = std::string("this kernel refuses MADV_POPULATE_WRITE (") + std::strerror(err) +
               "; Linux 5.14+): restores fault in memory one page at a time (slower)";
    return c;
  }
  c.ok = true;
  c.detail = "restores fault in the pages they fill with MADV_POPULATE_WRITE "
             "(PREWARM_FILL_POPULATE=0 turns it off)";
  return c;
}

}  // namespace

std::vector<Check> run_doctor() {
  std::vector<Check> checks;
  checks.push_back(check_root());
  checks.push_back(check_criu_version());
  if (checks.back().ok) checks.push_back(check_criu_check());
  checks.push_back(check_runc());
  checks.push_back(check_binary("iptables-restore",
                                "CRIU locks the instance's network with it during checkpoint",
                                "iptables"));
  checks.push_back(check_binary("tar", "rootfs diffs are tar archives", "tar"));
  checks.push_back(check_binary("debootstrap", "needed for debootstrap rootfs recipes",
                                "debootstrap"));
  checks.push_back(check_binary("setsid", "starts the instances' log drainers", "util-linux"));
  checks.push_back(check_kernel_features());
  checks.push_back(check_rundir());
  checks.push_back(check_huge_pages());
  checks.push_back(check_fill_populate());
  return checks;
}

}  // namespace prewarm::doctor
