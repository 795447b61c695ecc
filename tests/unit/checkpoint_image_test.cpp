// Checkpoint images (the OCI images CRI-O, Podman and containerd restore from): what prewarm
// writes, and which registry manifests it takes for one.
#include "image/checkpoint_image.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "base/sha256.h"

namespace prewarm::image {
namespace {

using nlohmann::json;

Manifest sample_manifest() {
  Manifest m;
  m.name = "app";
  m.created = "2026-11-26T10:00:00Z";
  m.rootfs_id = "debootstrap:bookworm:abc";
  m.host.arch = "x86_64";
  m.host.kernel = "6.18.0";
  m.host.criu_version = "4.2.1";
  m.host.runc_version = "1.1.5";
  return m;
}

const Descriptor kLayer{kOciLayerZstdMediaType, "sha256:" + std::string(64, 'a'), 1234};

json layer(const std::string& media_type) {
  return {{"mediaType", media_type}, {"digest", "sha256:" + std::string(64, 'b')}, {"size", 99}};
}

json manifest_with(const json& annotations, const json& layers) {
  return {{"schemaVersion", 2},
          {"mediaType", kOciImageManifestMediaType},
          {"config",
           {{"mediaType", kOciImageConfigMediaType},
            {"digest", "sha256:" + std::string(64, 'c')},
            {"size", 10}}},
          {"layers", layers},
          {"annotations", annotations}};
}

TEST(CheckpointImage, WrittenImageIsAnOciImageThatReadsBack) {
  auto j = make_checkpoint_image(sample_manifest(), "web", kLayer, "sha256:" + std::string(64, 'd'));
  json config = json::parse(j.config);
  EXPECT_EQ(config["architecture"], "amd64");
  EXPECT_EQ(config["os"], "linux");
  EXPECT_EQ(config["rootfs"]["diff_ids"], json::array({"sha256:" + std::string(64, 'd')}));
  json m = json::parse(j.manifest);
  EXPECT_EQ(m["mediaType"], kOciImageManifestMediaType);
  // The manifest names the config by the digest of exactly the text returned.
  EXPECT_EQ(m["config"]["digest"], "sha256:" + sha256_hex(j.config));
  EXPECT_EQ(m["config"]["size"], j.config.size());
  EXPECT_EQ(m["annotations"]["io.kubernetes.cri-o.annotations.checkpoint.name"], "web");
  EXPECT_EQ(m["annotations"]["io.podman.annotations.checkpoint.runtime.name"], "runc");
  EXPECT_EQ(m["annotations"]["org.criu.checkpoint.criu.version"], "4.2.1");

  auto info = checkpoint_image_info(j.manifest);
  ASSERT_TRUE(info.ok()) << info.error().to_string();
  ASSERT_TRUE(info->has_value());
  EXPECT_EQ((*info)->engine, "prewarm");
  EXPECT_EQ((*info)->container_name, "web");
  EXPECT_EQ((*info)->layer.digest, kLayer.digest);
  EXPECT_EQ((*info)->layer.size, kLayer.size);
}

TEST(CheckpointImage, RecognisesEachEnginesAnnotation) {
  for (auto [key, engine] : std::vector<std::pair<std::string, std::string>>{
           {"io.kubernetes.cri-o.annotations.checkpoint.name", "cri-o"},
           {"io.podman.annotations.checkpoint.name", "podman"},
           {"io.kubernetes.containerd.annotations.checkpoint.name", "containerd"},
           {"org.criu.checkpoint.container.name", "checkpointctl"}}) {
    json m = manifest_with({{key, "ctr"}},
                           json::array({layer("application/vnd.docker.image.rootfs.diff.tar.gzip")}));
    auto info = checkpoint_image_info(m.dump());
    ASSERT_TRUE(info.ok()) << key << ": " << info.error().to_string();
    ASSERT_TRUE(info->has_value()) << key;
    EXPECT_EQ((*info)->engine, engine);
    EXPECT_EQ((*info)->container_name, "ctr");
  }
}

TEST(CheckpointImage, OrdinaryAndPrewarmChunkedImagesAreNotCheckpointImages) {
  json plain = manifest_with(json::object(),
                             json::array({layer("application/vnd.oci.image.layer.v1.tar")}));
  auto a = checkpoint_image_info(plain.dump());
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->has_value());
  // prewarm's store images carry the CRI-O name too, but are chunked, not one archive.
  json chunked = manifest_with({{"io.kubernetes.cri-o.annotations.checkpoint.name", "app"}},
                               {layer("application/vnd.prewarm.checkpoint.chunk.v1.zstd"),
                                layer("application/vnd.prewarm.checkpoint.chunk.v1.zstd")});
  chunked["artifactType"] = "application/vnd.prewarm.checkpoint.v1";
  auto b = checkpoint_image_info(chunked.dump());
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->has_value());
}

TEST(CheckpointImage, MarkedButUnreadableImagesAreErrorsThatSayWhy) {
  const json ann = {{"io.kubernetes.cri-o.annotations.checkpoint.name", "ctr"}};
  auto two = checkpoint_image_info(
      manifest_with(ann, {layer("application/vnd.oci.image.layer.v1.tar"),
                          layer("application/vnd.oci.image.layer.v1.tar")})
          .dump());
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.error().message().find("exactly one layer"), std::string::npos);
  auto odd = checkpoint_image_info(manifest_with(ann, json::array({layer("application/x-squashfs")})).dump());
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.error().message().find("application/x-squashfs"), std::string::npos);
  json no_digest = manifest_with(
      ann, json::array({{{"mediaType", "application/vnd.oci.image.layer.v1.tar"}}}));
  EXPECT_FALSE(checkpoint_image_info(no_digest.dump()).ok());
  EXPECT_FALSE(checkpoint_image_info("not json").ok());
}

// Fields of the wrong type are errors, not exceptions (seen writing fuzz/oci_manifest.cpp).
TEST(CheckpointImage, FieldsOfTheWrongTypeAreErrors) {
  const json ann = {{"io.podman.annotations.checkpoint.name", "ctr"}};
  json m = manifest_with(ann, json::array({layer("application/vnd.oci.image.layer.v1.tar")}));
  m["artifactType"] = 5;
  m["config"]["mediaType"] = json::array();
  m["layers"][0]["mediaType"] = 7;
  auto r = checkpoint_image_info(m.dump());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("layer media type ''"), std::string::npos)
      << r.error().message();
}

// A number too large for its integer is the wrong type, not undefined behaviour.
TEST(CheckpointImage, ManifestNumbersOutOfRangeAreWrongTypes) {
  json m = json::parse(to_json(sample_manifest()));
  m["formatVersion"] = 1e30;
  auto r = parse_manifest(m.dump());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "manifest.formatVersion: wrong type");
  m = json::parse(to_json(sample_manifest()));
  m["files"] = json::array({{{"path", "a"}, {"size", -1}, {"sha256", std::string(64, 'a')}}});
  EXPECT_FALSE(parse_manifest(m.dump()).ok());
}

}  // namespace
}  // namespace prewarm::image
