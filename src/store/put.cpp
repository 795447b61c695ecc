// Storing an image: verify it, cut every file into content-defined chunks, compress the chunks
// the store lacks (in parallel) and pack them, in file order, into new pack blobs; then the
// config, the manifest and the index entry. Chunks already stored are found by their
// uncompressed SHA-256 in the configs of the indexed images, so unchanged content is neither
// compressed nor written again: it is referenced where it lies, in an older pack.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

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
// Compressed frames per pack before it is sealed and written as a blob.
constexpr size_t kPackBytes = 2 << 20;

// A chunk already in a stored pack.
struct KnownChunk {
  std::string pack;
  uint64_t pack_size = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// uncompressed sha256 -> its frame in a stored pack, from the images already indexed.
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
      for (const auto& c : f.chunks)
        known[c.sha256] = {c.digest, img->layer_sizes[c.digest], c.pack_offset, c.pack_length};
  }
  return known;
}

struct ChunkOut {
  ChunkRef ref;       // ref.digest set: the chunk is in a stored pack already
  std::string frame;  // otherwise its compressed frame
};

// Cuts files into chunks, finds the ones the store has, and packs the new ones. Chunk refs
// into packs still being filled are patched with the pack's digest when it is sealed.
class Putter {
 public:
  Putter(const stdfs::path& root, const PutOptions& opts, ChunkerParams chunking)
      : root_(root), opts_(opts), chunker_(chunking), known_(known_chunks(root)) {}

  Status store_file(const stdfs::path& path, const image::FileDigest& expect) {
    const size_t file_index = files_.size();
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
        return prepare_chunk(std::string_view(buf).substr(cuts[i].first, cuts[i].second),
                             file_off + cuts[i].first, outs[i]);
      }));
      for (auto& o : outs) PW_TRY(record(o, fe, file_index));
      buf.erase(0, pos);
      file_off += pos;
    }
    if (file_off != expect.size || whole.final_hex() != expect.sha256)
      return Error(path.string() +
                   " changed while it was being stored (size or SHA-256 no "
                   "longer match its manifest); store the image again once it is quiet");
    files_.push_back(std::move(fe));
    return {};
  }

  // Seals the last pack, fills in the pack digests and makes the written packs durable.
  Status finish() {
    PW_TRY(seal());
    for (const auto& [file, chunk, seq] : patches_) files_[file].chunks[chunk].digest = sealed_[seq];
    return sync_files(written_);
  }

  std::vector<FileEntry> take_files() { return std::move(files_); }

  void fill(PutResult& r, std::vector<Descriptor>& layers) const {
    r.chunks = chunk_refs_;
    r.unique_chunks = seen_.size();
    r.new_chunks = new_chunks_;
    r.new_compressed_bytes = new_bytes_;
    r.total_compressed_bytes = unique_bytes_;
    r.reused_raw_bytes = reused_raw_;
    r.packs = layers_.size();
    r.new_packs = sealed_.size();
    // By digest: storing the same content again gives the same manifest, however its packs
    // came to be.
    auto sorted = layers_;
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [digest, size] : sorted) layers.push_back({kPackMediaType, digest, size});
  }

 private:
  struct Pending {  // a chunk written by this put
    size_t seq;     // of its pack
    uint64_t offset, length;
  };

  // Hashes one chunk; compresses it unless a good pack already holds it. (Parallel.)
  Status prepare_chunk(std::string_view data, uint64_t offset, ChunkOut& out) {
    out.ref.offset = offset;
    out.ref.length = data.size();
    out.ref.sha256 = sha256_hex(data);
    if (auto it = known_.find(out.ref.sha256); it != known_.end() && pack_ok(it->second)) {
      out.ref.digest = it->second.pack;
      out.ref.pack_offset = it->second.offset;
      out.ref.pack_length = it->second.length;
      return {};
    }
    PW_ASSIGN(out.frame, compress(data, opts_.zstd_level));
    return {};
  }

  // A stored pack is re-hashed once per put before anything new points into it.
  bool pack_ok(const KnownChunk& k) {
    {
      std::lock_guard lock(mu_);
      if (auto it = pack_ok_.find(k.pack); it != pack_ok_.end()) return it->second;
    }
    bool ok = check_blob(root_, k.pack, static_cast<int64_t>(k.pack_size)).empty();
    std::lock_guard lock(mu_);
    pack_ok_[k.pack] = ok;
    return ok;
  }

  // In file order, single-threaded: places the chunk and counts it.
  Status record(ChunkOut& o, FileEntry& fe, size_t file_index) {
    ++chunk_refs_;
    const bool first = seen_.insert(o.ref.sha256).second;
    if (!o.ref.digest.empty()) {
      if (layer_set_.insert(o.ref.digest).second)
        layers_.emplace_back(o.ref.digest, known_.at(o.ref.sha256).pack_size);
      reused_raw_ += o.ref.length;
    } else if (auto it = pending_.find(o.ref.sha256); it != pending_.end()) {
      o.ref.pack_offset = it->second.offset;
      o.ref.pack_length = it->second.length;
      patches_.push_back({file_index, fe.chunks.size(), it->second.seq});
      reused_raw_ += o.ref.length;
    } else {
      o.ref.pack_offset = pack_.size();
      o.ref.pack_length = o.frame.size();
      pending_[o.ref.sha256] = {sealed_.size(), o.ref.pack_offset, o.ref.pack_length};
      patches_.push_back({file_index, fe.chunks.size(), sealed_.size()});
      pack_ += o.frame;
      ++new_chunks_;
      new_bytes_ += o.frame.size();
    }
    if (first) unique_bytes_ += o.ref.pack_length;
    o.frame.clear();
    fe.chunks.push_back(std::move(o.ref));
    return pack_.size() >= kPackBytes ? seal() : Status{};
  }

  // Writes the pack being filled (not yet durable: finish() syncs it before any reference).
  Status seal() {
    if (pack_.empty()) return {};
    std::string digest = digest_of(pack_);
    PW_ASSIGN(bool wrote, write_blob(root_, digest, pack_, false));
    if (wrote) written_.push_back(blob_file(root_, digest));
    if (layer_set_.insert(digest).second) layers_.emplace_back(digest, pack_.size());
    sealed_.push_back(digest);
    pack_.clear();
    return {};
  }

  stdfs::path root_;
  PutOptions opts_;
  Chunker chunker_;
  const std::map<std::string, KnownChunk> known_;
  std::mutex mu_;
  std::map<std::string, bool> pack_ok_;  // guarded by mu_

  std::vector<FileEntry> files_;
  std::string pack_;                                 // frames of the pack being filled
  std::vector<std::string> sealed_;                  // digests of this put's packs, by seq
  std::map<std::string, Pending> pending_;           // sha256 -> where this put wrote it
  std::vector<std::tuple<size_t, size_t, size_t>> patches_;  // file, chunk, pack seq
  std::vector<std::pair<std::string, uint64_t>> layers_;     // packs used, first use first
  std::set<std::string> layer_set_;
  std::set<std::string> seen_;
  std::vector<stdfs::path> written_;
  uint64_t chunk_refs_ = 0, new_chunks_ = 0, new_bytes_ = 0, unique_bytes_ = 0, reused_raw_ = 0;
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
  uint64_t raw_total = 0;
  for (const auto& f : m.files) raw_total += f.size;
  const ChunkerParams chunking = chunking_for(raw_total);
  Putter putter(root_, opts, chunking);
  ImageConfig config;
  config.manifest_json = *manifest_text;
  config.chunker = chunking;
  config.zstd_level = opts.zstd_level;
  PutResult r;
  for (const auto& f : m.files) {
    if (auto s = putter.store_file(image_dir / f.path, f); !s.ok())
      return std::move(s).error().with_context(where);
    r.raw_bytes += f.size;
  }
  if (auto s = putter.finish(); !s.ok()) return std::move(s).error().with_context(where);
  config.files = putter.take_files();
  OciManifest om;
  putter.fill(r, om.layers);
  std::string config_json = to_json(config);
  if (config_json.size() > kMaxJsonBytes)
    return Error(where + ": its chunk list (" + std::to_string(r.chunks) +
                 " chunks) is larger "
                 "than the 16 MiB a config may have; images of this size are not supported");
  om.config = {kConfigMediaType, digest_of(config_json), config_json.size()};
  PW_TRY(write_blob(root_, om.config.digest, config_json));
  om.annotations = image_annotations(name, m, r.raw_bytes, sha256_hex(*manifest_text));
  std::string manifest_json = to_json(om);
  r.manifest_digest = digest_of(manifest_json);
  PW_TRY(write_blob(root_, r.manifest_digest, manifest_json));
  // Blobs are durable before the index points at them.
  PW_TRY(fsync_dir(blobs_dir(root_)));
  PW_TRY(index_upsert(
      root_, make_index_entry(name, r.manifest_digest, manifest_json.size(), om.annotations)));
  // Readers of single pages (lazy restores) then need not parse the config; best effort.
  if (auto table = make_chunk_table(config); table.ok()) keep_chunk_table(root_, om.config.digest, *table);
  r.seconds = sw.seconds();
  return r;
}

}  // namespace prewarm::store
