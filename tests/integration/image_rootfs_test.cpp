// rootfs: {image: REF} against the real Debian docker-registry: an image made from the tiny
// example's rootfs is pushed with the registry client, prepared as a base from the spec, reused
// from the cache without downloading; an index picks this host's platform; a blob altered in the
// registry's storage is refused and leaves nothing in the cache.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "base/fs.h"
#include "rootfs/rootfs.h"
#include "spec/app_spec.h"
#include "support/files.h"
#include "support/oci_image.h"
#include "support/registry_server.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;
using image::Compression;
using testing::RegistryServer;
using testing::slurp;
using testing::tar_end;
using testing::tar_entry;
using testing::TempDir;

class ImageRootfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = testing::registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
    registry_ = std::make_unique<RegistryServer>();
    auto st = registry_->start(dir_.path() / "registry");
    ASSERT_TRUE(st.ok()) << st.error().to_string();
    opts_.stats = &stats_;
  }
  void TearDown() override {
    if (HasFailure() && registry_) std::fprintf(stderr, "registry log:\n%s\n", registry_->log().c_str());
    if (registry_) registry_->stop();
  }

  std::string ref(const std::string& name_tag) const {
    return "127.0.0.1:" + std::to_string(registry_->port()) + "/" + name_tag;
  }
  Status push(const std::string& name_tag, const testing::TestImage& img) {
    PW_ASSIGN(registry::Reference r, registry::parse_reference(ref(name_tag)));
    return testing::push_image(r, img, dir_.path() / "push", opts_);
  }
  // The tiny example's rootfs (gzip) with a second layer (zstd) that adds a file and whites
  // one out.
  testing::TestImage tiny_image(const std::string& arch = "amd64", bool docker = false) {
    auto tar = testing::tar_of_dir(PREWARM_EXAMPLE_TINY_ROOTFS);
    EXPECT_TRUE(tar.ok()) << tar.error().to_string();
    auto base = testing::make_layer(tar.ok() ? *tar : "", Compression::kGzip);
    auto app = testing::make_layer(tar_entry("etc/image-marker", '0', "from the image") +
                                       tar_entry("etc/.wh.hosts", '0') + tar_end(),
                                   docker ? Compression::kGzip : Compression::kZstd);
    EXPECT_TRUE(base.ok() && app.ok());
    return testing::make_image({*base, *app}, arch, docker);
  }
  Result<Base> prepare(const std::string& reference) {
    auto spec = spec::parse_spec(
        "name: t\ncommand: [/bin/counter]\nrootfs: {image: '" + reference + "'}\n", "/");
    if (!spec.ok()) return std::move(spec).error();
    return prepare_base(spec->rootfs, cache_,
                        [this](const std::string& m) { progress_.push_back(m); }, opts_);
  }
  std::vector<std::string> cache_entries() const { return testing::image_cache_entries(cache_); }

  TempDir dir_{"image-rootfs"};
  stdfs::path cache_ = dir_.path() / "cache";
  std::unique_ptr<RegistryServer> registry_;
  registry::Stats stats_;
  registry::Options opts_;
  std::vector<std::string> progress_;
};

TEST_F(ImageRootfsTest, BaseFromARegistryImageIsUnpackedOnceAndReused) {
  const auto img = tiny_image();
  ASSERT_TRUE(push("prewarm/tiny:v1", img).ok());
  const uint64_t downloaded_before = stats_.blobs_downloaded;

  auto base = prepare(ref("prewarm/tiny:v1"));
  ASSERT_TRUE(base.ok()) << base.error().to_string();
  EXPECT_EQ(base->id, "image:" + img.manifest_digest());
  EXPECT_EQ(base->dir, cache_ / "image" / img.manifest_digest().substr(7));
  ASSERT_TRUE(base->image);
  EXPECT_EQ(base->image->reference, ref("prewarm/tiny:v1"));
  EXPECT_EQ(base->image->manifest_digest, img.manifest_digest());
  EXPECT_EQ(base->image->config_digest, img.config_digest());
  EXPECT_EQ(stats_.blobs_downloaded - downloaded_before, 3u);  // config and two layers

  // The tiny rootfs as it is, with the second layer applied.
  const stdfs::path tiny = PREWARM_EXAMPLE_TINY_ROOTFS;
  EXPECT_EQ(slurp(base->dir / "bin/counter"), slurp(tiny / "bin/counter"));
  EXPECT_EQ(stdfs::read_symlink(base->dir / "bin/sh"), "busybox");
  struct stat st {};
  ASSERT_EQ(::stat((base->dir / "tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  ASSERT_EQ(::stat((base->dir / "bin/busybox").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(slurp(base->dir / "etc/image-marker"), "from the image");
  EXPECT_FALSE(stdfs::exists(base->dir / "etc/hosts"));
  EXPECT_TRUE(stdfs::exists(base->dir / "etc/passwd"));
  EXPECT_EQ(cache_entries(), std::vector<std::string>{img.manifest_digest().substr(7)});
  bool unpacking = false;
  for (const auto& line : progress_) unpacking = unpacking || line.find("unpacking") != std::string::npos;
  EXPECT_TRUE(unpacking);

  // Again, by tag and by digest: the manifest is asked for, no blob downloaded.
  const uint64_t downloaded = stats_.blobs_downloaded;
  auto again = prepare(ref("prewarm/tiny:v1"));
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->dir, base->dir);
  auto pinned = prepare(ref("prewarm/tiny@" + img.manifest_digest()));
  ASSERT_TRUE(pinned.ok()) << pinned.error().to_string();
  EXPECT_EQ(pinned->id, base->id);
  EXPECT_EQ(stats_.blobs_downloaded, downloaded);
  auto found = built_base_dir(base->id, cache_);
  ASSERT_TRUE(found.ok()) << found.error().to_string();
  EXPECT_EQ(*found, base->dir);
  auto info = resolve_image(ref("prewarm/tiny:v1"), opts_);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->manifest_digest, img.manifest_digest());
  EXPECT_EQ(stats_.blobs_downloaded, downloaded);
}

TEST_F(ImageRootfsTest, AnIndexResolvesToThisHostsPlatform) {
  // Docker schema 2 manifests in a Docker manifest list, as `docker push` of a multi-arch image.
  const auto amd64 = tiny_image("amd64", true);
  const auto arm64 = tiny_image("arm64", true);
  ASSERT_TRUE(push("prewarm/multi:amd64", amd64).ok());
  ASSERT_TRUE(push("prewarm/multi:arm64", arm64).ok());
  auto entry = [](const testing::TestImage& i, const std::string& arch) {
    return "{\"mediaType\":\"" + i.manifest_media_type + "\",\"digest\":\"" +
           i.manifest_digest() + "\",\"size\":" + std::to_string(i.manifest.size()) +
           ",\"platform\":{\"os\":\"linux\",\"architecture\":\"" + arch + "\"}}";
  };
  auto put_list = [&](const std::string& tag, const std::string& entries) {
    auto r = registry::parse_reference(ref("prewarm/multi:" + tag));
    ASSERT_TRUE(r.ok());
    std::string list = "{\"schemaVersion\":2,\"mediaType\":\"" +
                       std::string(registry::kDockerManifestList) + "\",\"manifests\":[" +
                       entries + "]}";
    auto st = registry::push(*r, {}, list, std::string(registry::kDockerManifestList), opts_);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  };
  put_list("both", entry(arm64, "arm64") + "," + entry(amd64, "amd64"));
  put_list("arm-only", entry(arm64, "arm64"));

  auto base = prepare(ref("prewarm/multi:both"));
  ASSERT_TRUE(base.ok()) << base.error().to_string();
  EXPECT_EQ(base->image->manifest_digest, amd64.manifest_digest());
  EXPECT_EQ(slurp(base->dir / "etc/image-marker"), "from the image");

  auto arm = prepare(ref("prewarm/multi:arm-only"));
  ASSERT_FALSE(arm.ok());
  EXPECT_EQ(arm.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(arm.error().message().find("has no linux/amd64 image (it has: linux/arm64)"),
            std::string::npos)
      << arm.error().message();
  // Asked for by its own tag, the arm64 image is refused by its config.
  auto direct = prepare(ref("prewarm/multi:arm64"));
  ASSERT_FALSE(direct.ok());
  EXPECT_NE(direct.error().message().find("the image is for linux/arm64"), std::string::npos)
      << direct.error().message();
  EXPECT_EQ(cache_entries(), std::vector<std::string>{amd64.manifest_digest().substr(7)});
}

TEST_F(ImageRootfsTest, ABlobAlteredInTheRegistryIsRefusedAndNothingIsCached) {
  const auto img = tiny_image();
  ASSERT_TRUE(push("prewarm/tampered:v1", img).ok());
  // The registry's own copy of the app layer, changed in place (same size).
  const std::string hex = testing::digest_of(img.layers[1].blob).substr(7);
  const stdfs::path data = dir_.path() / "registry" / "data" / "docker" / "registry" / "v2" /
                           "blobs" / "sha256" / hex.substr(0, 2) / hex / "data";
  ASSERT_TRUE(stdfs::exists(data)) << data;
  std::string bytes = slurp(data);
  bytes[bytes.size() / 2] ^= 0x20;
  ASSERT_TRUE(fs::write_file(data, bytes, 0644).ok());

  auto bad = prepare(ref("prewarm/tampered:v1"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("blob " + testing::digest_of(img.layers[1].blob) +
                                       " from 127.0.0.1"),
            std::string::npos)
      << bad.error().message();
  EXPECT_NE(bad.error().message().find("has the wrong content"), std::string::npos)
      << bad.error().message();
  EXPECT_EQ(cache_entries(), std::vector<std::string>{});
  auto absent = built_base_dir("image:" + img.manifest_digest(), cache_);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().kind(), ErrorKind::kNotFound);
}

}  // namespace
}  // namespace prewarm::rootfs
