// The OCI image writer: reproducible digests, a layout whose blobs match their names and whose
// documents point at each other, a layer that GNU tar reads back, and clear refusals.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "base/sha256.h"
#include "base/subprocess.h"
#include "base/tar.h"
#include "ociimage/layout.h"
#include "support/files.h"

namespace prewarm::testing {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

// A small rootfs: directories, an executable, a symlink, a name over 100 bytes.
stdfs::path make_tree(const stdfs::path& root) {
  stdfs::path r = root / "rootfs";
  spit(r / "bin" / "busybox", "not really busybox\n");
  ::chmod((r / "bin" / "busybox").c_str(), 0755);
  stdfs::create_symlink("busybox", r / "bin" / "sh");
  spit(r / "etc" / "hostname", "h\n");
  stdfs::create_symlink("/" + std::string(150, 'x'), r / "etc" / "long-link");  // pax linkpath
  spit(r / "deep" / std::string(60, 'a') / std::string(60, 'b') / "file", "long\n");
  stdfs::create_directories(r / "tmp");
  ::chmod((r / "tmp").c_str(), 01777);
  return r;
}

std::string hex(const std::string& digest) { return digest.substr(7); }

// The names of an uncompressed tar's entries, in order, with symlink targets ("a -> b").
std::vector<std::string> tar_names(const std::string& data) {
  size_t pos = 0;
  tar::Reader r(
      [&](char* buf, size_t n) -> Result<size_t> {
        size_t k = std::min(n, data.size() - pos);
        std::memcpy(buf, data.data() + pos, k);
        pos += k;
        return k;
      },
      "test tar");
  std::vector<std::string> out;
  for (;;) {
    auto e = r.next();
    EXPECT_TRUE(e.ok()) << e.error().message();
    if (!e.ok() || !e->has_value()) break;
    out.push_back((*e)->name + ((*e)->type == '2' ? " -> " + (*e)->link : ""));
  }
  return out;
}

ociimage::ImageConfig app_config() {
  ociimage::ImageConfig c;
  c.entrypoint = {"/bin/counter"};
  c.cmd = {"--port", "8080"};
  c.env = {"PATH=/bin", "PORT=8080"};
  c.working_dir = "/";
  c.exposed_ports = {"8080/tcp"};
  return c;
}

TEST(OciImageTest, ArchiveIsReproducible) {
  TempDir tmp("prewarm-ociimage");
  auto rootfs = make_tree(tmp.path());
  auto a = ociimage::write_archive(rootfs, app_config(), {.name = "prewarm.test/app:1"},
                                   tmp.path() / "a.tar");
  ASSERT_TRUE(a.ok()) << a.error().to_string();
  // A newer mtime and a different moment: the same bytes (mtimes are fixed, entries sorted).
  struct utimbuf times {1'700'000'000, 1'700'000'000};
  ASSERT_EQ(::utime((rootfs / "etc" / "hostname").c_str(), &times), 0);
  auto b = ociimage::write_archive(rootfs, app_config(), {.name = "prewarm.test/app:1"},
                                   tmp.path() / "b.tar");
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_EQ(a->manifest_digest, b->manifest_digest);
  EXPECT_EQ(a->layer_digest, b->layer_digest);
  EXPECT_EQ(slurp(tmp.path() / "a.tar"), slurp(tmp.path() / "b.tar"));
  // A changed file changes the layer and so the manifest.
  spit(rootfs / "etc" / "hostname", "other\n");
  auto c = ociimage::write_archive(rootfs, app_config(), {.name = "prewarm.test/app:1"},
                                   tmp.path() / "c.tar");
  ASSERT_TRUE(c.ok()) << c.error().to_string();
  EXPECT_NE(a->manifest_digest, c->manifest_digest);
  EXPECT_NE(a->diff_id, c->diff_id);

  // The archive: the layout's files, documents first, blobs sorted; nothing else.
  auto names = tar_names(slurp(tmp.path() / "a.tar"));
  std::vector<std::string> blobs = {hex(a->config_digest), hex(a->layer_digest),
                                    hex(a->manifest_digest)};
  std::sort(blobs.begin(), blobs.end());
  std::vector<std::string> want = {"oci-layout", "index.json", "blobs/", "blobs/sha256/"};
  for (const auto& h : blobs) want.push_back("blobs/sha256/" + h);
  EXPECT_EQ(names, want);
  // No scratch files were left next to the archives.
  for (const auto& e : stdfs::directory_iterator(tmp.path()))
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
}

TEST(OciImageTest, LayoutDocumentsAndBlobsAgree) {
  TempDir tmp("prewarm-ociimage");
  auto rootfs = make_tree(tmp.path());
  auto out = tmp.path() / "layout";
  auto w = ociimage::write_layout(rootfs, app_config(), {.name = "prewarm.test/app:1"}, out);
  ASSERT_TRUE(w.ok()) << w.error().to_string();

  // Every blob is named by its own digest.
  size_t count = 0;
  for (const auto& e : stdfs::directory_iterator(out / "blobs" / "sha256")) {
    auto h = sha256_file(e.path());
    ASSERT_TRUE(h.ok());
    EXPECT_EQ(*h, e.path().filename().string());
    ++count;
  }
  EXPECT_EQ(count, 3u);

  EXPECT_EQ(json::parse(slurp(out / "oci-layout"))["imageLayoutVersion"], "1.0.0");
  json index = json::parse(slurp(out / "index.json"));
  ASSERT_EQ(index["manifests"].size(), 1u);
  const json& desc = index["manifests"][0];
  EXPECT_EQ(desc["digest"], w->manifest_digest);
  EXPECT_EQ(desc["size"], w->manifest_size);
  EXPECT_EQ(desc["annotations"]["io.containerd.image.name"], "prewarm.test/app:1");
  EXPECT_EQ(desc["annotations"]["org.opencontainers.image.ref.name"], "prewarm.test/app:1");

  json manifest = json::parse(slurp(out / "blobs/sha256" / hex(w->manifest_digest)));
  EXPECT_EQ(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(manifest["config"]["digest"], w->config_digest);
  EXPECT_EQ(manifest["layers"][0]["digest"], w->layer_digest);
  EXPECT_EQ(manifest["layers"][0]["size"], w->layer_size);
  EXPECT_EQ(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");

  json config = json::parse(slurp(out / "blobs/sha256" / hex(w->config_digest)));
  EXPECT_EQ(config["os"], "linux");
  EXPECT_EQ(config["config"]["Entrypoint"], json::array({"/bin/counter"}));
  EXPECT_EQ(config["config"]["Cmd"], json::array({"--port", "8080"}));
  EXPECT_EQ(config["config"]["Env"], json::array({"PATH=/bin", "PORT=8080"}));
  EXPECT_TRUE(config["config"]["ExposedPorts"].contains("8080/tcp"));
  EXPECT_EQ(config["rootfs"]["diff_ids"], json::array({w->diff_id}));

  // The layer, as GNU tar and gzip see it: the diff id is the digest of the gunzipped tar,
  // and the entries are the tree's, sorted, with modes and the symlink kept.
  stdfs::path layer = out / "blobs/sha256" / hex(w->layer_digest);
  auto plain = run_checked({"gzip", "-dc", layer.string()});
  ASSERT_TRUE(plain.ok()) << plain.error().message();
  EXPECT_EQ("sha256:" + sha256_hex(*plain), w->diff_id);
  std::string long_name = "deep/" + std::string(60, 'a') + "/" + std::string(60, 'b') + "/file";
  std::vector<std::string> want = {"bin/", "bin/busybox", "bin/sh -> busybox", "deep/",
                                   "deep/" + std::string(60, 'a') + "/",
                                   "deep/" + std::string(60, 'a') + "/" + std::string(60, 'b') + "/",
                                   long_name, "etc/", "etc/hostname",
                                   "etc/long-link -> /" + std::string(150, 'x'), "tmp/"};
  EXPECT_EQ(tar_names(*plain), want);
  auto listing = run_checked({"tar", "-tvzf", layer.string()});
  ASSERT_TRUE(listing.ok()) << listing.error().message();
  // The line of bin/busybox: its mode, size and the fixed mtime (owners are the tree's).
  size_t at = listing->find(" bin/busybox\n");
  ASSERT_NE(at, std::string::npos) << *listing;
  size_t line = listing->rfind('\n', at);
  std::string entry = listing->substr(line == std::string::npos ? 0 : line + 1,
                                      at - (line == std::string::npos ? 0 : line + 1));
  EXPECT_EQ(entry.rfind("-rwxr-xr-x ", 0), 0u) << entry;
  EXPECT_NE(entry.find(" 19 1970-01-01 00:00"), std::string::npos) << entry;
  EXPECT_NE(listing->find("drwxrwxrwt"), std::string::npos) << *listing;
  EXPECT_NE(listing->find(long_name), std::string::npos) << *listing;
}

TEST(OciImageTest, RefusesWhatItCannotWrite) {
  TempDir tmp("prewarm-ociimage");
  auto rootfs = make_tree(tmp.path());
  auto no_name = ociimage::write_archive(rootfs, {}, {}, tmp.path() / "x.tar");
  ASSERT_FALSE(no_name.ok());
  EXPECT_EQ(no_name.error().kind(), ErrorKind::kInvalidInput);

  auto missing = ociimage::write_archive(tmp.path() / "nope", {}, {.name = "a:1"},
                                         tmp.path() / "x.tar");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound) << missing.error().message();

  stdfs::create_directories(tmp.path() / "exists");
  auto exists = ociimage::write_layout(rootfs, {}, {.name = "a:1"}, tmp.path() / "exists");
  ASSERT_FALSE(exists.ok());
  EXPECT_EQ(exists.error().kind(), ErrorKind::kConflict);

  // A FIFO cannot go into a layer; nothing half-written stays behind.
  ASSERT_EQ(::mkfifo((rootfs / "etc" / "fifo").c_str(), 0644), 0);
  auto fifo = ociimage::write_layout(rootfs, {}, {.name = "a:1"}, tmp.path() / "out");
  ASSERT_FALSE(fifo.ok());
  EXPECT_EQ(fifo.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_NE(fifo.error().message().find("etc/fifo"), std::string::npos) << fifo.error().message();
  auto fifo_tar = ociimage::write_archive(rootfs, {}, {.name = "a:1"}, tmp.path() / "out.tar");
  ASSERT_FALSE(fifo_tar.ok());
  std::vector<std::string> left;
  for (const auto& e : stdfs::directory_iterator(tmp.path()))
    left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"exists", "rootfs"}));
}

}  // namespace
}  // namespace prewarm::testing
