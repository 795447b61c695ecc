// The image manifest's stored spec: YAML without the files, the files beside it as JSON.
#include "image/manifest.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace prewarm::image {
namespace {

using nlohmann::json;

constexpr const char* kYaml = "name: app\nrootfs: {tarball: /base.tar}\ncommand: [/app/run]\n";

Manifest manifest_with_files(std::vector<spec::FileEntry> files) {
  Manifest m;
  m.name = "app";
  m.created = "2026-11-30T00:00:00Z";
  m.spec_yaml = kYaml;
  m.spec_files = std::move(files);
  m.rootfs_id = "tar:" + std::string(64, 'a');
  m.rootfs_dir = "/x";
  return m;
}

spec::FileEntry file(std::string path, std::string content, unsigned mode = 0644) {
  spec::FileEntry f;
  f.path = std::move(path);
  f.content = std::move(content);
  f.mode = mode;
  return f;
}

TEST(Manifest, SpecFilesRoundTripAsTextOrBase64AndJoinTheStoredSpec) {
  const std::string binary("\x00\xff\xfe\x80 not UTF-8", 15);
  Manifest m = manifest_with_files({file("/app/run", "#!/bin/sh\necho \"hi\" é\n", 0755),
                                    file("/app/blob", binary)});
  const std::string text = to_json(m);
  json j = json::parse(text);
  EXPECT_EQ(j["formatVersion"], kFormatVersion);
  EXPECT_EQ(j["specFiles"][0]["content"], "#!/bin/sh\necho \"hi\" é\n");
  EXPECT_FALSE(j["specFiles"][1].contains("content"));
  EXPECT_TRUE(j["specFiles"][1].contains("contentBase64"));

  auto back = parse_manifest(text);
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  EXPECT_EQ(back->spec_files, m.spec_files);
  auto spec = stored_spec(*back);
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  EXPECT_EQ(spec->name, "app");
  ASSERT_EQ(spec->files.size(), 2u);
  EXPECT_EQ(spec->files[0].path, "/app/run");
  EXPECT_EQ(spec->files[0].mode, 0755u);
  EXPECT_EQ(*spec->files[1].content, binary);
  // The YAML the manifest keeps has no file contents for the spec parser to scan.
  EXPECT_EQ(j["spec"].get<std::string>().find("#!/bin/sh"), std::string::npos);
}

TEST(Manifest, FormatOneImagesKeepTheirFilesInTheYaml) {
  Manifest m = manifest_with_files({});
  m.spec_yaml = std::string(kYaml) + "files:\n  - path: /app/x\n    content: \"x\"\n";
  json j = json::parse(to_json(m));
  j["formatVersion"] = 1;
  j.erase("specFiles");
  auto back = parse_manifest(j.dump());
  ASSERT_TRUE(back.ok()) << back.error().to_string();
  auto spec = stored_spec(*back);
  ASSERT_TRUE(spec.ok()) << spec.error().to_string();
  ASSERT_EQ(spec->files.size(), 1u);
  EXPECT_EQ(*spec->files[0].content, "x");
}

TEST(Manifest, BadSpecFilesAreRefusedNamingTheField) {
  const std::string good = to_json(manifest_with_files({file("/app/run", "x")}));
  auto with_files = [&](const json& files) {
    json j = json::parse(good);
    j["specFiles"] = files;
    return j.dump();
  };
  json no_files = json::parse(good);
  no_files.erase("specFiles");
  const std::pair<std::string, std::string> unparsable[] = {
      {no_files.dump(), "manifest.specFiles: missing"},
      {with_files(json::object()), "manifest.specFiles: not a list"},
      {with_files({{{"path", "/a"}, {"mode", 420}}}), "manifest.specFiles[0].content: exactly one"},
      {with_files({{{"path", "/a"}, {"mode", 420}, {"content", "x"}, {"contentBase64", "eA=="}}}),
       "manifest.specFiles[0].content: exactly one"},
      {with_files({{{"path", "/a"}, {"mode", 420}, {"contentBase64", "e"}}}),
       "manifest.specFiles[0].contentBase64: not base64"},
      {with_files({{{"path", "/a"}, {"mode", -1}, {"content", "x"}}}),
       "manifest.specFiles[0].mode: wrong type"},
      {with_files({{{"path", 1}, {"mode", 420}, {"content", "x"}}}),
       "manifest.specFiles[0].path: wrong type"},
  };
  for (const auto& [text, message] : unparsable) {
    auto r = parse_manifest(text);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.error().message().find(message), std::string::npos) << r.error().message();
  }
  // Parsed, but not a valid spec: the spec's own rules apply to the files beside it.
  const std::pair<std::vector<spec::FileEntry>, std::string> invalid[] = {
      {{file("app/run", "x")}, "manifest.specFiles[0].path: must be an absolute path"},
      {{file("/app/../etc/passwd", "x")}, "manifest.specFiles[0].path: must not contain \"..\""},
      {{file("/a", "x"), file("/./a", "y")}, "manifest.specFiles[1].path: \"/a\" is already placed by manifest.specFiles[0]"},
      {{file("/a", "x", 010000)}, "manifest.specFiles[0].mode: must be at most 07777"},
  };
  for (const auto& [files, message] : invalid) {
    auto parsed = parse_manifest(to_json(manifest_with_files(files)));
    ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
    auto spec = stored_spec(*parsed);
    ASSERT_FALSE(spec.ok()) << message;
    EXPECT_NE(spec.error().message().find(message), std::string::npos) << spec.error().message();
  }
  // Files in both places are ambiguous.
  Manifest both = manifest_with_files({file("/a", "x")});
  both.spec_yaml = std::string(kYaml) + "files:\n  - path: /b\n    content: \"y\"\n";
  auto spec = stored_spec(*parse_manifest(to_json(both)));
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.error().message().find("given both in the YAML and in manifest.specFiles"),
            std::string::npos)
      << spec.error().message();
}

}  // namespace
}  // namespace prewarm::image
