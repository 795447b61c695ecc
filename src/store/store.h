// The content-addressed local store of checkpoint images, laid out as an OCI image layout
// (STORE/oci-layout, STORE/index.json, STORE/blobs/sha256/<hex>) so OCI tools can read it.
//
// One stored image = an OCI image manifest (artifactType application/vnd.prewarm.checkpoint.v1)
// whose config blob holds the image's manifest.json and, for every file, the ordered list of
// content-defined chunks (small: ~32 KiB, so a changed memory page costs little), each an
// independently zstd-compressed frame in a pack; the layers are the packs (~2 MiB of frames,
// itself a valid zstd stream) the image's chunks are in. Chunks shared with other images are
// stored once: a new image's new chunks go into new packs, its old ones point into old packs,
// so a registry sees few blobs and a second bake uploads only the packs of what changed.
// Every read verifies digests; a damaged blob is reported by digest and by the images that use
// it, never silently dropped.
//
// Locking: STORE/.lock (flock, exclusive) serialises index.json updates and gc; operations
// that need blobs to stay (put, materialize, verify, a Lease) hold STORE/.gc.lock shared, and
// gc holds it exclusive, so gc never removes a blob a running put has written but not yet
// indexed.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace prewarm::store {

inline constexpr const char* kArtifactType = "application/vnd.prewarm.checkpoint.v1";
inline constexpr const char* kConfigMediaType = "application/vnd.prewarm.checkpoint.config.v1+json";
inline constexpr const char* kPackMediaType = "application/vnd.prewarm.checkpoint.pack.v1.zstd";
inline constexpr const char* kManifestMediaType = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kIndexMediaType = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kRefNameAnnotation = "org.opencontainers.image.ref.name";
inline constexpr const char* kCreatedAnnotation = "org.opencontainers.image.created";
// SHA-256 (hex) of the image's manifest.json, so an unpacked copy can be checked without
// reading the config; add_manifest refuses a manifest whose value disagrees with its config.
inline constexpr const char* kManifestSha256Annotation = "org.prewarm.image.manifest-sha256";
// Largest JSON document (index, manifest, config) the store parses.
inline constexpr size_t kMaxJsonBytes = 16 << 20;
// Largest pack (layer) the store reads; put writes ~2 MiB ones.
inline constexpr size_t kMaxPackBytes = 64 << 20;

struct PutOptions {
  int zstd_level = 3;    // see compress.cpp for the measurements behind the default
  unsigned threads = 0;  // 0: one per core
};

struct PutResult {
  std::string manifest_digest;          // "sha256:<hex>"
  uint64_t raw_bytes = 0;               // sum of file sizes
  uint64_t total_compressed_bytes = 0;  // sum of the image's unique compressed chunks
  uint64_t new_compressed_bytes = 0;    // what this put added to the store
  uint64_t chunks = 0;                  // chunk references, in file order
  uint64_t unique_chunks = 0;           // distinct chunks
  uint64_t new_chunks = 0;              // chunks this put wrote (into new packs)
  uint64_t packs = 0;                   // = layers
  uint64_t new_packs = 0;
  uint64_t reused_raw_bytes = 0;        // raw bytes whose chunk was already stored
  double seconds = 0;
  // Share of the raw bytes already in the store before this put (0..1).
  double dedup_ratio() const {
    return raw_bytes ? double(reused_raw_bytes) / double(raw_bytes) : 0;
  }
};

struct MaterializeOptions {
  unsigned threads = 0;  // decompression workers; 0: one per core
  bool replace = false;  // replace an existing dest_dir (atomically exchanged, then removed)
};

struct MaterializeResult {
  uint64_t raw_bytes = 0;
  uint64_t compressed_bytes = 0;
  uint64_t files = 0;
  double seconds = 0;
};

// An indexed image as an unpacked copy is checked against.
struct StoredImage {
  std::string manifest_digest;       // "sha256:<hex>" of its OCI manifest
  std::string manifest_json_sha256;  // hex SHA-256 of the image's manifest.json, byte for byte
};

struct BlobProblem {
  std::string digest;
  std::string what;                 // "missing", "content does not match its digest", ...
  std::vector<std::string> images;  // names of the indexed images that use the blob
};

struct VerifyReport {
  uint64_t images = 0;
  uint64_t blobs = 0;
  uint64_t bytes = 0;
  std::vector<BlobProblem> problems;
  bool ok() const { return problems.empty(); }
  // One line per problem: "sha256:… (used by a, b): content does not match its digest".
  std::string describe() const;
};

struct ListEntry {
  std::string name;
  std::string manifest_digest;
  std::string created;        // RFC 3339, from the image
  uint64_t raw_bytes = 0;     // unpacked size
  uint64_t stored_bytes = 0;  // config + compressed chunks (shared chunks counted fully)
  std::string problem;        // set when the manifest could not be read
};

struct GcOptions {
  // Unreferenced blobs younger than this stay (a registry pull imports blobs before it adds
  // the manifest that references them; a Lease protects it fully, this covers pulls without).
  std::chrono::seconds min_blob_age{600};
  // Leftover temporary files (interrupted writes) older than this are removed.
  std::chrono::seconds temp_file_age{3600};
};

struct GcResult {
  uint64_t removed_blobs = 0;
  uint64_t bytes_freed = 0;
  uint64_t removed_temp_files = 0;
  uint64_t kept_young_blobs = 0;  // unreferenced but younger than min_blob_age
  // Temporary files younger than temp_file_age: mostly partial downloads an interrupted pull
  // resumes from.
  uint64_t kept_temp_files = 0;
  uint64_t kept_temp_bytes = 0;
};

// Keeps gc from removing any blob while held (a shared flock on STORE/.gc.lock). gc waits
// for every lease, so a thread holding one must not call gc itself.
class Lease {
 public:
  Lease() = default;
  explicit Lease(UniqueFd fd) : fd_(std::move(fd)) {}

 private:
  UniqueFd fd_;
};

class Store {
 public:
  // Opens the store at root, creating an empty layout (0700) when root does not exist or is
  // empty; refuses a directory whose oci-layout is not version 1.0.0.
  static Result<Store> open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }

  // Stores the sealed image directory (image::open_verified must pass) under name, replacing
  // an image of the same name in the index.
  Result<PutResult> put(const std::filesystem::path& image_dir, const std::string& name,
                        const PutOptions& opts = {}) const;

  // Rebuilds the image directory at dest_dir (files 0600, directories 0700): written into a
  // temporary directory beside it, every chunk blob and every file's SHA-256 verified, then
  // renamed into place. dest_dir must not exist unless opts.replace. The copy records the
  // manifest digest it was rebuilt from in image::kStoreDigestFile.
  Result<MaterializeResult> materialize(const std::string& name,
                                        const std::filesystem::path& dest_dir,
                                        const MaterializeOptions& opts = {}) const;

  // Re-hashes every blob of the image (verify) or of all indexed images (verify_all).
  // Problems are in the report; an error only when the index itself cannot be read.
  Result<VerifyReport> verify(const std::string& name) const;
  Result<VerifyReport> verify_all() const;

  Result<std::vector<ListEntry>> list() const;
  // Drops the index entry; the blobs go at the next gc.
  Status remove(const std::string& name) const;
  // Removes blobs referenced neither by an indexed manifest nor by the protected manifests
  // (digests, e.g. of images that running restores use), and stale temporary files.
  Result<GcResult> gc(const std::set<std::string>& protected_manifest_digests,
                      const GcOptions& opts = {}) const;

  // --- for the registry client ---
  Result<Lease> lease() const;
  // STORE/blobs/sha256/<hex>; an error for a malformed digest.
  Result<std::filesystem::path> blob_path(const std::string& digest) const;
  // Present (not re-hashed: add_blob_file, put and verify do that).
  bool has_blob(const std::string& digest) const;
  // A fresh path in the blobs directory (same filesystem) to download a blob into; gc removes
  // it once stale.
  std::filesystem::path temp_path() const;
  // Moves a downloaded file into the store after checking its SHA-256 against
  // expected_digest; the file is consumed either way (removed when it does not match).
  Status add_blob_file(const std::filesystem::path& tmp_path,
                       const std::string& expected_digest) const;
  // Reads a blob, verifying its digest; refuses blobs over max_bytes.
  Result<std::string> read_blob(const std::string& digest, size_t max_bytes = kMaxJsonBytes) const;
  // The manifest JSON text of an indexed image and its digest.
  Result<std::pair<std::string, std::string>> read_manifest(const std::string& name) const;
  // What an unpacked copy of the image must match: an error of kind kNotFound when the store
  // has no image of that name.
  Result<StoredImage> stored_image(const std::string& name) const;
  // Checks the manifest (media types, config readable and consistent, every blob present with
  // its size), stores it and indexes it under name. Returns its digest.
  Result<std::string> add_manifest(const std::string& name, const std::string& manifest_json) const;
  // Stores a manifest whose config is present, without indexing it (its packs may still be
  // arriving): an ImageReader can then open it by digest. Returns its digest.
  Result<std::string> add_manifest_blob(const std::string& manifest_json) const;

 private:
  explicit Store(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;
};

// Random access to a stored image's files without unpacking it: a read fetches the chunks it
// needs straight from their packs (each chunk's own zstd frame, by offset), decompresses them and
// checks each against its SHA-256. A small cache keeps the last chunks read. Holds a Lease, so
// gc leaves the blobs alone while it lives. Not thread-safe.
class ImageReader {
 public:
  // By name (an indexed image) or by manifest digest ("sha256:..."; e.g. the one a running
  // restore recorded).
  static Result<ImageReader> open(const Store& store, const std::string& name_or_digest);
  ImageReader(ImageReader&&) noexcept;
  ImageReader& operator=(ImageReader&&) noexcept;
  ~ImageReader();

  const std::string& manifest_digest() const;
  // The image's manifest.json, byte for byte.
  const std::string& manifest_json() const;
  // Files (relative paths) and their sizes.
  std::vector<std::pair<std::string, uint64_t>> files() const;
  // Reads len bytes at offset of `path` into out (kNotFound for a file the image lacks,
  // kInvalidInput past its end, kIntegrity-like errors name the chunk).
  Status read(const std::string& path, uint64_t offset, uint64_t len, char* out);
  // Writes `path` whole to dest (0600), checking its SHA-256 at the end.
  Status copy_file(const std::string& path, const std::filesystem::path& dest);
  // Chunk-aligned: the [start, end) of the chunks that cover [offset, offset+len) of `path`.
  std::pair<uint64_t, uint64_t> chunk_span(const std::string& path, uint64_t offset, uint64_t len) const;
  uint64_t chunks_read() const;  // decompressed so far (cache misses)
  // The packs (digests) that hold [offset, offset+len) of `path`, in the order they are needed.
  std::vector<std::string> packs_for(const std::string& path, uint64_t offset, uint64_t len) const;
  // Called when a pack the read needs is not in the store (an image still being pulled): it
  // returns once the pack is there, or says why it never will be. Without one, a missing pack
  // is an error at once.
  void on_missing_pack(std::function<Status(const std::string& digest, const std::filesystem::path& where)> wait);

 private:
  ImageReader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Image names: OCI ref.name components, 1..255 characters of [A-Za-z0-9._:/@+-], starting
// with a letter or digit.
Status check_name(const std::string& name);

}  // namespace prewarm::store
