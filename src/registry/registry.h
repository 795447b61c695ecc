// Client for the OCI distribution API: push and pull blobs and manifests by reference,
// independent of how the caller stores blobs locally.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace prewarm::registry {

inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
// Registries reject larger manifests; we refuse to read more than this.
inline constexpr size_t kMaxManifestBytes = 4 << 20;
// Space a pull leaves free on the filesystem it downloads to: 5% of it, at most 1 GiB.
uint64_t free_space_margin(uint64_t filesystem_bytes);

// HOST[:PORT]/REPO[/...](:TAG|@sha256:HEX|:TAG@sha256:HEX). The registry host is always
// explicit: there is no implicit Docker Hub.
struct Reference {
  std::string registry;    // host[:port], e.g. "127.0.0.1:5000", "[::1]:5000"
  std::string repository;  // "team/app"
  std::string tag;         // may be empty when digest is set
  std::string digest;      // "sha256:<64 hex>" or empty

  // The manifest reference the API uses: the digest when there is one, else the tag.
  const std::string& reference() const { return digest.empty() ? tag : digest; }
  // The host without the port ("127.0.0.1", "[::1]", "registry.example.com").
  std::string host() const;
  std::string to_string() const;
};

Result<Reference> parse_reference(std::string_view text);

// True for "sha256:" followed by 64 lowercase hex digits, the only algorithm we accept.
bool is_valid_digest(std::string_view digest);

// Counters a caller (or a test) can read after an operation; optional, shared by threads.
struct Stats {
  std::atomic<uint64_t> requests{0};         // HTTP requests sent, including token requests
  std::atomic<uint64_t> upload_starts{0};    // POST /blobs/uploads/
  std::atomic<uint64_t> upload_chunks{0};    // PATCH
  std::atomic<uint64_t> blobs_uploaded{0};
  std::atomic<uint64_t> blobs_skipped{0};    // already in the registry
  std::atomic<uint64_t> blobs_downloaded{0};
  std::atomic<uint64_t> bytes_uploaded{0};   // blob bytes acknowledged by the registry
  std::atomic<uint64_t> bytes_downloaded{0}; // blob bytes received (not those resumed from)
  std::atomic<uint64_t> resumed{0};          // transfers continued from an offset after a failure
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> token_requests{0};
};

struct Options {
  // Plain HTTP instead of HTTPS. Unset: plain HTTP only for localhost, 127.0.0.1 and [::1].
  std::optional<bool> insecure_http;
  std::string ca_file;  // PEM bundle to verify the registry (and token server) with
  // Credentials for Basic auth and for token servers; when both are empty they come from
  // PREWARM_REGISTRY_USER / PREWARM_REGISTRY_PASSWORD.
  std::string username;
  std::string password;
  int parallel = 4;                    // blobs transferred at once
  size_t chunk_size = 8 << 20;         // bytes per upload PATCH
  // Throttled progress lines; called from worker threads, but never concurrently.
  std::function<void(const std::string&)> progress;
  std::chrono::milliseconds connect_timeout{10'000};
  // A transfer moving under 1 KiB/s this long fails (not retried by the request that stalled:
  // it has waited that long already).
  std::chrono::milliseconds stall_timeout{30'000};
  std::chrono::milliseconds request_timeout{120'000};  // whole request, except blob bodies
  int retries = 3;                     // per blob / request, on connection errors and 5xx
  // pull_blobs refuses, before downloading, a blob declaring more than this, or blobs that
  // would leave less than kFreeSpaceMargin (of the filesystem they go to) free.
  uint64_t max_blob_bytes = uint64_t{64} << 30;
  std::chrono::milliseconds retry_backoff{200};  // doubled after each retry
  Stats* stats = nullptr;
};

// One blob: its digest and size, and where its content is (push) or goes (pull).
struct Blob {
  std::string digest;
  uint64_t size = 0;
  std::string media_type;
  std::filesystem::path path;
};

struct PulledManifest {
  std::string json;
  std::string digest;      // sha256 of json, verified
  std::string media_type;  // from Content-Type, else the manifest's mediaType field
};

// Uploads the blobs the registry does not have yet (in parallel, in chunks, resuming
// interrupted chunks), then puts the manifest under ref's tag (or digest).
Status push(const Reference& ref, const std::vector<Blob>& blobs, const std::string& manifest_json,
            const std::string& manifest_media_type, const Options& opts);

// Fetches a manifest or index; verifies its digest when ref names one.
Result<PulledManifest> get_manifest(const Reference& ref, const Options& opts);

// Downloads each wanted blob (digest, size) of ref's repository to its path: first into
// "<path>.partial" (resumed when it exists), then, once size and sha256 match, renamed. Sizes
// are checked against opts.max_blob_bytes and the free space first; a registry that sends more
// than a blob's declared size is cut off there, and the pull fails.
// Blobs are started in the order given (opts.parallel at a time); `done`, when set, is called
// (from the downloading thread) as each one is in place, and a failure it returns fails the pull.
Status pull_blobs(const Reference& ref, const std::vector<Blob>& wanted, const Options& opts,
                  const std::function<Status(const Blob&)>& done = {});

}  // namespace prewarm::registry
