// Small container images made by tests: layers (tars of a directory made by GNU tar, or
// hand-made entries), gzip/zstd compressed with the project's compressor, a config and a
// manifest; written as an OCI image layout, an archive of one, or pushed to a registry.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "base/fs.h"
#include "support/tar_entry.h"
#include "base/result.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "image/compress.h"
#include "registry/registry.h"

namespace prewarm::testing {

// What an image-base cache (CACHE/image/) holds besides lock files.
inline std::vector<std::string> image_cache_entries(const std::filesystem::path& cache) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(cache / "image", ec))
    if (e.path().extension() != ".lock") out.push_back(e.path().filename().string());
  return out;
}

inline std::string tar_end() { return std::string(1024, '\0'); }

// A directory as an uncompressed tar, by GNU tar (numeric owners, entries "./...").
inline Result<std::string> tar_of_dir(const std::filesystem::path& dir) {
  PW_ASSIGN(auto out, run_checked({"tar", "--numeric-owner", "-C", dir.string(), "-cf", "-", "."},
                                  std::chrono::minutes(2)));
  return out;
}

inline std::string digest_of(std::string_view data) { return "sha256:" + sha256_hex(data); }

// data compressed with the project's gzip/zstd stream compressor.
inline Result<std::string> compress(const std::string& data, image::Compression c) {
  if (c == image::Compression::kNone) return data;
  UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
  if (!fd.valid()) return Error::sys("memfd_create", errno, "layer");
  PW_ASSIGN(auto comp, image::Compressor::make(c, fd.get(), "test layer"));
  PW_TRY(comp->write(data.data(), data.size()));
  PW_TRY(comp->finish());
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) return Error::sys("lseek", errno, "layer");
  return fs::read_fd(fd.get(), "layer", size_t{1} << 30);
}

inline std::string layer_media_type(image::Compression c) {
  std::string t = "application/vnd.oci.image.layer.v1.tar";
  if (c == image::Compression::kGzip) t += "+gzip";
  if (c == image::Compression::kZstd) t += "+zstd";
  return t;
}

struct TestLayer {
  std::string media_type;
  std::string blob;     // as stored (compressed)
  std::string diff_id;  // digest of the uncompressed tar
};

struct TestImage {
  std::vector<TestLayer> layers;
  std::string config;
  std::string manifest;
  std::string manifest_media_type = std::string(registry::kOciManifest);
  std::string manifest_digest() const { return digest_of(manifest); }
  std::string config_digest() const { return digest_of(config); }
};

inline Result<TestLayer> make_layer(const std::string& tar, image::Compression c) {
  PW_ASSIGN(std::string blob, compress(tar, c));
  return TestLayer{layer_media_type(c), std::move(blob), digest_of(tar)};
}

// Config and manifest over the layers (bottom first); `arch` as OCI names it.
inline TestImage make_image(std::vector<TestLayer> layers, const std::string& arch = "amd64",
                            bool docker = false) {
  TestImage img;
  img.layers = std::move(layers);
  std::string diff_ids, descs;
  for (const auto& l : img.layers) {
    diff_ids += (diff_ids.empty() ? "\"" : ",\"") + l.diff_id + "\"";
    std::string type = l.media_type;
    if (docker) type = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    descs += std::string(descs.empty() ? "" : ",") + "{\"mediaType\":\"" + type +
             "\",\"digest\":\"" + digest_of(l.blob) + "\",\"size\":" +
             std::to_string(l.blob.size()) + "}";
  }
  img.config = "{\"architecture\":\"" + arch +
               "\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[" +
               diff_ids + "]}}";
  const std::string config_type = docker ? "application/vnd.docker.container.image.v1+json"
                                         : "application/vnd.oci.image.config.v1+json";
  if (docker) img.manifest_media_type = std::string(registry::kDockerManifest);
  img.manifest = "{\"schemaVersion\":2,\"mediaType\":\"" + img.manifest_media_type +
                 "\",\"config\":{\"mediaType\":\"" + config_type + "\",\"digest\":\"" +
                 img.config_digest() + "\",\"size\":" + std::to_string(img.config.size()) +
                 "},\"layers\":[" + descs + "]}";
  return img;
}

inline Status write_blob(const std::filesystem::path& layout, const std::string& data) {
  return fs::write_file(layout / "blobs" / "sha256" / sha256_hex(data), data, 0644);
}

// An OCI image layout holding the images, each under its tag (empty: no ref.name).
inline Status write_layout(const std::filesystem::path& dir,
                           const std::vector<std::pair<std::string, TestImage>>& images) {
  PW_TRY(fs::make_dirs(dir / "blobs" / "sha256", 0755));
  PW_TRY(fs::write_file(dir / "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}", 0644));
  std::string manifests;
  for (const auto& [tag, img] : images) {
    for (const auto& l : img.layers) PW_TRY(write_blob(dir, l.blob));
    PW_TRY(write_blob(dir, img.config));
    PW_TRY(write_blob(dir, img.manifest));
    manifests += std::string(manifests.empty() ? "" : ",") + "{\"mediaType\":\"" +
                 img.manifest_media_type + "\",\"digest\":\"" + img.manifest_digest() +
                 "\",\"size\":" + std::to_string(img.manifest.size());
    if (!tag.empty())
      manifests += ",\"annotations\":{\"org.opencontainers.image.ref.name\":\"" + tag + "\"}";
    manifests += "}";
  }
  return fs::write_file(dir / "index.json",
                        "{\"schemaVersion\":2,\"manifests\":[" + manifests + "]}", 0644);
}

// The layout as an oci-archive (a plain tar of it), by GNU tar.
inline Status write_archive(const std::filesystem::path& layout, const std::filesystem::path& out) {
  auto r = run_checked({"tar", "-C", layout.string(), "-cf", out.string(), "."});
  if (!r.ok()) return std::move(r).error();
  return {};
}

// Pushes the image's blobs and manifest with the registry client; scratch holds blob files.
inline Status push_image(const registry::Reference& ref, const TestImage& img,
                         const std::filesystem::path& scratch, const registry::Options& opts) {
  std::vector<registry::Blob> blobs;
  auto add = [&](const std::string& data, const std::string& type) -> Status {
    std::filesystem::path p = scratch / sha256_hex(data);
    PW_TRY(fs::write_file(p, data, 0644));
    blobs.push_back({digest_of(data), data.size(), type, p});
    return {};
  };
  PW_TRY(fs::make_dirs(scratch, 0755));
  for (const auto& l : img.layers) PW_TRY(add(l.blob, l.media_type));
  PW_TRY(add(img.config, "application/vnd.oci.image.config.v1+json"));
  return registry::push(ref, blobs, img.manifest, img.manifest_media_type, opts);
}

}  // namespace prewarm::testing
