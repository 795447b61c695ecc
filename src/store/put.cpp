// Storing an image: verify it, cut every file into content-defined chunks, compress and
// write the chunks the store lacks (in parallel), then the config, the manifest and the index
// entry. Chunks already stored are found by their uncompressed SHA-256 in the configs of the
// indexed images, so unchanged content is neither compressed nor written again.
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>

#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "image/image.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {
namespace {

using namespace detail;

// Bytes read per round; the chunks of a round are hashed and compressed in parallel.
constexpr size_t kSegmentBytes = 16 << 20;

struct KnownChunk {
  std::string digest;
  uint64_t size = 0;
};

// uncompressed sha256 -> stored blob, from the images already indexed.
std::map<std::string, KnownChunk> known_chunks(const stdfs::path& root) {
  std::map<std::string, KnownChunk> known;
  auto entries = read_index(root);
  if (!entries.ok()) return known;
  for (const auto& e : *entries) {
    auto img = load_image(root, e.digest, static_cast<int64_t>(e.size));
    if (!img.ok()) {
      log::debug("store: not reusing chunks of " + e.name + ": " + img.error().message());
      continue;
    }
    for (const auto& f : img->config.files)
      for (const auto& c : f.chunks) known[c.sha256] = {c.digest, img->layer_sizes[c.digest]};
  }
  return known;
}

struct ChunkOut {
  ChunkRef ref;
  uint64_t compressed = 0;
  bool wrote = false;
};

class Putter {
 public:
  Putter(const stdfs::path& root, const PutOptions& opts)
      : root_(root), opts_(opts), chunker_(kDefaultChunking), known_(known_chunks(root)) {}

  Result<FileEntry> store_file(const stdfs::path& path, const image::FileDigest& expect) {
    FileEntry fe{expect.path, expect.size, expect.sha256, {}};
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) return Error::sys("open", errno, path.string());
    Sha256Stream whole;
    std::string buf;
    uint64_t file_off = 0;  // offset of buf[0] in the file
    bool eof = false;
    while (!eof || !buf.empty()) {
      // Fill the buffer up to a segment.
      while (!eof && buf.size() < kSegmentBytes) {
        size_t old = buf.size();
        buf.resize(kSegmentBytes);
        ssize_t n = ::read(fd.get(), buf.data() + old, kSegmentBytes - old);
        if (n < 0 && errno == EINTR) {
          buf.resize(old);
          continue;
        }
        if (n < 0) return Error::sys("read", errno, path.string());
        buf.resize(old + static_cast<size_t>(n));
        if (n == 0) eof = true;
      }
      // Cut it; without EOF the tail after the last final cut waits for more data.
      std::vector<std::pair<size_t, size_t>> cuts;  // {offset in buf, length}
      size_t pos = 0;
      const auto* p = reinterpret_cast<const uint8_t*>(buf.data());
      while (pos < buf.size()) {
        size_t n = chunker_.next_cut(p + pos, buf.size() - pos, eof);
        if (n == 0) break;
        cuts.emplace_back(pos, n);
        pos += n;
      }
      std::vector<ChunkOut> outs(cuts.size());
      // One more task than chunks: the whole-file hash runs beside the chunks.
      PW_TRY(parallel_for(cuts.size() + 1, worker_count(opts_.threads), [&](size_t i) -> Status {
        if (i == 0) {
          whole.update(buf.data(), pos);
          return {};
        }
        --i;
        return store_chunk(std::string_view(buf).substr(cuts[i].first, cuts[i].second),
                           file_off + cuts[i].first, outs[i]);
      }));
      for (auto& o : outs) record(o, fe);
      buf.erase(0, pos);
      file_off += pos;
    }
    if (file_off != expect.size || whole.final_hex() != expect.sha256)
      return Error(path.string() +
                   " changed while it was being stored (size or SHA-256 no "
                   "longer match its manifest); store the image again once it is quiet");
    return fe;
  }

  // Makes the chunk blobs written so far durable.
  Status sync() { return sync_files(written_); }

  void fill(PutResult& r, std::vector<Descriptor>& layers) const {
    r.chunks = chunk_refs_;
    r.unique_chunks = order_.size();
    for (const auto& d : order_) {
      const auto& u = unique_.at(d);
      layers.push_back({kChunkMediaType, d, u.size});
      r.total_compressed_bytes += u.size;
      if (u.wrote) {
        ++r.new_chunks;
        r.new_compressed_bytes += u.size;
      }
    }
    r.reused_raw_bytes = reused_raw_;
  }

 private:
  // Hashes one chunk and makes sure a good blob of it is stored.
  Status store_chunk(std::string_view data, uint64_t offset, ChunkOut& out) {
    out.ref.offset = offset;
    out.ref.length = data.size();
    out.ref.sha256 = sha256_hex(data);
    if (auto it = known_.find(out.ref.sha256); it != known_.end()) {
      if (check_blob(root_, it->second.digest, static_cast<int64_t>(it->second.size)).empty()) {
        out.ref.digest = it->second.digest;
        out.compressed = it->second.size;
        return {};
      }
    }
    PW_ASSIGN(std::string z, compress(data, opts_.zstd_level));
    out.ref.digest = digest_of(z);
    out.compressed = z.size();
    PW_ASSIGN(out.wrote, write_blob(root_, out.ref.digest, z, false));
    if (out.wrote) {
      std::lock_guard lock(mu_);
      written_.push_back(blob_file(root_, out.ref.digest));
    }
    return {};
  }

  // In file order, single-threaded: counts a chunk as new only for its first occurrence.
  void record(ChunkOut& o, FileEntry& fe) {
    ++chunk_refs_;
    auto [it, first] = unique_.try_emplace(o.ref.digest, Unique{o.compressed, o.wrote});
    if (first) {
      order_.push_back(o.ref.digest);
      if (!o.wrote) reused_raw_ += o.ref.length;
    } else {
      it->second.wrote = it->second.wrote || o.wrote;
      reused_raw_ += o.ref.length;
    }
    fe.chunks.push_back(std::move(o.ref));
  }

  struct Unique {
    uint64_t size = 0;
    bool wrote = false;
  };

  stdfs::path root_;
  PutOptions opts_;
  Chunker chunker_;
  const std::map<std::string, KnownChunk> known_;
  std::map<std::string, Unique> unique_;
  std::vector<std::string> order_;  // unique digests, first occurrence first
  uint64_t chunk_refs_ = 0;
  uint64_t reused_raw_ = 0;
  std::mutex mu_;
  std::vector<stdfs::path> written_;
};

}  // namespace

Result<PutResult> Store::put(const stdfs::path& image_dir, const std::string& name,
                             const PutOptions& opts) const {
  Stopwatch sw;
  PW_TRY(check_name(name));
  std::string where = "store image " + image_dir.string() + " as " + name;
  image::VerifyOptions vo;
  vo.force_full = true;
  auto verified = image::open_verified(image_dir, vo);
  if (!verified.ok()) return std::move(verified).error().with_context(where);
  auto manifest_text = fs::read_file(image_dir / image::kManifestFile, image::kMaxManifestBytes);
  if (!manifest_text.ok()) return std::move(manifest_text).error().with_context(where);
  auto parsed = image::parse_manifest(*manifest_text);
  if (!parsed.ok()) return std::move(parsed).error().with_context(where);
  const image::Manifest& m = *parsed;
  if (image::to_json(m) != image::to_json(*verified))
    return Error(where + ": manifest.json changed while it was being stored");

  PW_ASSIGN(Lease lease, this->lease());
  Putter putter(root_, opts);
  ImageConfig config;
  config.manifest_json = *manifest_text;
  config.chunker = kDefaultChunking;
  config.zstd_level = opts.zstd_level;
  PutResult r;
  for (const auto& f : m.files) {
    auto fe = putter.store_file(image_dir / f.path, f);
    if (!fe.ok()) return std::move(fe).error().with_context(where);
    r.raw_bytes += f.size;
    config.files.push_back(std::move(fe).value());
  }
  if (auto s = putter.sync(); !s.ok()) return std::move(s).error().with_context(where);
  OciManifest om;
  putter.fill(r, om.layers);
  std::string config_json = to_json(config);
  if (config_json.size() > kMaxJsonBytes)
    return Error(where + ": its chunk list (" + std::to_string(r.chunks) +
                 " chunks) is larger "
                 "than the 16 MiB a config may have; images of this size are not supported");
  om.config = {kConfigMediaType, digest_of(config_json), config_json.size()};
  PW_TRY(write_blob(root_, om.config.digest, config_json));
  om.annotations = image_annotations(name, m, r.raw_bytes);
  std::string manifest_json = to_json(om);
  r.manifest_digest = digest_of(manifest_json);
  PW_TRY(write_blob(root_, r.manifest_digest, manifest_json));
  // Blobs are durable before the index points at them.
  PW_TRY(fsync_dir(blobs_dir(root_)));
  PW_TRY(index_upsert(
      root_, make_index_entry(name, r.manifest_digest, manifest_json.size(), om.annotations)));
  r.seconds = sw.seconds();
  return r;
}

}  // namespace prewarm::store
