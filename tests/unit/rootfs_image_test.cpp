// Container image layers and bases without a registry and without root: OCI whiteouts, opaque
// directories, hard links and replacements across layers; hostile layers; gzip/zstd with
// diff_id checks; bases from an OCI layout and an oci-archive written by the test, their cache,
// and blobs that do not verify.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "rootfs/rootfs.h"
#include "spec/app_spec.h"
#include "support/files.h"
#include "support/oci_image.h"

namespace prewarm::rootfs {
namespace {

namespace stdfs = std::filesystem;
using image::Compression;
using testing::slurp;
using testing::spit;
using testing::tar_end;
using testing::tar_entry;
using testing::TempDir;

constexpr const char* kTar = "application/vnd.oci.image.layer.v1.tar";

class Layers : public ::testing::Test {
 protected:
  // Writes a layer blob and applies it to dest_.
  Status apply(const std::string& tar, Compression c = Compression::kNone,
               std::string diff_id = {}) {
    auto blob = testing::compress(tar, c);
    if (!blob.ok()) return std::move(blob).error();
    const stdfs::path p = dir_.path() / ("layer" + std::to_string(n_++));
    std::ofstream(p, std::ios::binary) << *blob;
    return unpack_layer(p, testing::layer_media_type(c), dest_, diff_id);
  }
  bool exists(const std::string& rel) const {
    struct stat st {};
    return ::lstat((dest_ / rel).c_str(), &st) == 0;
  }

  TempDir dir_{"image-layers"};
  stdfs::path dest_ = [this] {
    stdfs::create_directory(dir_.path() / "root");
    return dir_.path() / "root";
  }();
  int n_ = 0;
};

TEST_F(Layers, WhiteoutsOpaqueDirsHardLinksAndReplacementsAcrossLayers) {
  std::string lower = tar_entry("./", '5', "", "", 0755) + tar_entry("a/", '5', "", "", 0755) +
                      tar_entry("a/x", '0', "x") + tar_entry("a/y", '0', "y") +
                      tar_entry("b/", '5', "", "", 0755) + tar_entry("b/old", '0', "old") +
                      tar_entry("b/sub/", '5', "", "", 0755) + tar_entry("b/sub/deep", '0', "d") +
                      tar_entry("c/", '5', "", "", 0755) + tar_entry("c/inner", '0', "i") +
                      tar_entry("link", '2', "", "a/y") + tar_end();
  ASSERT_TRUE(apply(lower).ok());
  // The upper layer: b's new entry comes before its opaque marker, and must survive it.
  std::string upper = tar_entry("a/.wh.x", '0') + tar_entry("b/new", '0', "new") +
                      tar_entry("b/.wh..wh..opq", '0') + tar_entry("c", '0', "now a file") +
                      tar_entry("hard", '1', "", "a/y") + tar_entry(".wh.link", '0') +
                      tar_entry("a/.wh.never-there", '0') + tar_entry("gone/.wh.z", '0') +
                      tar_end();
  ASSERT_TRUE(apply(upper).ok());

  EXPECT_FALSE(exists("a/x"));
  EXPECT_EQ(slurp(dest_ / "a/y"), "y");
  EXPECT_FALSE(exists("a/.wh.x"));  // whiteouts are applied, not created
  EXPECT_EQ(slurp(dest_ / "b/new"), "new");
  EXPECT_FALSE(exists("b/old"));
  EXPECT_FALSE(exists("b/sub"));
  EXPECT_FALSE(exists("b/.wh..wh..opq"));
  EXPECT_EQ(slurp(dest_ / "c"), "now a file");  // a full directory replaced by a file
  struct stat y {}, hard {};
  ASSERT_EQ(::lstat((dest_ / "a/y").c_str(), &y), 0);
  ASSERT_EQ(::lstat((dest_ / "hard").c_str(), &hard), 0);
  EXPECT_EQ(y.st_ino, hard.st_ino);  // a hard link to a lower layer's file
  EXPECT_FALSE(exists("link"));
  EXPECT_FALSE(exists("gone"));  // a whiteout in a missing directory hides nothing, makes nothing
}

TEST_F(Layers, HostileEntriesAreRefused) {
  ASSERT_TRUE(apply(tar_entry("etc/", '5', "", "", 0755) + tar_entry("outside", '2', "", "/") +
                    tar_end())
                  .ok());
  struct Case {
    const char* what;
    std::string tar;
  };
  const Case cases[] = {
      {"absolute name", tar_entry("/abs", '0', "x") + tar_end()},
      {"dot-dot name", tar_entry("../escape", '0', "x") + tar_end()},
      {"through a lower layer's symlink", tar_entry("outside/tmp/planted", '0', "x") + tar_end()},
      {"through this layer's symlink",
       tar_entry("up", '2', "", "..") + tar_entry("up/planted", '0', "x") + tar_end()},
      {"hard link out", tar_entry("h", '1', "", "../../etc/passwd") + tar_end()},
      {"whiteout through a symlink", tar_entry("outside/.wh.etc", '0') + tar_end()},
      {"whiteout with dot-dot", tar_entry("../.wh.etc", '0') + tar_end()},
  };
  for (const auto& c : cases) {
    Status st = apply(c.tar);
    EXPECT_FALSE(st.ok()) << c.what;
  }
  EXPECT_FALSE(stdfs::exists("/planted"));
  EXPECT_FALSE(stdfs::exists(dir_.path() / "escape"));
  EXPECT_TRUE(stdfs::exists("/etc"));  // the whiteout through "outside" removed nothing
  EXPECT_TRUE(stdfs::exists(dest_ / "etc"));
}

TEST_F(Layers, GzipAndZstdLayersAreCheckedAgainstTheirDiffId) {
  const std::string tar = tar_entry("f", '0', "zipped") + tar_end();
  const std::string diff_id = testing::digest_of(tar);
  EXPECT_TRUE(apply(tar, Compression::kGzip, diff_id).ok());
  EXPECT_EQ(slurp(dest_ / "f"), "zipped");
  EXPECT_TRUE(apply(tar_entry("g", '0', "z") + tar_end(), Compression::kZstd,
                    testing::digest_of(tar_entry("g", '0', "z") + tar_end()))
                  .ok());
  EXPECT_EQ(slurp(dest_ / "g"), "z");
  Status wrong = apply(tar, Compression::kGzip, testing::digest_of("something else"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("image config lists"), std::string::npos)
      << wrong.error().message();
  // A layer that says gzip but is not.
  stdfs::path p = dir_.path() / "fake.gz";
  std::ofstream(p) << tar;
  Status fake = unpack_layer(p, "application/vnd.oci.image.layer.v1.tar+gzip", dest_);
  EXPECT_FALSE(fake.ok());
  Status unknown = unpack_layer(p, "application/vnd.example.layer+bzip2", dest_);
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("is not one prewarm unpacks"), std::string::npos);
}

// A small root filesystem as two layers: a base and an app layer that changes it.
testing::TestImage small_image(Compression c = Compression::kGzip, const std::string& arch = "amd64",
                               const std::string& marker = "v1") {
  auto base = testing::make_layer(tar_entry("./", '5', "", "", 0755) +
                                      tar_entry("bin/", '5', "", "", 0755) +
                                      tar_entry("bin/sh", '0', "#!shell", "", 0755) +
                                      tar_entry("etc/", '5', "", "", 0755) +
                                      tar_entry("etc/motd", '0', "hello") +
                                      tar_entry("etc/old", '0', "old") + tar_end(),
                                  c);
  auto app = testing::make_layer(tar_entry("etc/.wh.old", '0') +
                                     tar_entry("etc/marker", '0', marker) + tar_end(),
                                 c);
  EXPECT_TRUE(base.ok() && app.ok());
  return testing::make_image({*base, *app}, arch);
}

class ImageBases : public ::testing::Test {
 protected:
  Result<Base> prepare(const std::string& image) {
    spec::RootfsSource s;
    s.kind = spec::RootfsKind::kImage;
    s.image = image;
    return prepare_base(s, cache_);
  }
  std::vector<std::string> cache_entries() const { return testing::image_cache_entries(cache_); }

  TempDir dir_{"image-bases"};
  stdfs::path cache_ = dir_.path() / "cache";
};

TEST_F(ImageBases, FromAnOciLayoutAndAnArchiveOfIt) {
  const auto v1 = small_image(Compression::kGzip);
  const auto v2 = small_image(Compression::kZstd, "amd64", "v2");
  const stdfs::path layout = dir_.path() / "layout";
  ASSERT_TRUE(testing::write_layout(layout, {{"v1", v1}, {"v2", v2}}).ok());

  auto base = prepare("oci:" + layout.string() + ":v2");
  ASSERT_TRUE(base.ok()) << base.error().to_string();
  const std::string hex = v2.manifest_digest().substr(7);
  EXPECT_EQ(base->id, "image:" + v2.manifest_digest());
  EXPECT_EQ(base->dir, cache_ / "image" / hex);
  ASSERT_TRUE(base->image.has_value());
  EXPECT_EQ(base->image->manifest_digest, v2.manifest_digest());
  EXPECT_EQ(base->image->config_digest, v2.config_digest());
  EXPECT_EQ(base->image->reference, "oci:" + layout.string() + ":v2");
  EXPECT_EQ(slurp(base->dir / "etc/marker"), "v2");
  EXPECT_EQ(slurp(base->dir / "etc/motd"), "hello");
  EXPECT_FALSE(stdfs::exists(base->dir / "etc/old"));
  EXPECT_EQ(stdfs::status(base->dir).permissions(), stdfs::perms(0755));
  auto found = built_base_dir(base->id, cache_);
  ASSERT_TRUE(found.ok()) << found.error().to_string();
  EXPECT_EQ(*found, base->dir);

  // The same image from an archive of the layout: the same base, reused as it is.
  const stdfs::path archive = dir_.path() / "image.tar";
  ASSERT_TRUE(testing::write_archive(layout, archive).ok());
  spit(base->dir / "etc/reuse-mark", "kept");
  auto again = prepare("oci-archive:" + archive.string() + ":v2");
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(again->dir, base->dir);
  EXPECT_EQ(slurp(again->dir / "etc/reuse-mark"), "kept");
  auto v1_base = prepare("oci-archive:" + archive.string() + ":v1");
  ASSERT_TRUE(v1_base.ok()) << v1_base.error().to_string();
  EXPECT_EQ(slurp(v1_base->dir / "etc/marker"), "v1");
  EXPECT_EQ(cache_entries().size(), 2u);  // two bases, no scratch left

  auto info = resolve_image("oci:" + layout.string() + ":v1", {});
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  EXPECT_EQ(info->manifest_digest, v1.manifest_digest());
  EXPECT_EQ(info->config_digest, v1.config_digest());

  auto untagged = prepare("oci:" + layout.string());
  ASSERT_FALSE(untagged.ok());
  EXPECT_NE(untagged.error().message().find("holds 2 images; name one with :TAG (tags: v1, v2)"),
            std::string::npos)
      << untagged.error().message();
  auto missing = prepare("oci:" + layout.string() + ":v3");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().kind(), ErrorKind::kNotFound);
}

TEST_F(ImageBases, BlobsThatDoNotVerifyLeaveNothingInTheCache) {
  const auto img = small_image();
  const stdfs::path layout = dir_.path() / "layout";
  ASSERT_TRUE(testing::write_layout(layout, {{"t", img}}).ok());
  // The app layer altered in place, same size.
  const std::string layer_hex = testing::digest_of(img.layers[1].blob).substr(7);
  std::string bytes = slurp(layout / "blobs/sha256" / layer_hex);
  bytes[bytes.size() / 2] ^= 0x5a;
  std::ofstream(layout / "blobs/sha256" / layer_hex, std::ios::binary | std::ios::trunc) << bytes;
  auto bad = prepare("oci:" + layout.string() + ":t");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("has the wrong content"), std::string::npos)
      << bad.error().message();
  EXPECT_EQ(cache_entries(), std::vector<std::string>{});

  // A consistent layer (its digest matches) that the config's diff_id disowns.
  auto other = testing::make_layer(tar_entry("etc/evil", '0', "x") + tar_end(), Compression::kGzip);
  ASSERT_TRUE(other.ok());
  auto lying = small_image();
  other->diff_id = lying.layers[1].diff_id;
  lying = testing::make_image({lying.layers[0], *other});
  const stdfs::path layout2 = dir_.path() / "layout2";
  ASSERT_TRUE(testing::write_layout(layout2, {{"t", lying}}).ok());
  auto disowned = prepare("oci:" + layout2.string() + ":t");
  ASSERT_FALSE(disowned.ok());
  EXPECT_NE(disowned.error().message().find("image config lists"), std::string::npos)
      << disowned.error().message();
  EXPECT_EQ(cache_entries(), std::vector<std::string>{});
  auto absent = built_base_dir("image:" + lying.manifest_digest(), cache_);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().kind(), ErrorKind::kNotFound);
  EXPECT_NE(absent.error().message().find(lying.manifest_digest()), std::string::npos);
}

TEST_F(ImageBases, ImagesForAnotherPlatformOrNotImagesAreClearErrors) {
  const stdfs::path layout = dir_.path() / "layout";
  ASSERT_TRUE(testing::write_layout(layout, {{"arm", small_image(Compression::kGzip, "arm64")}}).ok());
  auto arm = prepare("oci:" + layout.string() + ":arm");
  ASSERT_FALSE(arm.ok());
  EXPECT_NE(arm.error().message().find("the image is for linux/arm64"), std::string::npos)
      << arm.error().message();

  auto not_layout = prepare("oci:" + dir_.path().string());
  ASSERT_FALSE(not_layout.ok());
  EXPECT_NE(not_layout.error().message().find("is not an OCI image layout"), std::string::npos);
  auto dir_as_archive = prepare("oci-archive:" + layout.string() + ":arm");
  ASSERT_FALSE(dir_as_archive.ok());
  EXPECT_NE(dir_as_archive.error().message().find("use oci: for a directory"), std::string::npos);
  auto bad_ids = built_base_dir("image:sha256:xyz", cache_);
  ASSERT_FALSE(bad_ids.ok());
  EXPECT_EQ(bad_ids.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(cache_entries(), std::vector<std::string>{});
}

}  // namespace
}  // namespace prewarm::rootfs
