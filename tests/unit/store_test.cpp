#include "store/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/sha256.h"
#include "image/image.h"
#include "store/chunker.h"
#include "store/internal.h"
#include "support/files.h"

namespace prewarm::store {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using testing::slurp;
using testing::spit;
using testing::TempDir;

// Memory-like content: random pages, text-like pages and zero pages, so chunks compress
// somewhat and vary.
std::string memory_like(size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(bytes, '\0');
  for (size_t page = 0; page * 4096 < bytes; ++page) {
    size_t begin = page * 4096, end = std::min(bytes, begin + 4096);
    switch (rng() % 3) {
      case 0:
        for (size_t i = begin; i < end; ++i) out[i] = static_cast<char>(rng());
        break;
      case 1:
        for (size_t i = begin; i < end; ++i) out[i] = "abcdefgh ijkl\n"[rng() % 14];
        break;
      default:
        break;  // zeros
    }
  }
  return out;
}

image::Manifest manifest_for(const std::string& name) {
  image::Manifest m;
  m.name = name;
  m.created = "2026-11-26T09:19:50Z";
  m.spec_yaml = "name: " + name + "\n";
  m.rootfs_id = "debootstrap:abc";
  m.rootfs_dir = "/var/cache/prewarm/rootfs/abc";
  m.host = {"6.1.0", "x86_64", "Test CPU", "4.2.1", "1.1.5+ds1"};
  m.timings_s = {{"checkpoint", 0.25}};
  return m;
}

void make_image(const stdfs::path& dir, const std::string& name, const std::string& pages) {
  spit(dir / "checkpoint/pages-1.img", pages);
  spit(dir / "checkpoint/core-1.img", "core of " + name);
  spit(dir / "checkpoint/empty.img", "");
  spit(dir / "rootfs-diff.tar", std::string(10240, 't'));
  spit(dir / "host/cpuinfo.img", "cpuinfo");
  ASSERT_TRUE(image::seal(dir, manifest_for(name)).ok());
}

std::string flip_pages(std::string data, double share, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (size_t p = 0; p * 4096 < data.size(); ++p)
    if (std::uniform_real_distribution<>(0, 1)(rng) < share) data[p * 4096 + rng() % 4096] ^= 0x5a;
  return data;
}

// Files of an image directory, relative path -> content.
// The image's files; not the store digest a materialized copy records beside them.
std::map<std::string, std::string> contents(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : stdfs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename() != image::kStoreDigestFile)
      out[stdfs::relative(e.path(), dir).string()] = slurp(e.path());
  return out;
}

std::vector<std::string> layer_digests(const Store& s, const std::string& name) {
  auto m = s.read_manifest(name);
  EXPECT_TRUE(m.ok());
  std::vector<std::string> out;
  json j = json::parse(m->first);
  for (const auto& l : j["layers"]) out.push_back(l["digest"]);
  return out;
}

void corrupt(const stdfs::path& p) {
  std::string data = slurp(p);
  data[data.size() / 2] ^= 1;
  ::chmod(p.c_str(), 0600);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = Store::open(tmp_.path() / "store");
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    store_.emplace(std::move(s).value());
    pages_ = memory_like(24 << 20, 1);  // a couple of dozen chunks at the default sizes
    make_image(tmp_.path() / "img-a", "app-a", pages_);
  }
  Store& store() { return *store_; }
  stdfs::path path(const std::string& rel) { return tmp_.path() / rel; }

  TempDir tmp_{"store-test"};
  std::optional<Store> store_;
  std::string pages_;
};

TEST(Chunker, SizesWithinBoundsAndDeterministic) {
  Chunker c(kDefaultChunking);
  std::string data = memory_like(8 << 20, 7);
  auto cuts = c.split(data);
  size_t total = 0;
  for (size_t i = 0; i < cuts.size(); ++i) {
    total += cuts[i];
    EXPECT_LE(cuts[i], kDefaultChunking.max_size);
    if (i + 1 < cuts.size()) EXPECT_GE(cuts[i], kDefaultChunking.min_size);
  }
  EXPECT_EQ(total, data.size());
  EXPECT_EQ(cuts, c.split(data));
  EXPECT_GT(cuts.size(), data.size() / kDefaultChunking.max_size);  // smaller than max on average
}

// Large images get larger chunks, so a config's chunk list stays bounded at any size.
TEST(Chunker, ChunkSizesGrowWithTheImageSoConfigsStayBounded) {
  EXPECT_EQ(chunking_for(0).avg_size, kDefaultChunking.avg_size);
  EXPECT_EQ(chunking_for(uint64_t{1} << 30).avg_size, kDefaultChunking.avg_size);
  EXPECT_EQ(chunking_for((uint64_t{1} << 30) + 1).avg_size, 2 * kDefaultChunking.avg_size);
  for (uint64_t gib : {1, 3, 10, 100, 200}) {
    uint64_t raw = gib << 30;
    ChunkerParams p = chunking_for(raw);
    // ~240 bytes of config JSON per chunk.
    EXPECT_LT(raw / p.avg_size * 240, uint64_t{kMaxJsonBytes}) << gib << " GiB";
    EXPECT_EQ(p.avg_size & (p.avg_size - 1), 0u);
    EXPECT_LE(p.max_size, 16u << 20);
  }
}

TEST(Chunker, BoundariesSurviveAnInsertion) {
  Chunker c(kDefaultChunking);
  std::string a = memory_like(8 << 20, 3);
  std::string b = a;
  b.insert(3 << 20, "an insertion that shifts everything after it");
  auto hashes = [&](const std::string& d) {
    std::set<std::string> out;
    size_t off = 0;
    for (size_t n : c.split(d)) {
      out.insert(sha256_hex(std::string_view(d).substr(off, n)));
      off += n;
    }
    return out;
  };
  auto ha = hashes(a), hb = hashes(b);
  size_t shared = 0;
  for (const auto& h : hb) shared += ha.count(h);
  // Only the chunk(s) around the insertion differ.
  EXPECT_GE(shared + 3, hb.size());
  EXPECT_LT(shared, hb.size());
}

TEST_F(StoreTest, PutAndMaterializeRoundTripIsByteExact) {
  auto r = store().put(path("img-a"), "app-a");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->new_chunks, r->unique_chunks);
  EXPECT_GT(r->raw_bytes, 3u << 20);
  EXPECT_LT(r->total_compressed_bytes, r->raw_bytes);

  auto m = store().materialize("app-a", path("out/a"));
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(contents(path("out/a")), contents(path("img-a")));
  EXPECT_EQ(slurp(path("out/a") / image::kStoreDigestFile), r->manifest_digest + "\n");
  struct stat st {};
  ASSERT_EQ(::stat(path("out/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(path("out/a/checkpoint").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat(path("out/a/checkpoint/pages-1.img").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(image::open_verified(path("out/a"), {}).ok());
  // No temporary directory left beside it.
  size_t entries = 0;
  for ([[maybe_unused]] auto& e : stdfs::directory_iterator(path("out"))) ++entries;
  EXPECT_EQ(entries, 1u);

  // An existing destination is refused unless replace is asked for.
  auto again = store().materialize("app-a", path("out/a"));
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("already exists"), std::string::npos);
  spit(path("out/a/stray"), "x");
  MaterializeOptions o;
  o.replace = true;
  ASSERT_TRUE(store().materialize("app-a", path("out/a"), o).ok());
  EXPECT_FALSE(stdfs::exists(path("out/a/stray")));
  EXPECT_EQ(contents(path("out/a")), contents(path("img-a")));
}

TEST_F(StoreTest, SecondImageStoresOnlyChangedChunks) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  make_image(path("img-b"), "app-b", flip_pages(pages_, 0.0003, 9));
  auto r = store().put(path("img-b"), "app-b");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  std::printf("dedup: %llu of %llu chunks new, %llu of %llu compressed bytes new, ratio %.2f\n",
              (unsigned long long)r->new_chunks, (unsigned long long)r->unique_chunks,
              (unsigned long long)r->new_compressed_bytes,
              (unsigned long long)r->total_compressed_bytes, r->dedup_ratio());
  EXPECT_GT(r->dedup_ratio(), 0.6);
  EXPECT_LT(r->new_chunks * 3, r->unique_chunks);
  // Chunks are small and packed: a few changed pages cost about what they are, in one new pack.
  EXPECT_LT(r->new_compressed_bytes * 50, r->total_compressed_bytes);
  EXPECT_EQ(r->new_packs, 1u);
  // Storing the same image again adds nothing.
  auto same = store().put(path("img-b"), "app-b");
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->new_chunks, 0u);
  EXPECT_EQ(same->new_compressed_bytes, 0u);
  EXPECT_EQ(same->manifest_digest, r->manifest_digest);
  EXPECT_DOUBLE_EQ(same->dedup_ratio(), 1.0);
  ASSERT_TRUE(store().materialize("app-b", path("out/b")).ok());
  EXPECT_EQ(contents(path("out/b")), contents(path("img-b")));
}

TEST_F(StoreTest, CorruptBlobIsReportedAndDoesNotPoisonOtherImages) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  make_image(path("img-b"), "app-b", flip_pages(pages_, 0.01, 5));
  ASSERT_TRUE(store().put(path("img-b"), "app-b").ok());
  // B's changed chunks are in packs of its own; the rest of B points into A's packs.
  auto la = layer_digests(store(), "app-a"), lb = layer_digests(store(), "app-b");
  std::set<std::string> in_a(la.begin(), la.end());
  std::string only_b, shared;
  for (const auto& d : lb) (in_a.count(d) ? shared : only_b) = d;
  ASSERT_FALSE(only_b.empty());
  ASSERT_FALSE(shared.empty());
  corrupt(*store().blob_path(only_b));

  auto v = store().verify("app-b");
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->problems.size(), 1u);
  EXPECT_EQ(v->problems[0].digest, only_b);
  EXPECT_EQ(v->problems[0].images, std::vector<std::string>{"app-b"});
  EXPECT_NE(v->describe().find(only_b), std::string::npos);
  EXPECT_TRUE(store().verify("app-a")->ok());

  auto m = store().materialize("app-b", path("out/b"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find(only_b), std::string::npos) << m.error().message();
  EXPECT_FALSE(stdfs::exists(path("out/b")));
  ASSERT_TRUE(store().materialize("app-a", path("out/a")).ok());
  EXPECT_EQ(contents(path("out/a")), contents(path("img-a")));

  // Storing the image again puts what the damaged pack held into a good new one.
  auto again = store().put(path("img-b"), "app-b");
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_GT(again->new_chunks, 0u);
  EXPECT_TRUE(store().verify("app-b")->ok()) << store().verify("app-b")->describe();
  ASSERT_TRUE(store().materialize("app-b", path("out/b")).ok());
  EXPECT_EQ(contents(path("out/b")), contents(path("img-b")));

  // A shared pack names both images; it stays in place (reported, not removed).
  corrupt(*store().blob_path(shared));
  auto all = store().verify_all();
  ASSERT_TRUE(all.ok());
  bool named_both = false;
  for (const auto& p : all->problems)
    if (p.digest == shared)
      named_both = p.images == std::vector<std::string>{"app-a", "app-b"};
  EXPECT_TRUE(named_both) << all->describe();
  EXPECT_TRUE(store().has_blob(shared));
  auto ma = store().materialize("app-a", path("out/a2"));
  ASSERT_FALSE(ma.ok());
  EXPECT_NE(ma.error().message().find(shared), std::string::npos) << ma.error().message();
}

// Images stored by format 1 (every chunk a blob of its own) stay readable, and new images
// reuse their chunks: upgrading prewarm loses no stored image.
TEST_F(StoreTest, FormatOneImagesStayReadableAndShareTheirChunks) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  // Rewrite app-a the way format 1 stored it.
  const stdfs::path blobs = store().root() / "blobs" / "sha256";
  auto [mtext, mdigest] = *store().read_manifest("app-a");
  json m = json::parse(mtext);
  json config = json::parse(slurp(blobs / m["config"]["digest"].get<std::string>().substr(7)));
  std::set<std::string> packs;
  json layers = json::array();
  std::set<std::string> frames;
  for (auto& f : config["files"])
    for (auto& c : f["chunks"]) {
      std::string pack = c["digest"];
      packs.insert(pack);
      std::string frame = slurp(blobs / pack.substr(7))
                              .substr(c["packOffset"].get<size_t>(), c["packLength"].get<size_t>());
      std::string digest = "sha256:" + sha256_hex(frame);
      spit(blobs / digest.substr(7), frame);
      if (frames.insert(digest).second)
        layers.push_back({{"mediaType", "application/vnd.prewarm.checkpoint.chunk.v1.zstd"},
                          {"digest", digest},
                          {"size", frame.size()}});
      c["digest"] = digest;
      c.erase("packOffset");
      c.erase("packLength");
    }
  config["formatVersion"] = 1;
  std::string ctext = config.dump();
  spit(blobs / sha256_hex(ctext), ctext);
  m["config"]["digest"] = "sha256:" + sha256_hex(ctext);
  m["config"]["size"] = ctext.size();
  m["layers"] = layers;
  std::string new_mtext = m.dump();
  spit(blobs / sha256_hex(new_mtext), new_mtext);
  json index = json::parse(slurp(store().root() / "index.json"));
  for (auto& e : index["manifests"])
    if (e["digest"] == mdigest) {
      e["digest"] = "sha256:" + sha256_hex(new_mtext);
      e["size"] = new_mtext.size();
    }
  spit(store().root() / "index.json", index.dump());
  for (const auto& p : packs) stdfs::remove(blobs / p.substr(7));

  EXPECT_TRUE(store().verify_all()->ok()) << store().verify_all()->describe();
  ASSERT_TRUE(store().materialize("app-a", path("out/a")).ok());
  EXPECT_EQ(contents(path("out/a")), contents(path("img-a")));
  // A new image points into the old chunk blobs for what it shares with app-a.
  make_image(path("img-b"), "app-b", flip_pages(pages_, 0.0003, 9));
  auto b = store().put(path("img-b"), "app-b");
  ASSERT_TRUE(b.ok()) << b.error().to_string();
  EXPECT_GT(b->dedup_ratio(), 0.9);
  ASSERT_TRUE(store().materialize("app-b", path("out/b")).ok());
  EXPECT_EQ(contents(path("out/b")), contents(path("img-b")));
}

TEST_F(StoreTest, TamperedIndexAndManifestAreDetected) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  auto [text, digest] = *store().read_manifest("app-a");
  stdfs::path mpath = *store().blob_path(digest);

  // A manifest blob edited in place.
  std::string edited = text;
  edited.replace(edited.find("app-a"), 5, "app-x");
  spit(mpath, edited);
  auto r = store().read_manifest("app-a");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(digest), std::string::npos) << r.error().message();
  auto m = store().materialize("app-a", path("out/a"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find(digest), std::string::npos);
  auto v = store().verify("app-a");
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->problems.size(), 1u);
  EXPECT_EQ(v->problems[0].digest, digest);
  // gc refuses to guess what a damaged manifest references.
  auto g = store().gc({}, GcOptions{std::chrono::seconds(0), std::chrono::seconds(3600)});
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("nothing was removed"), std::string::npos);
  spit(mpath, text);

  // An index pointing at a manifest that is not there.
  stdfs::path index = store().root() / "index.json";
  std::string good_index = slurp(index);
  std::string bad = good_index;
  bad.replace(bad.find(digest.substr(7, 8)), 8, "00000000");
  spit(index, bad);
  m = store().materialize("app-a", path("out/a"));
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("missing"), std::string::npos) << m.error().message();
  // An index that is not JSON.
  spit(index, "{garbage");
  auto l = store().list();
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("index.json"), std::string::npos);
  spit(index, good_index);
  EXPECT_TRUE(store().materialize("app-a", path("out/a")).ok());
}

TEST_F(StoreTest, ConfigThatDisagreesWithItsManifestIsRefused) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  auto [text, digest] = *store().read_manifest("app-a");
  json m = json::parse(text);
  std::string config_digest = m["config"]["digest"];
  json config = json::parse(*store().read_blob(config_digest));
  config["files"][0]["sha256"] = std::string(64, 'a');
  std::string tampered = config.dump();
  stdfs::path tmp = store().temp_path();
  spit(tmp, tampered);
  std::string td = "sha256:" + sha256_hex(tampered);
  ASSERT_TRUE(store().add_blob_file(tmp, td).ok());
  m["config"]["digest"] = td;
  m["config"]["size"] = tampered.size();
  auto r = store().add_manifest("app-t", m.dump());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("does not match the embedded manifest"), std::string::npos)
      << r.error().message();
}

// JSON has one number type: a size of -1 must not wrap to 2^64-1, nor may a size exceed what
// the store reads of such a blob.
TEST_F(StoreTest, DescriptorSizesMustBeByteCountsWithinLimits) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  auto [text, digest] = *store().read_manifest("app-a");
  const json good = json::parse(text);
  for (auto [field, size, expected] :
       {std::tuple<const char*, json, std::string>{"layer", -1, "size: -1 is not a byte count"},
        {"layer", 1.5, "size: 1.5 is not a byte count"},
        {"layer", uint64_t{1} << 30, "size: 1073741824 is not a byte count from 0 to 67108864"},
        {"config", uint64_t{17} << 20, "size: 17825792 is not a byte count from 0 to 16777216"}}) {
    json m = good;
    (std::string(field) == "layer" ? m["layers"][0] : m["config"])["size"] = size;
    auto r = store().add_manifest("app-bad", m.dump());
    ASSERT_FALSE(r.ok()) << field << " " << size.dump();
    EXPECT_NE(r.error().message().find(expected), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalidInput);
  }
  // The index's own descriptors.
  stdfs::path index = store().root() / "index.json";
  json j = json::parse(slurp(index));
  j["manifests"][0]["size"] = -1;
  spit(index, j.dump());
  auto l = store().list();
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("manifests[0].size: -1 is not a byte count"),
            std::string::npos) << l.error().message();
}

TEST_F(StoreTest, GcRemovesOnlyUnreferencedBlobsAndKeepsProtectedOnes) {
  GcOptions now{std::chrono::seconds(0), std::chrono::seconds(3600)};
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  make_image(path("img-b"), "app-b", memory_like(1 << 20, 77));
  auto b = store().put(path("img-b"), "app-b");
  ASSERT_TRUE(b.ok());
  auto nothing = store().gc({}, now);
  ASSERT_TRUE(nothing.ok());
  EXPECT_EQ(nothing->removed_blobs, 0u);

  // Removed but protected (a running restore uses it): kept.
  ASSERT_TRUE(store().remove("app-b").ok());
  EXPECT_FALSE(store().remove("app-b").ok());
  auto kept = store().gc({b->manifest_digest}, now);
  ASSERT_TRUE(kept.ok()) << kept.error().to_string();
  EXPECT_EQ(kept->removed_blobs, 0u);
  // With the default grace period, young unreferenced blobs stay too.
  auto young = store().gc({});
  ASSERT_TRUE(young.ok());
  EXPECT_EQ(young->removed_blobs, 0u);
  EXPECT_GT(young->kept_young_blobs, 0u);

  auto freed = store().gc({}, now);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(freed->removed_blobs, b->new_packs + 2);  // its packs, config and manifest
  EXPECT_GT(freed->bytes_freed, b->new_compressed_bytes);
  EXPECT_FALSE(store().has_blob(b->manifest_digest));
  EXPECT_TRUE(store().verify_all()->ok());
  ASSERT_TRUE(store().materialize("app-a", path("out/a")).ok());
  EXPECT_EQ(contents(path("out/a")), contents(path("img-a")));
  auto l = store().list();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].name, "app-a");
}

TEST_F(StoreTest, ConcurrentPutsLeaveAConsistentIndex) {
  const int kImages = 4;
  for (int i = 0; i < kImages; ++i)
    make_image(path("img-" + std::to_string(i)), "app-" + std::to_string(i),
               flip_pages(pages_, 0.02, static_cast<uint64_t>(i)));
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kImages; ++i)
    threads.emplace_back([&, i] {
      // Each image twice, and everyone also writes "shared" (last one wins).
      for (const std::string& name : {"app-" + std::to_string(i), std::string("shared")}) {
        PutOptions o;
        o.threads = 2;
        if (!store().put(path("img-" + std::to_string(i)), name, o).ok()) ++failures;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);

  // Two processes as well.
  pid_t kids[2];
  for (int k = 0; k < 2; ++k) {
    kids[k] = ::fork();
    ASSERT_GE(kids[k], 0);
    if (kids[k] == 0) {
      auto s = Store::open(store().root());
      bool ok = s.ok();
      for (int round = 0; ok && round < 3; ++round)
        ok = s->put(path("img-" + std::to_string(k)), "proc-" + std::to_string(k)).ok() &&
             s->put(path("img-" + std::to_string(k + 2)), "proc-shared").ok();
      ::_exit(ok ? 0 : 1);
    }
  }
  for (pid_t kid : kids) {
    int status = 0;
    ASSERT_EQ(::waitpid(kid, &status, 0), kid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }

  auto l = store().list();
  ASSERT_TRUE(l.ok());
  std::set<std::string> names;
  for (const auto& e : *l) names.insert(e.name);
  EXPECT_EQ(names, (std::set<std::string>{"app-0", "app-1", "app-2", "app-3", "shared", "proc-0",
                                          "proc-1", "proc-shared"}));
  EXPECT_EQ(l->size(), names.size());
  auto v = store().verify_all();
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->ok()) << v->describe();
  for (int i = 0; i < kImages; ++i) {
    ASSERT_TRUE(
        store().materialize("app-" + std::to_string(i), path("out/" + std::to_string(i))).ok());
    EXPECT_EQ(contents(path("out/" + std::to_string(i))),
              contents(path("img-" + std::to_string(i))));
  }
}

TEST_F(StoreTest, GcWithoutTempFileAgeDropsPartialDownloadsAtOnce) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  stdfs::path partial = store().temp_path();
  spit(partial, std::string(4096, 'x'));
  store::GcOptions now;
  now.temp_file_age = std::chrono::seconds(0);
  auto r = store().gc({}, now);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->removed_temp_files, 1u);
  EXPECT_EQ(r->kept_temp_files, 0u);
  EXPECT_FALSE(stdfs::exists(partial));
  EXPECT_TRUE(store().verify_all()->ok());
}

TEST_F(StoreTest, LeftoverTempFilesDoNotBreakReadsAndGcCleansThem) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  stdfs::path blob_tmp = store().temp_path();
  spit(blob_tmp, "half a blob");
  stdfs::path index_tmp = store().root() / "index.json.tmp-0123abcd";
  spit(index_tmp, "{\"schemaVer");
  EXPECT_TRUE(store().list().ok());
  EXPECT_TRUE(store().verify_all()->ok());
  ASSERT_TRUE(store().materialize("app-a", path("out/a")).ok());

  auto fresh = store().gc({});
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->removed_temp_files, 0u);  // a partial download a pull may resume
  EXPECT_EQ(fresh->kept_temp_files, 1u);        // blobs dir only: what `gc` reports to the user
  EXPECT_EQ(fresh->kept_temp_bytes, std::string("half a blob").size());
  struct timespec old[2] = {{::time(nullptr) - 7200, 0}, {::time(nullptr) - 7200, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, blob_tmp.c_str(), old, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, index_tmp.c_str(), old, 0), 0);
  auto stale = store().gc({});
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->removed_temp_files, 2u);
  EXPECT_EQ(stale->removed_blobs, 0u);
  EXPECT_FALSE(stdfs::exists(blob_tmp));
  EXPECT_FALSE(stdfs::exists(index_tmp));
  EXPECT_TRUE(store().verify_all()->ok());
}

TEST_F(StoreTest, LayoutIsAValidOciImageLayout) {
  auto r = store().put(path("img-a"), "app-a");
  ASSERT_TRUE(r.ok());
  const stdfs::path& root = store().root();
  EXPECT_EQ(json::parse(slurp(root / "oci-layout")),
            json::parse(R"({"imageLayoutVersion":"1.0.0"})"));
  json index = json::parse(slurp(root / "index.json"));
  EXPECT_EQ(index["schemaVersion"], 2);
  EXPECT_EQ(index["mediaType"], "application/vnd.oci.image.index.v1+json");
  ASSERT_EQ(index["manifests"].size(), 1u);
  const json& d = index["manifests"][0];
  EXPECT_EQ(d["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(d["digest"], r->manifest_digest);
  EXPECT_EQ(d["annotations"]["org.opencontainers.image.ref.name"], "app-a");

  auto blob = [&](const std::string& digest) {
    stdfs::path p = root / "blobs" / "sha256" / digest.substr(7);
    std::string data = slurp(p);
    EXPECT_EQ("sha256:" + sha256_hex(data), digest) << "blob file name is its digest";
    return data;
  };
  std::string mtext = blob(d["digest"]);
  EXPECT_EQ(d["size"], mtext.size());
  json m = json::parse(mtext);
  EXPECT_EQ(m["schemaVersion"], 2);
  EXPECT_EQ(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m["artifactType"], "application/vnd.prewarm.checkpoint.v1");
  EXPECT_EQ(m["config"]["mediaType"], "application/vnd.prewarm.checkpoint.config.v1+json");
  EXPECT_EQ(m["config"]["size"], blob(m["config"]["digest"]).size());
  ASSERT_FALSE(m["layers"].empty());
  for (const auto& l : m["layers"]) {
    EXPECT_EQ(l["mediaType"], "application/vnd.prewarm.checkpoint.pack.v1.zstd");
    EXPECT_EQ(l["size"], blob(l["digest"]).size());
  }
  const json& a = m["annotations"];
  EXPECT_EQ(a["io.kubernetes.cri-o.annotations.checkpoint.name"], "app-a");
  EXPECT_EQ(a["org.criu.checkpoint.criu.version"], "40201");
  EXPECT_EQ(a["org.criu.checkpoint.engine.name"], "prewarm");
  EXPECT_EQ(a["org.criu.checkpoint.runtime.name"], "runc");
  EXPECT_EQ(a["org.criu.checkpoint.runtime.version"], "1.1.5+ds1");
  EXPECT_EQ(a["org.opencontainers.image.created"], "2026-11-26T09:19:50Z");
  EXPECT_EQ(a["org.prewarm.rootfs.id"], "debootstrap:abc");

  json config = json::parse(blob(m["config"]["digest"]));
  EXPECT_EQ(config["manifest"], slurp(path("img-a/manifest.json")));
  auto l = store().list();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].raw_bytes, r->raw_bytes);
  EXPECT_EQ((*l)[0].created, "2026-11-26T09:19:50Z");
  EXPECT_GT((*l)[0].stored_bytes, r->total_compressed_bytes);
}

TEST_F(StoreTest, RegistryHooksImportBlobsOnlyWithTheRightDigest) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  auto [text, digest] = *store().read_manifest("app-a");
  EXPECT_EQ("sha256:" + sha256_hex(text), digest);
  EXPECT_TRUE(store().has_blob(digest));
  EXPECT_FALSE(store().blob_path("sha256:xyz").ok());

  stdfs::path tmp = store().temp_path();
  spit(tmp, "blob content");
  auto wrong = store().add_blob_file(tmp, "sha256:" + std::string(64, '0'));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("hashes to"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(tmp));
  spit(tmp, "blob content");
  std::string good = "sha256:" + sha256_hex("blob content");
  ASSERT_TRUE(store().add_blob_file(tmp, good).ok());
  EXPECT_TRUE(store().has_blob(good));
  EXPECT_EQ(*store().read_blob(good), "blob content");

  // A pulled manifest goes in once its blobs are there; a missing layer is named.
  ASSERT_TRUE(store().remove("app-a").ok());
  auto added = store().add_manifest("pulled", text);
  ASSERT_TRUE(added.ok()) << added.error().to_string();
  EXPECT_EQ(*added, digest);
  ASSERT_TRUE(store().materialize("pulled", path("out/p")).ok());
  EXPECT_EQ(contents(path("out/p")), contents(path("img-a")));
  std::string layer = json::parse(text)["layers"][0]["digest"];
  stdfs::remove(*store().blob_path(layer));
  auto missing = store().add_manifest("again", text);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find(layer), std::string::npos);
}

TEST_F(StoreTest, RefusesBadNamesUnsealedImagesAndForeignDirectories) {
  EXPECT_FALSE(store().put(path("img-a"), "../evil").ok());
  EXPECT_FALSE(store().put(path("img-a"), "").ok());
  spit(path("img-a/checkpoint/extra.img"), "not sealed");
  auto r = store().put(path("img-a"), "app-a");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("extra.img"), std::string::npos);
  spit(path("foreign/file"), "x");
  EXPECT_FALSE(Store::open(path("foreign")).ok());
  EXPECT_TRUE(Store::open(store().root()).ok());
  EXPECT_FALSE(store().materialize("nope", path("out/n")).ok());
  // A lost index is an error, not an empty store (gc would then remove every blob).
  stdfs::rename(store().root() / "index.json", path("index.json.bak"));
  auto lost = Store::open(store().root());
  ASSERT_FALSE(lost.ok());
  EXPECT_NE(lost.error().message().find("index.json"), std::string::npos);
}


// The chunk table a put keeps for the image (one file under chunk-tables/).
stdfs::path only_chunk_table(const stdfs::path& store_root) {
  std::vector<stdfs::path> found;
  for (auto& e : stdfs::directory_iterator(store_root / "chunk-tables")) found.push_back(e.path());
  EXPECT_EQ(found.size(), 1u);
  return found.empty() ? stdfs::path() : found[0];
}

TEST_F(StoreTest, ImageReaderReadsRangesStraightFromThePacks) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  const stdfs::path table = only_chunk_table(path("store"));
  auto r = ImageReader::open(store(), "app-a");
  ASSERT_TRUE(r.ok()) << r.error().to_string();
  EXPECT_EQ(r->manifest_json(), slurp(path("img-a") / image::kManifestFile));
  const auto listed = r->files();
  std::map<std::string, uint64_t> files(listed.begin(), listed.end());
  EXPECT_EQ(files["checkpoint/pages-1.img"], pages_.size());
  // Ranges that start and end inside chunks and cross several.
  for (auto [off, len] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 1}, {4095, 2}, {1 << 20, 3 << 20}, {pages_.size() - 10, 10}, {12345, 0}}) {
    std::string got(len, '\0');
    ASSERT_TRUE(r->read("checkpoint/pages-1.img", off, len, got.data()).ok()) << off;
    EXPECT_EQ(got, pages_.substr(off, len)) << off;
  }
  std::string past(8, '\0');
  auto beyond = r->read("checkpoint/pages-1.img", pages_.size() - 4, 8, past.data());
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(beyond.error().kind(), ErrorKind::kInvalidInput);
  EXPECT_EQ(r->read("checkpoint/nope.img", 0, 1, past.data()).error().kind(), ErrorKind::kNotFound);
  ASSERT_TRUE(r->copy_file("checkpoint/core-1.img", path("out/core")).ok());
  EXPECT_EQ(slurp(path("out/core")), "core of app-a");
  // By manifest digest too (as the page server opens it), from the same kept table.
  auto by_digest = ImageReader::open(store(), r->manifest_digest());
  ASSERT_TRUE(by_digest.ok());
  EXPECT_EQ(by_digest->files(), r->files());
  EXPECT_TRUE(stdfs::exists(table));
}

TEST_F(StoreTest, DamagedOrForeignChunkTablesAreMadeAgainFromTheConfig) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  const stdfs::path table = only_chunk_table(path("store"));
  const std::string good = slurp(table);
  make_image(path("img-b"), "app-b", memory_like(1 << 20, 5));
  ASSERT_TRUE(store().put(path("img-b"), "app-b").ok());
  std::string other;
  for (auto& e : stdfs::directory_iterator(path("store/chunk-tables")))
    if (e.path() != table) other = slurp(e.path());
  ASSERT_FALSE(other.empty());

  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 1;
  for (const std::string& bad : {flipped, good.substr(0, good.size() - 100), std::string("x"), other}) {
    spit(table, bad);
    auto r = ImageReader::open(store(), "app-a");
    ASSERT_TRUE(r.ok()) << r.error().to_string();
    std::string got(100000, '\0');
    ASSERT_TRUE(r->read("checkpoint/pages-1.img", 500000, got.size(), got.data()).ok());
    EXPECT_EQ(got, pages_.substr(500000, got.size()));
    EXPECT_EQ(slurp(table), good) << "the table was made again";
  }
  stdfs::remove(table);
  ASSERT_TRUE(ImageReader::open(store(), "app-a").ok());
  EXPECT_EQ(slurp(table), good);
}

TEST_F(StoreTest, AChunkTableCannotMakeTheReaderServeOtherBytes) {
  // A table rewritten consistently (its own SHA-256 recomputed) but naming other content for a
  // chunk: each chunk read is still checked against it, and refused.
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  const stdfs::path table = only_chunk_table(path("store"));
  const std::string config = "sha256:" + table.filename().string();
  auto parsed = detail::parse_chunk_table(slurp(table), config);
  ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
  ASSERT_GT(parsed->chunks.size(), 2u);
  std::swap(parsed->chunks[0].sha256, parsed->chunks[1].sha256);
  spit(table, detail::serialize_chunk_table(*parsed, config));
  auto r = ImageReader::open(store(), "app-a");
  ASSERT_TRUE(r.ok());
  std::string got(1, '\0');
  // Which files hold chunks 0 and 1 depends on the manifest's order: read every file's start.
  bool refused = false;
  for (const auto& [p, size] : r->files()) {
    if (size == 0) continue;
    auto st = r->read(p, 0, 1, got.data());
    if (!st.ok()) {
      refused = true;
      EXPECT_NE(st.error().message().find("does not match its SHA-256"), std::string::npos)
          << st.error().to_string();
    }
  }
  EXPECT_TRUE(refused);
}

TEST_F(StoreTest, GcRemovesTheChunkTablesOfRemovedImages) {
  ASSERT_TRUE(store().put(path("img-a"), "app-a").ok());
  const stdfs::path table = only_chunk_table(path("store"));
  spit(path("store/chunk-tables/leftover.tmp-123"), "x");
  GcOptions now{std::chrono::seconds(0), std::chrono::seconds(0)};
  ASSERT_TRUE(store().gc({}, now).ok());
  EXPECT_TRUE(stdfs::exists(table));
  EXPECT_FALSE(stdfs::exists(path("store/chunk-tables/leftover.tmp-123")));
  ASSERT_TRUE(store().remove("app-a").ok());
  ASSERT_TRUE(store().gc({}, now).ok());
  EXPECT_FALSE(stdfs::exists(table));
}

}  // namespace
}  // namespace prewarm::store
