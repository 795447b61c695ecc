// Internals of the store shared by its files: layout paths, digests, blob and index I/O,
// locks, compression, the config/manifest formats and a small parallel-for.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/result.h"
#include "base/sha256.h"
#include "base/unique_fd.h"
#include "image/manifest.h"
#include "store/chunker.h"

namespace prewarm::store::detail {

namespace stdfs = std::filesystem;

// ---- digests ("sha256:<64 lowercase hex>") ----
bool valid_digest(std::string_view digest);
std::string digest_of(std::string_view data);
inline std::string hex_of(std::string_view digest) { return std::string(digest.substr(7)); }


// ---- layout ----
inline constexpr const char* kLayoutFile = "oci-layout";
inline constexpr const char* kIndexFile = "index.json";
inline constexpr const char* kLockFile = ".lock";
inline constexpr const char* kGcLockFile = ".gc.lock";
inline constexpr const char* kTempPrefix = ".tmp-";

inline stdfs::path blobs_dir(const stdfs::path& root) { return root / "blobs" / "sha256"; }
inline stdfs::path blob_file(const stdfs::path& root, std::string_view digest) {
  return blobs_dir(root) / hex_of(digest);
}
stdfs::path new_temp_path(const stdfs::path& dir);

// ---- locks ----
// flock on a lock file; released when the returned fd closes. Each call opens its own file
// description, so threads of one process exclude each other like processes do.
Result<UniqueFd> lock_file(const stdfs::path& path, bool exclusive);

// ---- blobs ----
// Writes data as blob `digest` (temp file in the blobs dir, fsync, rename) unless a blob with
// that digest and content is already there; a present blob whose content does not match is
// replaced. Returns true when it wrote. With durable=false the caller fsyncs the blob later
// (sync_files), before anything that references it is written: a blob torn by a crash in
// between is harmless because every reuse of a present blob re-hashes it first.
Result<bool> write_blob(const stdfs::path& root, const std::string& digest, std::string_view data,
                        bool durable = true);
// fsyncs the files, several at a time (lets the filesystem batch its journal commits).
Status sync_files(const std::vector<stdfs::path>& files);
// Reads a blob whole and checks its digest (and size when expected_size >= 0).
Result<std::string> read_blob(const stdfs::path& root, const std::string& digest,
                              int64_t expected_size, size_t max_bytes);
// Re-hashes a blob file; "" when it matches, else what is wrong with it.
std::string check_blob(const stdfs::path& root, const std::string& digest, int64_t expected_size);
Status fsync_dir(const stdfs::path& dir);

// A non-negative integer from JSON, at most max; anything else throws json's type_error, as
// get() does for other types (its get<uint64_t>() of a float beyond the range is undefined
// behaviour, found by fuzz/oci_manifest.cpp).
uint64_t json_unsigned(const nlohmann::json& j, uint64_t max = UINT64_MAX);

// ---- index.json ----
struct IndexEntry {
  std::string name;  // the ref.name annotation ("" for entries other tools added)
  std::string media_type = "application/vnd.oci.image.manifest.v1+json";
  std::string artifact_type;
  std::string digest;
  uint64_t size = 0;
  std::map<std::string, std::string> annotations;
};
Result<std::vector<IndexEntry>> read_index(const stdfs::path& root);
Status write_index(const stdfs::path& root, const std::vector<IndexEntry>& entries);
// Under the exclusive index lock: replaces (or adds) the entry named entry.name.
Status index_upsert(const stdfs::path& root, IndexEntry entry);
IndexEntry make_index_entry(const std::string& name, const std::string& digest, uint64_t size,
                            const std::map<std::string, std::string>& manifest_annotations);

// ---- compression (zstd) ----
Result<std::string> compress(std::string_view data, int level);
// Decompresses one frame that must hold exactly `size` bytes into out.
Status decompress(std::string_view frame, char* out, size_t size, const std::string& digest);

// ---- formats ----
struct Descriptor {
  std::string media_type;
  std::string digest;
  uint64_t size = 0;
};

// A descriptor's "size": a non-negative integer no larger than max_size, else an error that
// names `where`.
Result<uint64_t> descriptor_size(const nlohmann::json& size, const std::string& where,
                                 uint64_t max_size);

struct OciManifest {
  Descriptor config;
  std::vector<Descriptor> layers;
  std::map<std::string, std::string> annotations;
};
std::string to_json(const OciManifest& m);
Result<OciManifest> parse_oci_manifest(std::string_view text);

struct ChunkRef {
  std::string digest;  // of the pack (blob) holding its compressed frame
  uint64_t offset = 0;  // in the file
  uint64_t length = 0;
  std::string sha256;  // of the uncompressed bytes (hex)
  uint64_t pack_offset = 0;  // of its zstd frame in the pack
  uint64_t pack_length = 0;
};
struct FileEntry {
  std::string path;
  uint64_t size = 0;
  std::string sha256;
  std::vector<ChunkRef> chunks;
};
struct ImageConfig {
  std::string manifest_json;  // manifest.json, byte for byte
  ChunkerParams chunker{};
  int zstd_level = 0;
  std::vector<FileEntry> files;
};
std::string to_json(const ImageConfig& c);
// Checks the embedded manifest, that the files match it and that each file's chunks cover it
// exactly, in order.
Result<ImageConfig> parse_config(std::string_view text);

// A stored image, read and checked top-down from its manifest digest.
struct LoadedImage {
  std::string manifest_digest;
  OciManifest manifest;
  ImageConfig config;
  std::map<std::string, uint64_t> layer_sizes;  // digest -> compressed size
};
Result<LoadedImage> load_image(const stdfs::path& root, const std::string& manifest_digest,
                               int64_t manifest_size);
Result<IndexEntry> find_entry(const stdfs::path& root, const std::string& name);

// ---- chunk tables (chunk_table.cpp) ----
// A stored image's files and chunks in the compact form readers use: no JSON to parse.
struct ChunkTable {
  struct Chunk {
    uint64_t offset;       // in the file
    uint64_t pack_offset;  // of its zstd frame in packs[pack]
    uint32_t length;
    uint32_t pack_length;
    uint32_t pack;
    uint32_t reserved;
    uint8_t sha256[32];  // of the uncompressed bytes
  };
  struct File {
    std::string path;
    uint64_t size = 0;
    std::string sha256;  // hex
    uint64_t first = 0, count = 0;  // its chunks: chunks[first, first + count)
  };
  std::string manifest_json;       // the image's manifest.json, byte for byte
  std::vector<std::string> packs;  // digests
  std::vector<File> files;
  std::vector<Chunk> chunks;
};
static_assert(sizeof(ChunkTable::Chunk) == 64, "chunk table entries are stored as they are");
// From a checked config whose chunks all have their pack ranges (format 1's filled in).
Result<ChunkTable> make_chunk_table(const ImageConfig& config);
// Writes the table for the next reader; failing to is only logged.
void keep_chunk_table(const stdfs::path& root, const std::string& config_digest,
                      const ChunkTable& table);
std::string serialize_chunk_table(const ChunkTable& t, const std::string& config_digest);
// Checks the table's SHA-256, that it was made from config_digest and that it is consistent.
Result<ChunkTable> parse_chunk_table(std::string_view data, const std::string& config_digest);
stdfs::path chunk_table_path(const stdfs::path& root, const std::string& config_digest);
// The table of a stored image (its manifest read and verified first): the kept one when it is
// sound, else made from the config (load_image's checks) and kept for the next reader. The
// manifest's text goes to manifest_text when given.
Result<ChunkTable> load_chunk_table(const stdfs::path& root, const std::string& manifest_digest,
                                    int64_t manifest_size, std::string* manifest_text = nullptr);
// Removes the tables of configs no longer in the store (gc, with its locks held).
void remove_stale_chunk_tables(const stdfs::path& root);

// ---- annotations ----
// CRIU version as checkpointctl/CRI-O/Podman write it: major*10000 + minor*100 + sublevel.
std::string criu_version_number(const std::string& dotted);
std::map<std::string, std::string> image_annotations(const std::string& name,
                                                     const image::Manifest& m, uint64_t raw_bytes,
                                                     const std::string& manifest_sha256);
inline constexpr const char* kRawSizeAnnotation = "org.prewarm.image.raw-size";

// ---- parallelism ----
unsigned worker_count(unsigned requested);
// Runs fn(i) for i in [0, n) on `threads` threads; returns the first error (by index).
Status parallel_for(size_t n, unsigned threads, const std::function<Status(size_t)>& fn);

}  // namespace prewarm::store::detail
