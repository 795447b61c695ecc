// Chunk tables: a stored image's chunk list in a compact binary form, so that reading a few
// pages of an image does not first parse its config (for a 1 GiB image, ~32k chunks and ~8 MB
// of JSON: tens of milliseconds, where reading the table is about one).
//
// A table is derived data, kept beside the OCI layout at STORE/chunk-tables/<config hex>: made
// from a verified config the first time it is needed (and by put and add_manifest), checked on
// every load (its body's SHA-256, the config digest it was made from, every index and range
// against the manifest that loads it), and simply made again when it is missing, torn or stale.
// gc removes the tables of configs it removed. Native byte order: a table never leaves its node.
#include <unistd.h>

#include <cstring>
#include <map>
#include <optional>

#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store::detail {
namespace {

constexpr char kMagic[8] = {'P', 'W', 'C', 'H', 'T', 'B', 'L', '1'};
constexpr uint32_t kVersion = 1;
// Bounds a damaged table's counts before anything is allocated for them.
constexpr uint64_t kMaxEntries = uint64_t{1} << 26;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  char config_hex[64];
  uint8_t body_sha256[32];
  uint64_t body_bytes;
};
static_assert(sizeof(Header) == 120, "no padding in the header");

void sha256_raw(std::string_view data, uint8_t out[32]) {
  const auto sum = sha256_bytes(data);
  std::memcpy(out, sum.data(), sum.size());
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

bool hex_to_raw(std::string_view hex, uint8_t out[32]) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void bytes(const void* p, size_t n) {
    if (n > 0) out_.append(static_cast<const char*>(p), n);
  }
  void str(std::string_view s) {
    put(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <typename T>
  bool get(T* v) {
    if (in_.size() < sizeof *v) return false;
    std::memcpy(v, in_.data(), sizeof *v);
    in_.remove_prefix(sizeof *v);
    return true;
  }
  bool bytes(void* p, size_t n) {
    if (n == 0) return true;  // p may be an empty vector's null data()
    if (in_.size() < n) return false;
    std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool str(std::string* s, size_t max) {
    uint32_t n = 0;
    if (!get(&n) || n > max || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }
  size_t remaining() const { return in_.size(); }

 private:
  std::string_view in_;
};

}  // namespace

Result<ChunkTable> make_chunk_table(const ImageConfig& config) {
  ChunkTable t;
  t.manifest_json = config.manifest_json;
  std::map<std::string, uint32_t> pack_index;
  for (const auto& f : config.files) {
    ChunkTable::File tf;
    tf.path = f.path;
    tf.size = f.size;
    tf.sha256 = f.sha256;
    tf.first = t.chunks.size();
    tf.count = f.chunks.size();
    for (const auto& r : f.chunks) {
      auto [it, added] = pack_index.emplace(r.digest, static_cast<uint32_t>(t.packs.size()));
      if (added) t.packs.push_back(r.digest);
      ChunkTable::Chunk c{};
      c.offset = r.offset;
      c.pack_offset = r.pack_offset;
      c.length = static_cast<uint32_t>(r.length);
      c.pack_length = static_cast<uint32_t>(r.pack_length);
      c.pack = it->second;
      if (!hex_to_raw(r.sha256, c.sha256))
        return Error(ErrorKind::kInvalidInput, f.path + ": chunk SHA-256 is not hex");
      t.chunks.push_back(c);
    }
    t.files.push_back(std::move(tf));
  }
  return t;
}

std::string serialize_chunk_table(const ChunkTable& t, const std::string& config_digest) {
  Writer body;
  body.str(t.manifest_json);
  body.put(static_cast<uint32_t>(t.packs.size()));
  for (const auto& p : t.packs) {
    uint8_t raw[32];
    hex_to_raw(hex_of(p), raw);
    body.bytes(raw, sizeof raw);
  }
  body.put(static_cast<uint32_t>(t.files.size()));
  for (const auto& f : t.files) {
    body.str(f.path);
    body.put(f.size);
    uint8_t raw[32];
    hex_to_raw(f.sha256, raw);
    body.bytes(raw, sizeof raw);
    body.put(f.first);
    body.put(f.count);
  }
  body.put(static_cast<uint64_t>(t.chunks.size()));
  body.bytes(t.chunks.data(), t.chunks.size() * sizeof(ChunkTable::Chunk));
  std::string b = body.take();
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  std::memcpy(h.config_hex, hex_of(config_digest).data(), 64);
  sha256_raw(b, h.body_sha256);
  h.body_bytes = b.size();
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  out += b;
  return out;
}

Result<ChunkTable> parse_chunk_table(std::string_view data, const std::string& config_digest) {
  auto bad = [](const std::string& why) {
    return Error(ErrorKind::kInvalidInput, "chunk table: " + why);
  };
  Header h{};
  if (data.size() < sizeof h) return bad("shorter than its header");
  std::memcpy(&h, data.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kVersion)
    return bad("not a version " + std::to_string(kVersion) + " table");
  if (std::string_view(h.config_hex, 64) != hex_of(config_digest))
    return bad("made from another config");
  std::string_view body = data.substr(sizeof h);
  if (body.size() != h.body_bytes) return bad("truncated");
  uint8_t sum[32];
  sha256_raw(body, sum);
  if (std::memcmp(sum, h.body_sha256, 32) != 0) return bad("its content does not match its SHA-256");

  ChunkTable t;
  Reader r(body);
  uint32_t npacks = 0, nfiles = 0;
  uint64_t nchunks = 0;
  if (!r.str(&t.manifest_json, kMaxJsonBytes) || !r.get(&npacks) || npacks > kMaxEntries)
    return bad("malformed");
  static const char* digits = "0123456789abcdef";
  for (uint32_t i = 0; i < npacks; ++i) {
    uint8_t raw[32];
    if (!r.bytes(raw, sizeof raw)) return bad("malformed pack list");
    std::string d = "sha256:";
    for (uint8_t b : raw) {
      d += digits[b >> 4];
      d += digits[b & 15];
    }
    t.packs.push_back(std::move(d));
  }
  if (!r.get(&nfiles) || nfiles > kMaxEntries) return bad("malformed file list");
  for (uint32_t i = 0; i < nfiles; ++i) {
    ChunkTable::File f;
    uint8_t raw[32];
    if (!r.str(&f.path, 4096) || !r.get(&f.size) || !r.bytes(raw, sizeof raw) || !r.get(&f.first) ||
        !r.get(&f.count))
      return bad("malformed file list");
    f.sha256.reserve(64);
    for (uint8_t b : raw) {
      f.sha256 += digits[b >> 4];
      f.sha256 += digits[b & 15];
    }
    t.files.push_back(std::move(f));
  }
  // The count is checked against the bytes there before anything is allocated for it.
  if (!r.get(&nchunks) || nchunks > kMaxEntries ||
      nchunks != r.remaining() / sizeof(ChunkTable::Chunk))
    return bad("malformed chunk list");
  t.chunks.resize(nchunks);
  if (!r.bytes(t.chunks.data(), nchunks * sizeof(ChunkTable::Chunk)) || !r.done())
    return bad("malformed chunk list");
  // Every file's chunks lie in the table and cover it exactly, in order.
  for (const auto& f : t.files) {
    if (f.first > nchunks || f.count > nchunks - f.first) return bad(f.path + ": chunks out of range");
    uint64_t off = 0;
    for (uint64_t k = f.first; k < f.first + f.count; ++k) {
      const auto& c = t.chunks[k];
      if (c.offset != off || c.length == 0 || c.pack >= npacks || c.pack_length == 0)
        return bad(f.path + ": chunk " + std::to_string(k - f.first) + " is inconsistent");
      off += c.length;
    }
    if (off != f.size) return bad(f.path + ": chunks do not cover it");
  }
  return t;
}

stdfs::path chunk_table_path(const stdfs::path& root, const std::string& config_digest) {
  return root / "chunk-tables" / hex_of(config_digest);
}

void keep_chunk_table(const stdfs::path& root, const std::string& config_digest,
                      const ChunkTable& table) {
  // Best effort: without it the next reader parses the config again, nothing worse.
  const stdfs::path path = chunk_table_path(root, config_digest);
  Status dir = fs::make_dirs(path.parent_path(), 0700);
  Status wrote = dir.ok() ? fs::write_file_atomic(path, serialize_chunk_table(table, config_digest),
                                                  0600, /*durable=*/false)
                          : dir;
  if (!wrote.ok()) log::debug("chunk table not kept: " + wrote.error().message());
}

Result<ChunkTable> load_chunk_table(const stdfs::path& root, const std::string& manifest_digest,
                                    int64_t manifest_size, std::string* manifest_text) {
  PW_ASSIGN(std::string mtext, read_blob(root, manifest_digest, manifest_size, kMaxJsonBytes));
  auto m = parse_oci_manifest(mtext);
  if (!m.ok()) return std::move(m).error().with_context("manifest " + manifest_digest);
  if (manifest_text) *manifest_text = mtext;
  const std::string& config = m->config.digest;
  const stdfs::path path = chunk_table_path(root, config);
  std::optional<ChunkTable> table;
  if (auto data = fs::read_file(path, size_t{1} << 31); data.ok()) {
    auto parsed = parse_chunk_table(*data, config);
    if (parsed.ok())
      table.emplace(std::move(parsed).value());
    else
      log::debug(path.string() + ": " + parsed.error().message() + "; making it again");
  }
  if (!table) {
    auto loaded = load_image(root, manifest_digest, manifest_size);
    if (!loaded.ok()) return std::move(loaded).error();
    PW_ASSIGN(ChunkTable made, make_chunk_table(loaded->config));
    keep_chunk_table(root, config, made);
    return made;
  }
  // The table belongs to the config; its packs must be layers of this manifest, its frames
  // inside them (as load_image checks for a config).
  std::map<std::string, uint64_t> layers;
  for (const auto& l : m->layers) layers[l.digest] = l.size;
  std::vector<uint64_t> pack_size;
  for (const auto& p : table->packs) {
    auto it = layers.find(p);
    if (it == layers.end())
      return Error(ErrorKind::kInvalidInput,
                   "config " + config + ": pack " + p + " is not a layer of manifest " + manifest_digest);
    pack_size.push_back(it->second);
  }
  for (const auto& c : table->chunks)
    if (c.pack_offset > pack_size[c.pack] || c.pack_length > pack_size[c.pack] - c.pack_offset)
      return Error(ErrorKind::kInvalidInput, "config " + config + ": a chunk lies outside pack " +
                                                 table->packs[c.pack]);
  return std::move(*table);
}

void remove_stale_chunk_tables(const stdfs::path& root) {
  std::error_code ec;
  for (stdfs::directory_iterator it(root / "chunk-tables", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const std::string digest = "sha256:" + name;
    // Leftover temporary files of write_file_atomic, and tables whose config is gone.
    if (!valid_digest(digest) || ::access(blob_file(root, digest).c_str(), F_OK) != 0)
      ::unlink(it->path().c_str());
  }
}

}  // namespace prewarm::store::detail
