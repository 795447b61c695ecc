// Turning a Kubernetes/CRI-O/Podman checkpoint archive into a prewarm image: an AppSpec from
// spec.dump, the caller's rootfs as its base, host facts from the CRIU images and annotations,
// deleted.files as overlay whiteouts in the rootfs diff.
//
// Sources (read, not copied): checkpointctl lib/metadata.go (ContainerConfig fields,
// deleted.files as a JSON list, pod.options/pod.dump), lib/annotations.go
// (org.criu.checkpoint.*); CRI-O server/container_restore.go (mounts it re-creates itself);
// Podman's addCheckpointImageMetadata (CRIU version as one integer); CRIU images/core.proto
// (core_entry.mtype), images/stats.proto (dump_stats_entry, microseconds) and
// images/regfile.proto (reg_file_entry), compiled from CRIU's own files.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "base/clock.h"
#include "base/fs.h"
#include "base/unique_fd.h"
#include "image/image.h"
#include "image/k8s_internal.h"
#include "base/tar.h"
#include "spec/app_spec.h"

// Generated from CRIU's images/*.proto (see this module's CMakeLists.txt).
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "core.pb.h"
#include "regfile.pb.h"
#include "stats.pb.h"

namespace prewarm::image::k8s {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr uint32_t kCriuCommonMagic = 0x54564319;   // IMG_COMMON_MAGIC
constexpr uint32_t kCriuServiceMagic = 0x55105940;  // IMG_SERVICE_MAGIC

// ---------------------------------------------------------------------------------------------
// CRIU image files, read with classes generated from CRIU's own images/*.proto. Parsed
// partially: a message missing a required field still says what it has (CRIU's files always
// have them; a sparse one from another tool should not lose the fields it does carry).

// The first protobuf entry of a CRIU image file: magic (two words, or one for inventory.img),
// a 32-bit little-endian length, the message.
std::optional<std::string> criu_first_entry(const stdfs::path& file) {
  auto text = fs::read_file(file, 1 << 20);
  if (!text.ok() || text->size() < 8) return std::nullopt;
  auto u32 = [&](size_t pos) {
    uint32_t v = 0;
    std::memcpy(&v, text->data() + pos, 4);
    return v;
  };
  uint32_t first = u32(0);
  size_t pos = (first == kCriuCommonMagic || first == kCriuServiceMagic) ? 8 : 4;
  if (text->size() < pos + 4) return std::nullopt;
  uint32_t len = u32(pos);
  if (text->size() - pos - 4 < len) return std::nullopt;
  return text->substr(pos + 4, len);
}

// uname -m of the machine the checkpoint was made on, from a core-*.img's mtype.
std::string checkpoint_arch(const stdfs::path& x, const std::set<std::string>& files) {
  for (const auto& f : files) {
    if (!starts_with(f, std::string(kCheckpointDir) + "/core-")) continue;
    auto entry = criu_first_entry(x / f);
    core_entry core;
    if (!entry || !core.ParsePartialFromString(*entry) || !core.has_mtype()) continue;
    switch (core.mtype()) {
      case core_entry::X86_64: return "x86_64";
      case core_entry::ARM: return "armv7l";
      case core_entry::AARCH64: return "aarch64";
      case core_entry::PPC64: return "ppc64le";
      case core_entry::S390: return "s390x";
      case core_entry::MIPS: return "mips64";
      case core_entry::LOONGARCH64: return "loongarch64";
      case core_entry::RISCV64: return "riscv64";
      default: break;
    }
  }
  return {};
}

// Seconds the app was frozen for the dump (stats_entry.dump.frozen_time, in microseconds).
std::optional<double> frozen_seconds(const stdfs::path& stats_dump) {
  auto entry = criu_first_entry(stats_dump);
  stats_entry stats;
  if (!entry || !stats.ParsePartialFromString(*entry) || !stats.has_dump() ||
      !stats.dump().has_frozen_time())
    return std::nullopt;
  return static_cast<double>(stats.dump().frozen_time()) / 1e6;
}

// The mode of the container's root directory as CRIU saw it: files.img's regular-file entries
// named "/" (the tasks' root, often their cwd). CRIU refuses a restore whose root has another
// mode ("File . has bad mode 040755 (expect 040555)"), and a container engine's root (Podman's
// overlay, for one) need not have the mode of the image files the user unpacked.
std::optional<unsigned> checkpoint_root_mode(const stdfs::path& files_img) {
  auto text = fs::read_file(files_img, kMaxDumpJson);
  if (!text.ok() || text->size() < 8) return std::nullopt;
  std::string_view rest(*text);
  rest.remove_prefix(8);  // IMG_COMMON_MAGIC, FILES_MAGIC
  std::optional<unsigned> mode;
  while (rest.size() >= 4) {
    uint32_t len = 0;
    std::memcpy(&len, rest.data(), 4);
    rest.remove_prefix(4);
    if (len > rest.size()) break;
    // file_entry (fdinfo.proto) is only looked into for its reg field (3, reg_file_entry):
    // generating fdinfo.proto would pull in 40 files for one field.
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(rest.data()),
                                              static_cast<int>(len));
    rest.remove_prefix(len);
    using WFL = google::protobuf::internal::WireFormatLite;
    for (uint32_t tag; (tag = in.ReadTag()) != 0;) {
      if (WFL::GetTagFieldNumber(tag) != 3 ||
          WFL::GetTagWireType(tag) != WFL::WIRETYPE_LENGTH_DELIMITED) {
        if (!WFL::SkipField(&in, tag)) break;
        continue;
      }
      std::string bytes;
      if (!WFL::ReadBytes(&in, &bytes)) break;
      reg_file_entry reg;
      if (!reg.ParsePartialFromString(bytes) || !reg.has_mode()) continue;
      if ((reg.name() == "/" || reg.name() == ".") && S_ISDIR(reg.mode()))
        mode = static_cast<unsigned>(reg.mode() & 07777);
    }
  }
  return mode;
}

// Podman records CRIU's version as one integer (40201); checkpointctl and prewarm as "4.2.1".
std::string criu_version_text(const std::string& v) {
  if (v.empty() || v.size() > 9 ||
      !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return v;
  long n = std::stol(v);
  if (n < 10000) return v;
  return std::to_string(n / 10000) + "." + std::to_string(n / 100 % 100) + "." +
         std::to_string(n % 100);
}

// ---------------------------------------------------------------------------------------------

Result<json> read_json_object(const stdfs::path& file, const std::string& name,
                              const std::string& where) {
  auto text = fs::read_file(file, kMaxDumpJson);
  if (!text.ok()) return std::move(text).error().with_context(where + ": " + name);
  json j = json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Error(where + ": " + name + " is not a JSON object");
  return j;
}

std::string string_at(const json& j, const char* key) {
  auto it = j.find(key);
  return (it != j.end() && it->is_string()) ? it->get<std::string>() : std::string();
}

// Copies `src` (the archive's rootfs-diff.tar, or none) to `out` and appends a whiteout for
// each path in deleted.files that the base has: in prewarm's rootfs diff (an overlay upper dir)
// that is how a deletion is recorded.
Status write_rootfs_diff(const stdfs::path& src, const std::vector<std::string>& deleted,
                         const stdfs::path& lower, std::optional<unsigned> root_mode,
                         const stdfs::path& out, std::vector<std::string>& warnings,
                         const std::string& where) {
  UniqueFd o(::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!o.valid()) return Error::sys("create", errno, out.string());
  std::set<std::string> dirs;  // directories the diff already carries
  if (!src.empty()) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.valid()) return Error::sys("open", errno, src.string());
    tar::Reader r(in.get(), where + ": " + kRootfsDiff);
    for (;;) {
      PW_ASSIGN(std::optional<tar::Entry> e, r.next());
      if (!e) break;
      if (e->type == '5')
        if (auto n = tar::clean_name(e->name, where); n.ok()) dirs.insert(*n);
    }
    // Its entries as they are; ours go where its end-of-archive marker was.
    if (::lseek(in.get(), 0, SEEK_SET) != 0) return Error::sys("seek", errno, src.string());
    std::vector<char> buf(1 << 20);
    for (uint64_t left = r.header_offset(); left > 0;) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      PW_ASSIGN(size_t got, tar::read_full(in.get(), buf.data(), want, src.string()));
      if (got == 0) return Error(src.string() + ": shorter than its entries");
      PW_TRY(tar::write_all(o.get(), buf.data(), got, false, out.string()));
      left -= got;
    }
  }
  tar::Writer w(o.get(), false, out.string());
  std::vector<std::string> skipped;
  for (const auto& raw : deleted) {
    std::string_view rel = raw;
    while (!rel.empty() && rel.front() == '/') rel.remove_prefix(1);
    auto name = tar::clean_name(rel, where);
    if (!name.ok() || name->empty()) {
      skipped.push_back(raw);
      continue;
    }
    // Each parent must be a real directory in the base: a whiteout under a symlinked parent
    // would turn that link into a directory in the instance.
    std::vector<std::pair<std::string, struct stat>> parents;
    bool exists = true, plain = true;
    std::string prefix;
    for (const auto& comp : stdfs::path(*name)) {
      prefix += (prefix.empty() ? "" : "/") + comp.string();
      struct stat st {};
      if (::lstat((lower / prefix).c_str(), &st) != 0) {
        exists = false;
        break;
      }
      if (prefix == *name) break;
      if (!S_ISDIR(st.st_mode)) {
        plain = false;
        break;
      }
      parents.emplace_back(prefix, st);
    }
    if (!exists) continue;  // nothing in the base to hide
    if (!plain) {
      skipped.push_back(raw);
      continue;
    }
    // A parent that tar creates would hide the base directory's mode and owner; carry them.
    for (const auto& [dir, st] : parents)
      if (dirs.insert(dir).second)
        PW_TRY(w.dir(dir, {static_cast<unsigned>(st.st_mode & 07777), st.st_uid, st.st_gid,
                           st.st_mtim.tv_sec}));
    PW_TRY(w.whiteout(*name, 0));
  }
  // The container's root had another mode than the base: the diff carries it (overlayfs shows
  // the upper dir's root).
  struct stat root {};
  if (root_mode && !dirs.count("") && ::stat(lower.c_str(), &root) == 0 &&
      (root.st_mode & 07777) != *root_mode)
    PW_TRY(w.dir(".", {*root_mode, root.st_uid, root.st_gid, root.st_mtim.tv_sec}));
  if (!skipped.empty()) {
    std::string list;
    for (const auto& s : skipped) list += (list.empty() ? "" : ", ") + s;
    warnings.push_back(std::string(kDeletedFiles) +
                       " lists paths prewarm cannot delete from the base (not plain paths, or "
                       "under a symbolic link): " + list);
  }
  PW_TRY(w.finish());
  if (::fsync(o.get()) != 0) return Error::sys("fsync", errno, out.string());
  return {};
}

// Mounts every prewarm container gets from its OCI runtime config (oci/config.cpp).
bool runtime_mount(const std::string& destination) {
  static const std::set<std::string> kMounts = {"/proc", "/dev",      "/dev/pts",
                                                "/dev/mqueue", "/sys", "/dev/shm"};
  return kMounts.count(destination) > 0;
}

// Kernel file systems whose spec.dump entry can be mounted again as it is: their sources are
// names, not host paths.
bool plain_fs(const std::string& type) {
  static const std::set<std::string> kTypes = {"cgroup", "cgroup2", "tmpfs",  "mqueue",
                                               "devpts", "proc",    "sysfs"};
  return kTypes.count(type) > 0;
}

bool clean_absolute(const std::string& path) {
  if (path.size() < 2 || path.front() != '/' || path.size() > 4096) return false;
  for (const auto& comp : stdfs::path(path).relative_path())
    if (comp == "." || comp == ".." || comp.empty()) return false;
  return path.back() != '/' && path.find("//") == std::string::npos;
}

// What the runtimes put at the bind mounts they make for every container (CRI-O
// server/container_create_linux.go and container_restore.go; Podman libpod's
// generateHosts/generateResolvConf, .containerenv; the kubelet's termination log).
ForeignMount::Content bind_content(const std::string& destination) {
  using C = ForeignMount::Content;
  if (destination == "/etc/hosts") return C::kHosts;
  if (destination == "/etc/hostname") return C::kHostname;
  if (destination == "/etc/resolv.conf") return C::kResolvConf;
  if (destination == "/run/.containerenv" || destination == "/dev/termination-log")
    return C::kEmptyFile;
  return C::kEmptyDir;  // /dev/shm, volumes, secrets, service account tokens
}

struct ParsedMounts {
  std::vector<ForeignMount> mounts;
  std::vector<std::string> empty_volumes;  // bind mounts of unknown content, made empty
  std::vector<std::string> dropped;        // mounts prewarm does not re-create
};

ParsedMounts parse_mounts(const json& runtime_spec) {
  ParsedMounts out;
  auto list = runtime_spec.find("mounts");
  if (list == runtime_spec.end() || !list->is_array()) return out;
  for (const auto& mt : *list) {
    if (!mt.is_object()) continue;
    ForeignMount m;
    m.destination = string_at(mt, "destination");
    m.type = string_at(mt, "type");
    bool bind = m.type == "bind";
    if (auto opts = mt.find("options"); opts != mt.end() && opts->is_array())
      for (const auto& o : *opts)
        if (o.is_string()) {
          m.options.push_back(o.get<std::string>());
          bind = bind || m.options.back() == "bind" || m.options.back() == "rbind";
        }
    if (!clean_absolute(m.destination)) {
      out.dropped.push_back(m.destination.empty() ? "(no destination)" : m.destination);
      continue;
    }
    if (bind) {
      m.type = "bind";
      if (std::find(m.options.begin(), m.options.end(), "bind") == m.options.end() &&
          std::find(m.options.begin(), m.options.end(), "rbind") == m.options.end())
        m.options.insert(m.options.begin(), "bind");
      m.content = bind_content(m.destination);
      if (m.content == ForeignMount::Content::kEmptyDir && m.destination != "/dev/shm")
        out.empty_volumes.push_back(m.destination);
    } else if (runtime_mount(m.destination)) {
      continue;  // prewarm's own config mounts it
    } else if (plain_fs(m.type)) {
      m.source = string_at(mt, "source");
      if (m.source.empty()) m.source = m.type;
    } else {
      out.dropped.push_back(m.destination + " (" + (m.type.empty() ? "no type" : m.type) + ")");
      continue;
    }
    out.mounts.push_back(std::move(m));
  }
  return out;
}

std::string joined(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

// The AppSpec of a foreign container: what it ran (process.args/env/cwd) on the given rootfs,
// with no readiness probe or warm-up (it is already warm).
Result<spec::AppSpec> app_from_spec_dump(const json& runtime_spec, const std::string& name,
                                         const stdfs::path& rootfs, const std::string& where,
                                         std::vector<std::string>& warnings) {
  spec::AppSpec app;
  app.name = name;
  app.rootfs.kind = spec::RootfsKind::kDirectory;
  app.rootfs.path = rootfs;
  auto process = runtime_spec.find("process");
  if (process == runtime_spec.end() || !process->is_object())
    return Error(where + ": spec.dump has no process object");
  if (auto args = process->find("args"); args != process->end() && args->is_array())
    for (const auto& a : *args)
      if (a.is_string()) app.command.push_back(a.get<std::string>());
  if (app.command.empty()) return Error(where + ": spec.dump process.args is empty or missing");
  if (auto env = process->find("env"); env != process->end() && env->is_array())
    for (const auto& e : *env) {
      std::string kv = e.is_string() ? e.get<std::string>() : "";
      size_t eq = kv.find('=');
      if (eq != std::string::npos && eq > 0) app.env.emplace_back(kv.substr(0, eq), kv.substr(eq + 1));
    }
  if (std::string cwd = string_at(*process, "cwd"); !cwd.empty()) app.working_dir = cwd;
  if (process->value("terminal", json()) == true)
    warnings.push_back("the container ran with a terminal; prewarm restores without one, so "
                       "CRIU may refuse to restore it");
  ParsedMounts mounts = parse_mounts(runtime_spec);
  if (!mounts.empty_volumes.empty())
    warnings.push_back("the container's bind mounts " + joined(mounts.empty_volumes) +
                       " are not in the archive; each instance gets an empty directory there");
  if (!mounts.dropped.empty())
    warnings.push_back("the container had mounts prewarm does not re-create (" +
                       joined(mounts.dropped) + "); restoring the checkpoint fails without "
                       "them, a cold start works");
  return app;
}

}  // namespace

Result<ImportedImage> assemble_foreign(const stdfs::path& x, const Extracted& ex,
                                       const stdfs::path& img, const stdfs::path& dest,
                                       const ImportOptions& opts, const std::string& where) {
  if (ex.files.count(kPodOptions) || ex.files.count(kPodDump))
    return Error(where + ": a pod checkpoint archive; prewarm imports container checkpoints "
                 "(one container each)");
  for (const char* need : {kConfigDump, kSpecDump})
    if (!ex.files.count(need))
      return Error(where + ": has no " + need +
                   "; not a Kubernetes/CRI-O/Podman container checkpoint archive");
  const std::string inventory = std::string(kCheckpointDir) + "/inventory.img";
  if (!ex.files.count(inventory))
    return Error(where + ": " + inventory + " is missing: the archive holds no CRIU checkpoint");
  PW_ASSIGN(json config, read_json_object(x / kConfigDump, kConfigDump, where));
  PW_ASSIGN(json runtime_spec, read_json_object(x / kSpecDump, kSpecDump, where));

  ImportedImage out;
  out.foreign = true;
  std::string image_ref = string_at(config, "rootfsImageName");
  if (image_ref.empty()) image_ref = string_at(config, "rootfsImage");
  if (image_ref.empty()) image_ref = string_at(config, "rootfsImageRef");
  if (image_ref.empty()) image_ref = "(config.dump does not name it)";
  if (opts.rootfs_dir.empty())
    return Error(where + ": this archive was made from container image " + image_ref +
                 "; pass --rootfs DIR with that image's root filesystem");
  std::error_code ec;
  stdfs::path rootfs = stdfs::canonical(opts.rootfs_dir, ec);
  if (ec || !stdfs::is_directory(rootfs, ec))
    return Error("--rootfs " + opts.rootfs_dir.string() +
                 ": not a directory (it should hold the root filesystem of " + image_ref + ")");

  const std::string name = opts.name.empty() ? dest.filename().string() : opts.name;
  PW_ASSIGN(spec::AppSpec app, app_from_spec_dump(runtime_spec, name, rootfs, where, out.warnings));
  std::string yaml = spec::to_yaml(app);
  if (auto check = spec::parse_spec(yaml, "/"); !check.ok())
    return std::move(check).error().with_context(
        where + ": the app spec made from spec.dump is invalid (pass --name to choose a name "
                "of lowercase letters, digits and '-')");
  for (const char* dropped : {kVolumesDir, kDevShmTar})
    if (std::any_of(ex.files.begin(), ex.files.end(), [&](const std::string& f) {
          return f == dropped || starts_with(f, std::string(dropped) + "/");
        }))
      out.warnings.push_back(std::string("the archive's ") + dropped +
                             " (volume or /dev/shm contents) is not imported");

  Manifest m;
  m.name = name;
  for (const char* key : {"checkpointedTime", "createdTime"}) {
    std::string t = string_at(config, key);
    if (is_rfc3339(t) && !starts_with(t, "0001-")) {
      m.created = t;
      break;
    }
  }
  if (m.created.empty()) m.created = now_rfc3339();
  m.spec_yaml = yaml;
  m.rootfs_id = "dir:" + rootfs.string();
  m.rootfs_dir = rootfs.string();
  // Host facts: the architecture is in the CRIU images; the rest only if the archive says.
  json annotations = runtime_spec.value("annotations", json::object());
  auto annotation = [&](const char* key) {
    return annotations.is_object() ? string_at(annotations, key) : std::string();
  };
  auto or_unknown = [](std::string v) { return v.empty() ? std::string("unknown") : v; };
  m.host.arch = or_unknown(checkpoint_arch(x, ex.files));
  m.host.kernel = or_unknown(annotation("org.criu.checkpoint.host.kernel"));
  m.host.cpu_model = "unknown";
  std::string criu = annotation("org.criu.checkpoint.criu.version");
  if (criu.empty()) criu = annotation("io.kubernetes.cri-o.annotations.checkpoint.criu.version");
  m.host.criu_version = or_unknown(criu_version_text(criu));
  m.host.runc_version = or_unknown(annotation("org.criu.checkpoint.runtime.version"));
  if (m.host.criu_version == "unknown")
    out.warnings.push_back("the archive does not say which CRIU version made it, and it has no "
                           "CPU record (host/cpuinfo.img): prewarm cannot check this host "
                           "against it, so it attempts each restore and leaves the check to "
                           "CRIU (a failed restore falls back to a cold start)");

  // checkpoint/ as is; stats-dump back where CRIU writes it; the metadata kept under k8s/.
  PW_TRY(move(x / kCheckpointDir, img, kCheckpointDir));
  const std::string stats = std::string(kCheckpointDir) + "/" + kStatsDump;
  if (ex.files.count(kStatsDump) && !ex.files.count(stats))
    PW_TRY(move(x / kStatsDump, img, stats));
  if (auto frozen = frozen_seconds(img / stats)) m.timings_s["checkpoint"] = *frozen;

  std::vector<std::string> deleted;
  if (ex.files.count(kDeletedFiles)) {
    PW_ASSIGN(std::string text, fs::read_file(x / kDeletedFiles, kMaxDumpJson));
    json d = json::parse(text, nullptr, false);
    if (d.is_discarded() || !d.is_array())
      return Error(where + ": " + kDeletedFiles + " is not a JSON list of paths");
    for (const auto& p : d)
      if (p.is_string()) deleted.push_back(p.get<std::string>());
  }
  stdfs::path diff = ex.files.count(kRootfsDiff) ? x / kRootfsDiff : stdfs::path();
  auto root_mode = checkpoint_root_mode(img / kCheckpointDir / "files.img");
  PW_TRY(write_rootfs_diff(diff, deleted, rootfs, root_mode, img / kRootfsDiff, out.warnings,
                           where));
  for (const char* meta :
       {kConfigDump, kSpecDump, kNetworkStatus, kDeletedFiles, kBindMounts, kDumpLog})
    if (ex.files.count(meta))
      PW_TRY(move(x / meta, img, std::string(kForeignMetaDir) + "/" + meta));

  PW_TRY(seal(img, m));
  PW_ASSIGN(std::string text, fs::read_file(img / kManifestFile, kMaxManifestBytes));
  PW_ASSIGN(out.manifest, parse_manifest(text));
  return out;
}

}  // namespace prewarm::image::k8s

namespace prewarm::image {

Result<std::vector<ForeignMount>> foreign_mounts(const std::filesystem::path& image_dir) {
  auto spec_dump = image_dir / k8s::kForeignMetaDir / k8s::kSpecDump;
  std::error_code ec;
  if (!std::filesystem::exists(spec_dump, ec)) return std::vector<ForeignMount>{};
  PW_ASSIGN(nlohmann::json spec,
            k8s::read_json_object(spec_dump, k8s::kSpecDump, "image " + image_dir.string()));
  return k8s::parse_mounts(spec).mounts;
}

}  // namespace prewarm::image
