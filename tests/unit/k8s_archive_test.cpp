// Export/import of Kubernetes/CRI-O/Podman checkpoint archives. GNU tar stands in for the other
// side: it lists and unpacks what prewarm writes, and builds the foreign archives it reads.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <csignal>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "base/sha256.h"
#include "base/subprocess.h"
#include "image/image.h"
#include "image/k8s_archive.h"
#include "spec/app_spec.h"
#include "support/files.h"

namespace prewarm::image {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using testing::slurp;
using testing::spit;
using testing::TempDir;

std::string le32(uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}

// A CRIU image: magic(s), entry size, protobuf entry.
std::string criu_image(uint32_t magic1, uint32_t magic2, const std::string& pb) {
  return le32(magic1) + le32(magic2) + le32(static_cast<uint32_t>(pb.size())) + pb;
}

// core_entry { mtype: X86_64 }
std::string core_img() { return criu_image(0x54564319, 0x55053847, std::string("\x08\x01", 2)); }

// stats_entry { dump { freezing_time: 1000, frozen_time: 150000 (us) } }
std::string stats_img() {
  std::string dump = std::string("\x08\xe8\x07", 3) + std::string("\x10\xf0\x93\x09", 4);
  std::string entry = std::string("\x0a", 1) + static_cast<char>(dump.size()) + dump;
  return criu_image(0x55105940, 0x57093306, entry);
}

std::string varint(uint64_t v) {
  std::string s;
  for (; v >= 0x80; v >>= 7) s += static_cast<char>((v & 0x7f) | 0x80);
  return s + static_cast<char>(v);
}
std::string pb_varint(int field, uint64_t v) { return varint(uint64_t(field) << 3) + varint(v); }
std::string pb_bytes(int field, const std::string& b) {
  return varint((uint64_t(field) << 3) | 2) + varint(b.size()) + b;
}

// files.img with regular-file entries (file_entry { type: REG, id, reg { id, flags, pos, fown,
// name, mode } }), each preceded by its size.
std::string files_img(const std::vector<std::pair<std::string, uint32_t>>& files) {
  std::string out = le32(0x54564319) + le32(0x56303138);
  uint32_t id = 1;
  for (const auto& [name, mode] : files) {
    std::string reg = pb_varint(1, id) + pb_varint(2, 0) + pb_varint(3, 0) + pb_bytes(5, "") +
                      pb_bytes(6, name) + pb_varint(10, mode);
    std::string entry = pb_varint(1, 1) + pb_varint(2, id++) + pb_bytes(3, reg);
    out += le32(static_cast<uint32_t>(entry.size())) + entry;
  }
  return out;
}

std::string pages(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

RunResult sh(const std::string& cmd) {
  SpawnOptions o;
  o.argv = {"sh", "-c", cmd};
  auto r = run_capture(o);
  EXPECT_TRUE(r.ok()) << cmd;
  EXPECT_TRUE(r->success()) << cmd << "\n" << r->err;
  return *r;
}

std::set<std::string> lines(const std::string& text) {
  std::set<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    if (nl > pos) out.insert(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

spec::AppSpec app_spec(const std::string& name) {
  spec::AppSpec s;
  s.name = name;
  s.rootfs.kind = spec::RootfsKind::kDirectory;
  s.rootfs.path = "/srv/rootfs";
  s.command = {"/usr/bin/python3", "/app/app.py"};
  s.args = {"--port", "8080"};
  s.env = {{"PYTHONUNBUFFERED", "1"}, {"MODE", "a=b"}};
  s.working_dir = "/app";
  return s;
}

// A sealed image as bake leaves it (without stats-dump unless asked).
stdfs::path make_image(const stdfs::path& dir, const std::string& name, bool with_stats = true) {
  spit(dir / "checkpoint/inventory.img", criu_image(0x58313116, 0, "\x08\x02"));
  spit(dir / "checkpoint/core-1.img", core_img());
  spit(dir / "checkpoint/pages-1.img", "PAGES-MARKER" + pages(300000));
  spit(dir / "checkpoint/descriptors.json", R"(["/dev/null","pipe:[1]","pipe:[1]"])");
  if (with_stats) spit(dir / "checkpoint/stats-dump", stats_img());
  spit(dir / "host/cpuinfo.img", "cpuinfo");
  spit(dir / "diff/app/app.py", "print('hi')\n");
  sh("tar -cf '" + (dir / "rootfs-diff.tar").string() + "' -C '" + (dir / "diff").string() + "' .");
  stdfs::remove_all(dir / "diff");
  Manifest m;
  m.name = name;
  m.created = "2026-11-26T09:19:50Z";
  m.spec_yaml = spec::to_yaml(app_spec(name));
  m.rootfs_id = "debootstrap:5592";
  m.rootfs_dir = "/var/cache/prewarm/rootfs/debootstrap/5592";
  m.host = {"6.18.0", "x86_64", "AMD EPYC", "4.2.1", "1.1.5"};
  m.timings_s = {{"checkpoint", 0.3}};
  EXPECT_TRUE(seal(dir, m).ok());
  return dir;
}

// Every directory of an image is 0700: checkpoints hold the app's memory.
void expect_private_dirs(const stdfs::path& dir) {
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u) << dir;
  for (const auto& e : stdfs::recursive_directory_iterator(dir))
    if (e.is_directory()) {
      ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
      EXPECT_EQ(st.st_mode & 0777, 0700u) << e.path();
    }
}

std::map<std::string, std::string> digests(const Manifest& m) {
  std::map<std::string, std::string> out;
  for (const auto& f : m.files) out[f.path] = f.sha256 + ":" + std::to_string(f.size);
  return out;
}

// ------------------------------------------------------------------------------------------
// Raw tar entries for archives GNU tar will not make (or that must be malformed).

std::string raw_entry(const std::string& name, char type, const std::string& data,
                      const std::string& link = "", uint64_t declared_size = UINT64_MAX) {
  char h[512] = {};
  std::memcpy(h, name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(h + 100, 8, "%07o", 0644);
  std::snprintf(h + 108, 8, "%07o", 0);
  std::snprintf(h + 116, 8, "%07o", 0);
  uint64_t size = declared_size == UINT64_MAX ? data.size() : declared_size;
  if (size <= 077777777777ULL) {
    std::snprintf(h + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  } else {  // GNU base-256
    h[124] = static_cast<char>(0x80);
    for (int i = 11; i > 0; --i, size >>= 8) h[124 + i] = static_cast<char>(size & 0xff);
  }
  std::snprintf(h + 136, 12, "%011o", 0);
  std::memset(h + 148, ' ', 8);
  h[156] = type;
  std::memcpy(h + 157, link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(h + 257, "ustar", 6);
  std::memcpy(h + 263, "00", 2);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(h + 148, 8, "%06o", sum);
  std::string out(h, 512);
  out += data;
  out.append((512 - data.size() % 512) % 512, '\0');
  return out;
}

std::string raw_end() { return std::string(1024, '\0'); }

// A minimal valid foreign archive's entries, for the malicious variants to add to.
std::string raw_foreign_base() {
  return raw_entry("checkpoint/", '5', "") + raw_entry("checkpoint/inventory.img", '0', "inv") +
         raw_entry("config.dump", '0', "{}") + raw_entry("spec.dump", '0', "{}");
}

class K8sArchive : public ::testing::Test {
 protected:
  TempDir tmp_{"prewarm-k8s"};
  stdfs::path store() const { return tmp_.path() / "images"; }

  // Expects the import to fail mentioning `needle`, leaving neither the image nor scratch.
  void expect_refused(const stdfs::path& tar, const std::string& needle,
                      ImportOptions opts = {}) {
    auto r = import_archive(tar, store() / "evil", opts);
    ASSERT_FALSE(r.ok()) << tar;
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().to_string();
    EXPECT_FALSE(stdfs::exists(store() / "evil"));
    if (stdfs::exists(store()))
      for (const auto& e : stdfs::directory_iterator(store()))
        ADD_FAILURE() << "left behind: " << e.path();
  }

  stdfs::path write_raw(const std::string& name, const std::string& bytes) {
    stdfs::path p = tmp_.path() / name;
    spit(p, bytes);
    return p;
  }
};

// ------------------------------------------------------------------------------------------

TEST_F(K8sArchive, ExportHasTheLayoutCheckpointctlAndCrioRead) {
  auto img = make_image(tmp_.path() / "img", "pyservice");
  auto out = tmp_.path() / "out/pyservice.tar";
  stdfs::create_directories(out.parent_path());
  ASSERT_TRUE(export_archive(img, out, {}).ok());

  struct stat st {};
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(std::distance(stdfs::directory_iterator(out.parent_path()), {}), 1)
      << "no temporary file left next to the archive";

  // GNU tar reads it; the members are where CRI-O puts them, prewarm's own under prewarm/.
  auto listing = lines(sh("tar -tf '" + out.string() + "'").out);
  std::set<std::string> expected = {
      "checkpoint/",           "checkpoint/core-1.img",      "checkpoint/descriptors.json",
      "checkpoint/inventory.img", "checkpoint/pages-1.img",  "checkpoint/stats-dump",
      "config.dump",           "spec.dump",                  "stats-dump",
      "rootfs-diff.tar",       "prewarm/",                   "prewarm/manifest.json",
      "prewarm/host/",         "prewarm/host/cpuinfo.img"};
  EXPECT_EQ(listing, expected);

  auto x = tmp_.path() / "x";
  stdfs::create_directories(x);
  sh("tar -xf '" + out.string() + "' -C '" + x.string() + "'");
  for (const char* f : {"checkpoint/pages-1.img", "checkpoint/core-1.img", "rootfs-diff.tar"})
    EXPECT_EQ(slurp(x / f), slurp(img / f)) << f;
  EXPECT_EQ(slurp(x / "stats-dump"), slurp(img / "checkpoint/stats-dump"));
  EXPECT_EQ(slurp(x / "prewarm/manifest.json"), slurp(img / "manifest.json"));
  EXPECT_EQ(slurp(x / "prewarm/host/cpuinfo.img"), "cpuinfo");

  // config.dump: checkpointctl's ContainerConfig; Go's time.Time wants RFC 3339.
  json config = json::parse(slurp(x / "config.dump"));
  EXPECT_EQ(config["id"].get<std::string>().size(), 64u);
  EXPECT_EQ(config["id"], sha256_hex(slurp(img / "manifest.json")));
  EXPECT_EQ(config["name"], "pyservice");
  EXPECT_EQ(config["rootfsImageName"], "debootstrap:5592");
  EXPECT_EQ(config["runtime"], "runc");
  EXPECT_EQ(config["createdTime"], "2026-11-26T09:19:50Z");
  EXPECT_EQ(config["checkpointedTime"], "2026-11-26T09:19:50Z");
  EXPECT_EQ(config["restored"], false);

  // spec.dump: an OCI runtime spec of the app, annotated as CRI-O does.
  json spec = json::parse(slurp(x / "spec.dump"));
  EXPECT_EQ(spec["process"]["args"],
            json({"/usr/bin/python3", "/app/app.py", "--port", "8080"}));
  EXPECT_EQ(spec["process"]["cwd"], "/app");
  auto env = spec["process"]["env"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(env.begin(), env.end(), "PYTHONUNBUFFERED=1"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "MODE=a=b"), env.end());
  EXPECT_EQ(spec["hostname"], "pyservice");
  EXPECT_EQ(spec["root"]["path"], "rootfs");
  for (const auto& ns : spec["linux"]["namespaces"]) EXPECT_NE(ns.value("path", "x"), "");
  const json& a = spec["annotations"];
  EXPECT_EQ(a["io.container.manager"], "cri-o");
  EXPECT_EQ(json::parse(a["io.kubernetes.cri-o.Metadata"].get<std::string>())["name"], "pyservice");
  EXPECT_TRUE(json::parse(a["io.kubernetes.cri-o.Annotations"].get<std::string>()).is_object());
  EXPECT_EQ(a["io.kubernetes.cri-o.Created"], "2026-11-26T09:19:50Z");
  EXPECT_EQ(a["io.kubernetes.cri-o.annotations.checkpoint.name"], "pyservice");
  EXPECT_EQ(a["org.criu.checkpoint.criu.version"], "4.2.1");
  EXPECT_EQ(a["org.criu.checkpoint.host.arch"], "x86_64");
}

TEST_F(K8sArchive, ExportWithoutStatsDumpHasNoTopLevelStats) {
  auto img = make_image(tmp_.path() / "img", "app", /*with_stats=*/false);
  auto out = tmp_.path() / "app.tar";
  ASSERT_TRUE(export_archive(img, out, {}).ok());
  auto listing = lines(sh("tar -tf '" + out.string() + "'").out);
  EXPECT_FALSE(listing.count("stats-dump"));
  EXPECT_TRUE(listing.count("config.dump"));
}

// The uncompressed tar's digest (an OCI layer's diff_id), whatever compression is written.
TEST_F(K8sArchive, ReportsTheDigestOfTheUncompressedTar) {
  auto img = make_image(tmp_.path() / "img", "pyservice");
  std::string plain_digest, zstd_digest;
  ExportOptions plain;
  plain.tar_sha256 = &plain_digest;
  ASSERT_TRUE(export_archive(img, tmp_.path() / "plain.tar", plain).ok());
  auto want = sha256_file(tmp_.path() / "plain.tar");
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(plain_digest, *want);
  ExportOptions zstd;
  zstd.compression = Compression::kZstd;
  zstd.tar_sha256 = &zstd_digest;
  ASSERT_TRUE(export_archive(img, tmp_.path() / "z.tar.zst", zstd).ok());
  EXPECT_EQ(zstd_digest, *want);
  EXPECT_NE(*sha256_file(tmp_.path() / "z.tar.zst"), *want);
}

TEST_F(K8sArchive, RoundTripIsLossless) {
  auto img = make_image(tmp_.path() / "img", "pyservice");
  auto original = open_verified(img, {});
  ASSERT_TRUE(original.ok());
  for (auto c : {Compression::kNone, Compression::kGzip, Compression::kZstd}) {
    auto out = tmp_.path() / ("rt-" + std::to_string(static_cast<int>(c)) + ".tar");
    ExportOptions eo;
    eo.compression = c;
    ASSERT_TRUE(export_archive(img, out, eo).ok());
    auto dest = store() / ("copy-" + std::to_string(static_cast<int>(c)));
    auto r = import_archive(out, dest, {});
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_FALSE(r->foreign);
    EXPECT_TRUE(r->warnings.empty());
    auto mounts = foreign_mounts(dest);
    EXPECT_TRUE(mounts.ok() && mounts->empty());
    EXPECT_EQ(r->dir, dest);
    EXPECT_EQ(slurp(dest / "manifest.json"), slurp(img / "manifest.json"));
    auto reopened = open_verified(dest, {});
    ASSERT_TRUE(reopened.ok()) << reopened.error().to_string();
    EXPECT_EQ(digests(*reopened), digests(*original));
    EXPECT_EQ(r->manifest.spec_yaml, original->spec_yaml);
    expect_private_dirs(dest);
  }
  // The gzip and zstd archives are what the standard tools expect.
  sh("tar -tzf '" + (tmp_.path() / "rt-1.tar").string() + "' >/dev/null");
  sh("tar --zstd -tf '" + (tmp_.path() / "rt-2.tar").string() + "' >/dev/null");
}

TEST_F(K8sArchive, ExportRefusesAModifiedImageAndLeavesNothing) {
  auto img = make_image(tmp_.path() / "img", "app");
  spit(img / "checkpoint/core-1.img", "tampered!!!!!!!!!!!!!!");  // same size is not needed
  auto out = tmp_.path() / "out/app.tar";
  stdfs::create_directories(out.parent_path());
  auto st = export_archive(img, out, {});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("core-1.img"), std::string::npos) << st.error().to_string();
  EXPECT_TRUE(stdfs::is_empty(out.parent_path()));
}

// A symbolic link in an image (a file, the checkpoint dir, or the image dir itself) would make
// a restore read whatever it points to: refused, and named by its path inside the image.
TEST_F(K8sArchive, SymlinksInAnImageAreRefusedByTheirPathInTheImage) {
  auto img = make_image(tmp_.path() / "img", "app");
  auto outside = tmp_.path() / "outside-target.img";
  stdfs::rename(img / "checkpoint/pages-1.img", outside);
  stdfs::create_symlink(outside, img / "checkpoint/pages-1.img");
  auto file = open_verified(img, {});
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(file.error().message().find("checkpoint/pages-1.img is a symbolic link"),
            std::string::npos) << file.error().message();
  EXPECT_EQ(file.error().message().find("outside-target"), std::string::npos)
      << file.error().message();
  stdfs::remove(img / "checkpoint/pages-1.img");
  stdfs::rename(outside, img / "checkpoint/pages-1.img");
  ASSERT_TRUE(open_verified(img, {}).ok());

  auto moved = tmp_.path() / "elsewhere";
  stdfs::rename(img / "checkpoint", moved);
  stdfs::create_symlink(moved, img / "checkpoint");
  auto dir = open_verified(img, {});
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(dir.error().message().find(": checkpoint is a symbolic link"), std::string::npos)
      << dir.error().message();
  stdfs::remove(img / "checkpoint");
  stdfs::rename(moved, img / "checkpoint");

  stdfs::create_symlink(img, tmp_.path() / "img-link");
  auto whole = open_verified(tmp_.path() / "img-link", {});
  ASSERT_FALSE(whole.ok());
  EXPECT_EQ(whole.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(whole.error().message().find("img-link is a symbolic link"), std::string::npos)
      << whole.error().message();
}

TEST_F(K8sArchive, ExportRefusesToWriteIntoTheImage) {
  auto img = make_image(tmp_.path() / "img", "app");
  auto st = export_archive(img, img / "checkpoint/x.tar", {});
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(open_verified(img, {}).ok());
}

TEST_F(K8sArchive, TamperedPrewarmExportIsRefused) {
  auto img = make_image(tmp_.path() / "img", "app");
  auto out = tmp_.path() / "app.tar";
  ASSERT_TRUE(export_archive(img, out, {}).ok());
  std::string bytes = slurp(out);
  size_t at = bytes.find("PAGES-MARKER");
  ASSERT_NE(at, std::string::npos);
  bytes[at] = 'X';  // same size, different content
  expect_refused(write_raw("tampered.tar", bytes), "pages-1.img does not match its SHA-256");
}

TEST_F(K8sArchive, PrewarmExportWithAnExtraCheckpointFileIsRefused) {
  auto img = make_image(tmp_.path() / "img", "app");
  auto out = tmp_.path() / "app.tar";
  ASSERT_TRUE(export_archive(img, out, {}).ok());
  spit(tmp_.path() / "extra/checkpoint/evil.img", "x");
  sh("tar -rf '" + out.string() + "' -C '" + (tmp_.path() / "extra").string() +
     "' checkpoint/evil.img");
  expect_refused(out, "checkpoint/evil.img is not listed");
}

// ------------------------------------------------------------------------------------------
// Foreign archives, laid out as CRI-O's export writes them.

struct Foreign {
  stdfs::path dir;
  stdfs::path rootfs;
};

Foreign make_foreign(const stdfs::path& base, const std::string& long_name = "") {
  Foreign f{base / "ctr", base / "rootfs"};
  auto& d = f.dir;
  spit(d / "checkpoint/inventory.img", criu_image(0x58313116, 0, "\x08\x02"));
  spit(d / "checkpoint/core-1.img", core_img());
  spit(d / "checkpoint/pages-1.img", pages(100000));
  spit(d / "checkpoint/descriptors.json", R"(["/dev/null","pipe:[7]","pipe:[7]"])");
  // The container's root was 0555 (as Podman's overlay root is), the base's is 0755.
  spit(d / "checkpoint/files.img", files_img({{"/bin/sh", 0100755}, {"/", 040555}}));
  if (!long_name.empty()) spit(d / "checkpoint" / long_name, "long");
  spit(d / "stats-dump", stats_img());
  spit(d / "dump.log", "(00.000000) Dumping finished successfully\n");
  spit(d / "config.dump", json{{"id", std::string(64, 'c')},
                               {"name", "k8s_counter_counters_default_0_0"},
                               {"rootfsImage", "docker.io/library/nginx:latest"},
                               {"rootfsImageRef", std::string(64, 'a')},
                               {"rootfsImageName", "docker.io/library/nginx:latest"},
                               {"runtime", "runc"},
                               {"createdTime", "2024-01-27T14:45:26.083444055Z"},
                               {"checkpointedTime", "2024-01-28T00:10:45.673538606+05:30"},
                               {"restoredTime", "0001-01-01T00:00:00Z"},
                               {"restored", false}}
                              .dump());
  json spec = {
      {"ociVersion", "1.0.2-dev"},
      {"process",
       {{"terminal", false},
        {"args", {"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}},
        {"env", {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "NGINX_VERSION=1.25.3",
                 "HOSTNAME=counters"}},
        {"cwd", "/"}}},
      {"root", {{"path", "/var/lib/containers/storage/overlay/abc/merged"}}},
      {"hostname", "counters"},
      {"mounts",
       {{{"destination", "/proc"}, {"type", "proc"}, {"source", "proc"}},
        {{"destination", "/etc/hosts"}, {"type", "bind"}, {"source", "/var/run/x/etc-hosts"}},
        {{"destination", "/dev/shm"},
         {"type", "bind"},
         {"source", "/var/run/x/shm"},
         {"options", {"bind", "rprivate", "nosuid"}}},
        {{"destination", "/data"}, {"type", "none"}, {"source", "/srv/data"}, {"options", {"rbind"}}},
        {{"destination", "/sys/fs/cgroup"},
         {"type", "cgroup"},
         {"source", "cgroup"},
         {"options", {"ro"}}},
        {{"destination", "/merged"}, {"type", "overlay"}, {"source", "/srv/lower"}},
        {{"destination", "/../escape"}, {"type", "bind"}, {"source", "/"}}}},
      {"annotations",
       {{"io.container.manager", "cri-o"},
        {"io.kubernetes.cri-o.Metadata", R"({"name":"counter"})"},
        {"io.kubernetes.cri-o.Annotations", "{}"},
        {"io.kubernetes.pod.name", "counters"},
        {"io.kubernetes.pod.namespace", "default"},
        {"org.criu.checkpoint.criu.version", "40201"}}}};
  spit(d / "spec.dump", spec.dump());
  spit(d / "bind.mounts", R"([{"source":"/x","destination":"/etc/hosts","file_type":"file","permissions":420}])");
  spit(d / "deleted.files", R"(["/etc/motd","/gone/never-there","/etc/../etc/passwd"])");
  spit(d / "diff/usr/share/nginx/html/index.html", "<h1>changed</h1>\n");
  sh("tar -cf '" + (d / "rootfs-diff.tar").string() + "' -C '" + (d / "diff").string() +
     "' usr");
  stdfs::remove_all(d / "diff");
  // The base image's files: /etc/motd exists there (so deleting it needs a whiteout).
  spit(f.rootfs / "etc/motd", "welcome\n");
  stdfs::create_directories(f.rootfs / "bin");
  ::chmod((f.rootfs / "etc").c_str(), 0751);
  ::chmod(f.rootfs.c_str(), 0755);
  return f;
}

TEST_F(K8sArchive, ForeignArchiveNeedsTheRootfs) {
  auto f = make_foreign(tmp_.path());
  auto tar = tmp_.path() / "foreign.tar";
  sh("tar -cf '" + tar.string() + "' -C '" + f.dir.string() + "' .");
  expect_refused(tar,
                 "this archive was made from container image docker.io/library/nginx:latest; "
                 "pass --rootfs DIR with that image's root filesystem");
  ImportOptions missing;
  missing.rootfs_dir = tmp_.path() / "no-such-rootfs";
  expect_refused(tar, "no-such-rootfs: not a directory", missing);
}

TEST_F(K8sArchive, ForeignArchiveImportsWithRootfs) {
  auto f = make_foreign(tmp_.path());
  for (const std::string flags : {"-cf", "-czf", "--zstd -cf", "--format=pax -cf"}) {
    SCOPED_TRACE(flags);
    auto tar = tmp_.path() / "foreign.tar";
    stdfs::remove(tar);
    sh("tar " + flags + " '" + tar.string() + "' -C '" + f.dir.string() + "' .");
    ImportOptions opts;
    opts.name = "counter";
    opts.rootfs_dir = f.rootfs;
    auto dest = store() / "counter";
    stdfs::remove_all(dest);
    auto r = import_archive(tar, dest, opts);
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    EXPECT_TRUE(r->foreign);

    const Manifest& m = r->manifest;
    EXPECT_EQ(m.name, "counter");
    EXPECT_EQ(m.created, "2024-01-28T00:10:45.673538606+05:30");
    EXPECT_EQ(m.rootfs_dir, stdfs::canonical(f.rootfs).string());
    EXPECT_EQ(m.rootfs_id, "dir:" + stdfs::canonical(f.rootfs).string());
    EXPECT_EQ(m.host.arch, "x86_64");
    EXPECT_EQ(m.host.criu_version, "4.2.1");
    EXPECT_EQ(m.host.kernel, "unknown");
    EXPECT_DOUBLE_EQ(m.timings_s.at("checkpoint"), 0.15);

    auto app = spec::parse_spec(m.spec_yaml, "/");
    ASSERT_TRUE(app.ok()) << app.error().to_string();
    EXPECT_EQ(app->name, "counter");
    EXPECT_EQ(app->argv(),
              (std::vector<std::string>{"/docker-entrypoint.sh", "nginx", "-g", "daemon off;"}));
    EXPECT_EQ(app->env.size(), 3u);
    EXPECT_EQ(app->env[1], (std::pair<std::string, std::string>{"NGINX_VERSION", "1.25.3"}));
    EXPECT_EQ(app->working_dir, "/");
    EXPECT_FALSE(app->readiness_probe.has_value());
    EXPECT_EQ(app->rootfs.kind, spec::RootfsKind::kDirectory);

    // The image is whole and sealed; the archive's metadata is kept alongside.
    auto v = open_verified(dest, {});
    ASSERT_TRUE(v.ok()) << v.error().to_string();
    EXPECT_EQ(slurp(dest / "checkpoint/pages-1.img"), pages(100000));
    EXPECT_EQ(slurp(dest / "checkpoint/stats-dump"), stats_img());
    EXPECT_TRUE(stdfs::exists(dest / "k8s/config.dump"));
    EXPECT_TRUE(stdfs::exists(dest / "k8s/spec.dump"));
    EXPECT_TRUE(stdfs::exists(dest / "k8s/deleted.files"));
    EXPECT_FALSE(stdfs::exists(dest / "host/cpuinfo.img"));
    expect_private_dirs(dest);

    // rootfs-diff.tar: the archive's changes plus a whiteout for the deleted /etc/motd, whose
    // parent carries the base's mode; nothing for paths the base never had.
    auto diff = sh("tar --numeric-owner -tvf '" + (dest / "rootfs-diff.tar").string() + "'").out;
    EXPECT_NE(diff.find("usr/share/nginx/html/index.html"), std::string::npos) << diff;
    EXPECT_NE(diff.find("drwxr-x--x"), std::string::npos) << diff;
    EXPECT_NE(diff.find("c--------- 0/0"), std::string::npos) << diff;
    EXPECT_NE(diff.find("etc/motd"), std::string::npos) << diff;
    EXPECT_EQ(diff.find("never-there"), std::string::npos) << diff;
    // The root's mode as CRIU recorded it, which CRIU checks on restore.
    EXPECT_NE(diff.find("dr-xr-xr-x 0/0"), std::string::npos) << diff;

    bool warned_volume = false, warned_dropped = false, warned_skipped = false;
    for (const auto& w : r->warnings) {
      if (w.find("/etc/hosts") != std::string::npos) ADD_FAILURE() << "re-created: " << w;
      if (w.find("bind mounts /data are not in the archive") != std::string::npos)
        warned_volume = true;
      if (w.find("/merged (overlay), /../escape") != std::string::npos) warned_dropped = true;
      if (w.find("/etc/../etc/passwd") != std::string::npos) warned_skipped = true;
    }
    EXPECT_TRUE(warned_volume);
    EXPECT_TRUE(warned_dropped);
    EXPECT_TRUE(warned_skipped);

    // What a restore must mount again: bind mounts get per-instance sources (never the
    // archive's host paths), runtime mounts are left to the runtime unless they were binds.
    using C = ForeignMount::Content;
    auto mounts = foreign_mounts(dest);
    ASSERT_TRUE(mounts.ok()) << mounts.error().to_string();
    std::vector<ForeignMount> want = {
        {"/etc/hosts", "bind", "", {"bind"}, C::kHosts},
        {"/dev/shm", "bind", "", {"bind", "rprivate", "nosuid"}, C::kEmptyDir},
        {"/data", "bind", "", {"rbind"}, C::kEmptyDir},
        {"/sys/fs/cgroup", "cgroup", "cgroup", {"ro"}, C::kNone}};
    EXPECT_EQ(*mounts, want);
  }
}

TEST_F(K8sArchive, ForeignImportThenExportKeepsTheCheckpoint) {
  auto f = make_foreign(tmp_.path(), std::string(120, 'n') + ".img");  // a GNU long name
  auto tar = tmp_.path() / "foreign.tar";
  sh("tar -cf '" + tar.string() + "' -C '" + f.dir.string() + "' .");
  ImportOptions opts;
  opts.rootfs_dir = f.rootfs;
  auto dest = store() / "nginx";
  auto r = import_archive(tar, dest, opts);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->manifest.name, "nginx");  // the destination's name when none is given
  EXPECT_EQ(slurp(dest / "checkpoint" / (std::string(120, 'n') + ".img")), "long");

  auto again = tmp_.path() / "again.tar";
  ASSERT_TRUE(export_archive(dest, again, {}).ok());
  auto listing = lines(sh("tar -tf '" + again.string() + "'").out);
  EXPECT_TRUE(listing.count("checkpoint/" + std::string(120, 'n') + ".img"));  // pax path
  EXPECT_TRUE(listing.count("stats-dump"));
  EXPECT_TRUE(listing.count("prewarm/k8s/config.dump"));
  auto back = import_archive(again, store() / "nginx2", {});
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(digests(back->manifest), digests(r->manifest));
}

TEST_F(K8sArchive, ForeignArchiveWithoutCriuFilesOrMetadataIsRefused) {
  auto f = make_foreign(tmp_.path());
  stdfs::remove(f.dir / "checkpoint/inventory.img");
  auto tar = tmp_.path() / "no-inventory.tar";
  sh("tar -cf '" + tar.string() + "' -C '" + f.dir.string() + "' .");
  ImportOptions opts;
  opts.rootfs_dir = f.rootfs;
  expect_refused(tar, "checkpoint/inventory.img is missing", opts);

  spit(tmp_.path() / "plain/hello.txt", "hi");
  auto plain = tmp_.path() / "plain.tar";
  sh("tar -cf '" + plain.string() + "' -C '" + (tmp_.path() / "plain").string() + "' .");
  expect_refused(plain, "neither a prewarm export");

  auto pod = write_raw("pod.tar", raw_foreign_base() + raw_entry("pod.options", '0', "{}") + raw_end());
  expect_refused(pod, "pod checkpoint archive", opts);
}

// A spec.dump field of an unexpected type is ignored, not thrown (seen writing fuzz/archive_dumps.cpp).
TEST_F(K8sArchive, ForeignSpecDumpWithOddTypesImports) {
  auto f = make_foreign(tmp_.path());
  json spec = json::parse(slurp(f.dir / "spec.dump"));
  spec["process"]["terminal"] = "yes";
  spit(f.dir / "spec.dump", spec.dump());
  auto tar = tmp_.path() / "odd.tar";
  sh("tar -cf '" + tar.string() + "' -C '" + f.dir.string() + "' .");
  ImportOptions opts;
  opts.rootfs_dir = f.rootfs;
  auto r = import_archive(tar, store() / "odd", opts);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  for (const auto& w : r->warnings) EXPECT_EQ(w.find("terminal"), std::string::npos) << w;
}

// ------------------------------------------------------------------------------------------
// Malicious archives: refused before anything reaches the destination.

TEST_F(K8sArchive, RefusesPathsOutsideTheArchive) {
  expect_refused(write_raw("dotdot.tar", raw_foreign_base() +
                                             raw_entry("checkpoint/../../escaped", '0', "x") +
                                             raw_end()),
                 "contains \"..\"");
  EXPECT_FALSE(stdfs::exists(tmp_.path() / "escaped"));
  EXPECT_FALSE(stdfs::exists(store().parent_path() / "escaped"));
  expect_refused(
      write_raw("abs.tar", raw_foreign_base() + raw_entry("/tmp/prewarm-abs-evil", '0', "x") + raw_end()),
      "absolute path");
  EXPECT_FALSE(stdfs::exists("/tmp/prewarm-abs-evil"));
}

TEST_F(K8sArchive, RefusesLinksAndDevices) {
  expect_refused(write_raw("symlink.tar", raw_foreign_base() +
                                              raw_entry("checkpoint/parent", '2', "", "/etc") +
                                              raw_end()),
                 "checkpoint/parent (-> /etc) is a symbolic link");
  expect_refused(write_raw("hardlink.tar", raw_foreign_base() +
                                               raw_entry("checkpoint/h", '1', "", "/etc/shadow") +
                                               raw_end()),
                 "is a hard link");
  expect_refused(
      write_raw("dev.tar", raw_foreign_base() + raw_entry("checkpoint/null", '3', "") + raw_end()),
      "is a character device");
  expect_refused(
      write_raw("fifo.tar", raw_foreign_base() + raw_entry("checkpoint/f", '6', "") + raw_end()),
      "is a FIFO");
}

TEST_F(K8sArchive, RefusesHugeAndEndlessArchives) {
  // A header claiming a terabyte: refused from the header, before reading any data.
  expect_refused(write_raw("huge.tar", raw_foreign_base() +
                                           raw_entry("checkpoint/pages-1.img", '0', "",
                                                     "", uint64_t{1} << 40)),
                 "unpacks to more than");
  ImportOptions small;
  small.max_bytes = 64 << 10;
  expect_refused(write_raw("big.tar", raw_foreign_base() +
                                          raw_entry("checkpoint/pages-1.img", '0', pages(100000)) +
                                          raw_end()),
                 "unpacks to more than 65536 bytes", small);
  ImportOptions few;
  few.max_entries = 3;
  expect_refused(write_raw("many.tar", raw_foreign_base() + raw_end()), "more than 3 entries", few);
  // A gzip bomb's worth of zeros inside one entry is still just a size in a header.
  std::string bomb = raw_foreign_base() + raw_entry("checkpoint/pages-2.img", '0', "", "", 70000) +
                     std::string(70144, '\0') + raw_end();
  auto plain = write_raw("bomb.tar", bomb);
  sh("gzip -k '" + plain.string() + "'");
  expect_refused(tmp_.path() / "bomb.tar.gz", "unpacks to more than", small);
}

// A 100 KB zstd bomb shaped like a prewarm export: its manifest (first, as exports write it)
// lists a checkpoint file of 4 KiB, and the entry that follows claims 300 MB of zeros. It is
// refused from that entry's header; with writes capped at 64 MiB for the import, a refusal
// after writing would show as "File too large" instead.
TEST_F(K8sArchive, ZstdBombIsRefusedFromTheSizesItsManifestDeclares) {
  auto img = make_image(tmp_.path() / "img", "app");
  const std::string manifest = slurp(img / "manifest.json");
  auto parsed = nlohmann::json::parse(manifest);
  std::string victim;
  uint64_t declared = 0;
  for (const auto& f : parsed["files"])
    if (f["path"].get<std::string>().rfind("checkpoint/", 0) == 0) {
      victim = f["path"];
      declared = f["size"];
      break;
    }
  ASSERT_FALSE(victim.empty()) << manifest;
  const uint64_t claimed = uint64_t{300} << 20;
  write_raw("head.tar", raw_entry("checkpoint/", '5', "") + raw_entry("prewarm/", '5', "") +
                            raw_entry("prewarm/manifest.json", '0', manifest) +
                            raw_entry(victim, '0', "", "", claimed));
  write_raw("end.tar", raw_end());
  const stdfs::path bomb = tmp_.path() / "bomb.tar.zst";
  ASSERT_EQ(sh("cd '" + tmp_.path().string() + "' && { cat head.tar; head -c " +
               std::to_string(claimed) + " /dev/zero; cat end.tar; } | zstd -q -c > bomb.tar.zst")
                .status,
            0);
  EXPECT_LT(stdfs::file_size(bomb), 200u << 10);

  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit capped = old;
  capped.rlim_cur = 64 << 20;
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &capped), 0);
  auto r = import_archive(bomb, store() / "evil", {});
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("entry " + victim + " has " + std::to_string(claimed) +
                                     " bytes, prewarm/manifest.json declares " +
                                     std::to_string(declared)),
            std::string::npos) << r.error().to_string();
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_FALSE(stdfs::exists(store() / "evil"));
  if (stdfs::exists(store()))
    for (const auto& e : stdfs::directory_iterator(store())) ADD_FAILURE() << "left: " << e.path();
}

TEST_F(K8sArchive, RefusesMalformedArchives) {
  std::string good = raw_foreign_base() + raw_entry("checkpoint/core-1.img", '0', core_img());
  expect_refused(write_raw("truncated.tar", good.substr(0, good.size() - 700)), "truncated");
  expect_refused(write_raw("no-end.tar", good), "end-of-archive marker");
  expect_refused(write_raw("garbage.tar", pages(4096)), "checksum");
  expect_refused(write_raw("twice.tar", good + raw_entry("checkpoint/core-1.img", '0', "x") + raw_end()),
                 "appears twice");
  auto xz = write_raw("x.tar.xz", std::string("\xfd" "7zXZ\0", 6) + "rest");
  expect_refused(xz, "xz and bzip2 archives are not supported");
  expect_refused(tmp_.path() / "does-not-exist.tar", "does-not-exist.tar");
}

// Decompression is in-process (zlib, libzstd): a damaged stream is an error naming the
// archive, even where the damage lies past the tar's end marker (the gzip CRC, a cut frame).
TEST_F(K8sArchive, RefusesCorruptAndTruncatedCompressedArchives) {
  auto img = make_image(tmp_.path() / "img", "app");
  for (auto c : {Compression::kGzip, Compression::kZstd}) {
    const std::string ext = c == Compression::kGzip ? "gz" : "zst";
    SCOPED_TRACE(ext);
    auto out = tmp_.path() / ("app.tar." + ext);
    ExportOptions eo;
    eo.compression = c;
    ASSERT_TRUE(export_archive(img, out, eo).ok());
    const std::string bytes = slurp(out);
    ASSERT_GT(bytes.size(), 64u);
    const std::string name = c == Compression::kGzip ? "gzip" : "zstd";
    // Cut in the middle, and cut just before the end (the tar itself may be complete).
    expect_refused(write_raw("mid." + ext, bytes.substr(0, bytes.size() / 2)), "ends early");
    expect_refused(write_raw("tail." + ext, bytes.substr(0, bytes.size() - 4)),
                   "the compressed stream ends early");
    // A flipped byte near the end: the gzip CRC/size or the zstd checksum catches it.
    std::string bad = bytes;
    bad[bad.size() - 3] ^= 0x5a;
    expect_refused(write_raw("crc." + ext, bad), "corrupt " + name + " data");
    // Garbage after a complete stream.
    expect_refused(write_raw("trail." + ext, bytes + "garbage!"), "corrupt " + name + " data");
    // The expansion cap names the archive.
    ImportOptions tiny;
    tiny.max_decompressed_bytes = 4096;
    auto capped = write_raw("cap." + ext, bytes);
    auto r = import_archive(capped, store() / "evil", tiny);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("decompresses to more than 4096 bytes"), std::string::npos)
        << r.error().message();
    EXPECT_NE(r.error().message().find(capped.string()), std::string::npos) << r.error().message();
    // Concatenated gzip members / zstd frames are one stream (what `cat a.gz b.gz` makes).
  }
  // The standard tools' output imports too, including multi-member gzip.
  ASSERT_TRUE(export_archive(img, tmp_.path() / "plain.tar", {}).ok());
  const std::string plain = slurp(tmp_.path() / "plain.tar");
  write_raw("p1", plain.substr(0, 4096));
  write_raw("p2", plain.substr(4096));
  sh("cd '" + tmp_.path().string() + "' && gzip -c p1 > multi.tar.gz && gzip -c p2 >> multi.tar.gz"
     " && zstd -q -c p1 > multi.tar.zst && zstd -q -c p2 >> multi.tar.zst");
  for (const char* f : {"multi.tar.gz", "multi.tar.zst"}) {
    auto r = import_archive(tmp_.path() / f, store() / (std::string("m-") + f), {});
    ASSERT_TRUE(r.ok()) << f << ": " << r.error().to_string();
  }
}

TEST_F(K8sArchive, ImportNeverReplacesAnImage) {
  auto img = make_image(tmp_.path() / "img", "app");
  auto out = tmp_.path() / "app.tar";
  ASSERT_TRUE(export_archive(img, out, {}).ok());
  stdfs::create_directories(store() / "app");
  spit(store() / "app/keep", "mine");
  auto r = import_archive(out, store() / "app", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("already exists"), std::string::npos);
  EXPECT_EQ(slurp(store() / "app/keep"), "mine");
}

TEST(Compression, Names) {
  EXPECT_EQ(*parse_compression("none"), Compression::kNone);
  EXPECT_EQ(*parse_compression("gzip"), Compression::kGzip);
  EXPECT_EQ(*parse_compression("zstd"), Compression::kZstd);
  EXPECT_FALSE(parse_compression("xz").ok());
}

}  // namespace
}  // namespace prewarm::image
