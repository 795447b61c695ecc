// Lazy copies (an image's files with only the eagerly restored pages) and the page server
// that serves the rest straight from the store.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

#include "base/fs.h"
#include "base/sha256.h"
#include "criu/page_server.h"
#include "image/image.h"
#include "image/pagemap.h"
#include "images/images.h"
#include "images/load.h"
#include "images/pulling.h"
#include "store/store.h"

namespace prewarm::images {
namespace {

namespace stdfs = std::filesystem;
constexpr uint64_t kPage = 4096;

// A path in the image: "checkpoint/<name>" with a CRIU name of that kind.
bool is_pages_file(const std::string& path) {
  const stdfs::path p(path);
  return p.parent_path() == image::kCheckpointDir && image::is_pages_name(p.filename().string());
}

bool is_pagemap_file(const std::string& path, pid_t* pid) {
  const stdfs::path p(path);
  if (p.parent_path() != image::kCheckpointDir) return false;
  auto parsed = image::pagemap_pid(p.filename().string());
  if (!parsed.ok()) return false;
  *pid = *parsed;
  return true;
}

std::string pages_file(uint32_t pages_id) {
  return std::string(image::kCheckpointDir) + "/pages-" + std::to_string(pages_id) + ".img";
}

// A task's present pages: where each pagemap entry's pages lie in its pages file.
struct Placed {
  uint64_t vaddr, pages, offset;
  uint32_t flags;
};
struct TaskPages {
  std::string file;
  std::vector<Placed> entries;  // in address order
};

TaskPages place(const image::Pagemap& pm) {
  TaskPages t;
  t.file = pages_file(pm.pages_id);
  uint64_t off = 0;
  for (const auto& e : pm.entries) {
    if (!(e.flags & image::kPagemapPresent)) continue;
    t.entries.push_back({e.vaddr, e.nr_pages, off, e.flags});
    off += e.nr_pages * kPage;
  }
  return t;
}

Result<TaskPages> read_task_pages(store::ImageReader& r, const std::string& path) {
  uint64_t size = 0;
  for (const auto& [p, s] : r.files())
    if (p == path) size = s;
  std::string text(size, '\0');
  PW_TRY(r.read(path, 0, size, text.data()));
  auto pm = image::parse_pagemap(text);
  if (!pm.ok()) return std::move(pm).error().with_context(path);
  return place(*pm);
}

// Byte ranges of pages files that a lazy restore reads locally: what CRIU never serves lazily,
// and the working set.
Result<std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>>> eager_ranges(
    store::ImageReader& r, const image::WorkingSet& ws) {
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> out;
  for (const auto& [path, size] : r.files()) {
    pid_t pid = 0;
    if (!is_pagemap_file(path, &pid)) continue;
    PW_ASSIGN(TaskPages t, read_task_pages(r, path));
    auto& ranges = out[t.file];
    for (const auto& e : t.entries)
      if (!(e.flags & image::kPagemapLazy)) ranges.emplace_back(e.offset, e.pages * kPage);
    auto it = ws.find(pid);
    if (it == ws.end()) continue;
    for (const auto& w : it->second) {
      const uint64_t ws_end = w.start + w.pages * kPage;
      for (const auto& e : t.entries) {
        const uint64_t e_end = e.vaddr + e.pages * kPage;
        const uint64_t from = std::max(w.start, e.vaddr), to = std::min(ws_end, e_end);
        if (from < to) ranges.emplace_back(e.offset + (from - e.vaddr), to - from);
      }
    }
  }
  return out;
}

// The image's working set; empty when it has none or it does not parse (restores are then
// only slower).
Result<image::WorkingSet> read_working_set(store::ImageReader& r) {
  for (const auto& [path, size] : r.files()) {
    if (path != image::kWorkingSetFile) continue;
    std::string text(size, '\0');
    PW_TRY(r.read(path, 0, size, text.data()));
    auto parsed = image::parse_working_set(text);
    if (parsed.ok()) return std::move(parsed).value();
  }
  return image::WorkingSet();
}

// The lazy copy of the stored image `digest`, made once per node (staged, then renamed).
Result<stdfs::path> make_lazy_copy(const engine::Context& ctx, store::ImageReader& r) {
  const std::string hex = digest_hex(r.manifest_digest());
  const stdfs::path parent = lazy_copies_dir(ctx);
  const stdfs::path dest = parent / hex;
  std::error_code ec;
  if (stdfs::exists(dest / image::kManifestFile, ec)) return dest;
  PW_TRY(fs::make_dirs(parent, 0700));
  PW_ASSIGN(fs::StagingDir staging, fs::StagingDir::create(parent, "." + hex.substr(0, 12) + "-"));
  const stdfs::path tmp = staging.path();
  PW_ASSIGN(image::WorkingSet ws, read_working_set(r));
  PW_ASSIGN(auto ranges, eager_ranges(r, ws));
  std::string buf;
  for (const auto& [path, size] : r.files()) {
    const stdfs::path out = tmp / path;
    if (!is_pages_file(path)) {
      PW_TRY(r.copy_file(path, out));
      continue;
    }
    // Sparse: the file's full size, and only the eager pages written (each chunk checked).
    PW_TRY(fs::make_dirs(out.parent_path(), 0700));
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd.valid()) return Error::sys("create", errno, out.string());
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
      return Error::sys("truncate", errno, out.string());
    for (const auto& [off, len] : ranges[path]) {
      buf.resize(len);
      PW_TRY(r.read(path, off, len, buf.data()));
      if (::pwrite(fd.get(), buf.data(), len, static_cast<off_t>(off)) != static_cast<ssize_t>(len))
        return Error::sys("write", errno, out.string());
    }
  }
  PW_TRY(fs::write_file_atomic(tmp / image::kManifestFile, r.manifest_json(), 0600));
  PW_TRY(fs::write_file_atomic(tmp / image::kStoreDigestFile, r.manifest_digest() + "\n", 0600));
  Status moved = staging.rename_to(dest);
  if (!moved.ok()) {
    // Another start made it meanwhile.
    if (stdfs::exists(dest / image::kManifestFile, ec)) return dest;
    return std::move(moved).error();
  }
  staging.release();
  return dest;
}

}  // namespace

namespace {

// The paging a start asks for: `paging`, else the spec's restore.paging, else the context's
// default ("auto" resolved to that default too).
std::string requested_paging(const engine::Context& ctx, const spec::AppSpec& spec,
                             const std::string& paging) {
  std::string p = paging.empty() ? spec.restore_paging : paging;
  if (p.empty() || p == "auto") p = ctx.config.paging;
  return p;
}

}  // namespace

Result<bool> restore_is_lazy(const engine::Context& ctx, const image::Manifest& manifest,
                             const spec::AppSpec& spec, const std::string& paging) {
  const std::string p = requested_paging(ctx, spec, paging);
  if (p == "lazy") return true;
  if (p == "eager") return false;
  if (p != "auto")
    return Error(ErrorKind::kInvalidInput, "paging '" + p + "': expected lazy, eager or auto");
  uint64_t memory = 0;
  for (const auto& f : manifest.files)
    if (is_pages_file(f.path)) memory += f.size;
  return memory >= ctx.config.lazy_min_bytes;
}

Result<std::optional<stdfs::path>> make_default_lazy_copy(const engine::Context& ctx,
                                                          store::ImageReader& r,
                                                          const FetchPacks& fetch) {
  auto manifest = image::parse_manifest(r.manifest_json());
  if (!manifest.ok()) return std::move(manifest).error();
  auto spec = image::stored_spec(*manifest);
  if (!spec.ok()) return std::move(spec).error().with_context("stored spec is invalid");
  PW_ASSIGN(bool lazy, restore_is_lazy(ctx, *manifest, *spec, ""));
  if (!lazy) return std::optional<stdfs::path>();
  // Every file but the pages first (the pagemaps say where the eager pages lie), then the packs
  // of the pages the copy keeps.
  std::vector<std::string> packs;
  auto add_packs = [&](const std::string& path, uint64_t offset, uint64_t len) {
    for (auto& p : r.packs_for(path, offset, len))
      if (std::find(packs.begin(), packs.end(), p) == packs.end()) packs.push_back(std::move(p));
  };
  for (const auto& [path, size] : r.files())
    if (!is_pages_file(path)) add_packs(path, 0, size);
  if (fetch) PW_TRY(fetch(packs));
  PW_ASSIGN(image::WorkingSet ws, read_working_set(r));
  PW_ASSIGN(auto ranges, eager_ranges(r, ws));
  packs.clear();
  for (const auto& [path, list] : ranges)
    for (const auto& [off, len] : list) add_packs(path, off, len);
  if (fetch) PW_TRY(fetch(packs));
  PW_ASSIGN(stdfs::path dir, make_lazy_copy(ctx, r));
  return std::optional<stdfs::path>(std::move(dir));
}

namespace {

// An image still being pulled: restored lazily from the lazy copy the pull made, its other
// pages served as their packs arrive.
Result<std::optional<LoadedImage>> open_pulling(const engine::Context& ctx, const store::Store& st,
                                                const std::string& name, const PullInProgress& pull,
                                                const std::string& paging) {
  auto reader = store::ImageReader::open(st, pull.manifest_digest);
  if (!reader.ok()) return std::move(reader).error().with_context("image " + name + " (being pulled)");
  auto text = fs::read_file(pull.lazy_copy / image::kManifestFile, 16 << 20);
  if (!text.ok() || *text != reader->manifest_json())
    return Error(ErrorKind::kInvalidInput, "image " + name + " (being pulled): its lazy copy " +
                                               pull.lazy_copy.string() + " is not the pulled image's");
  auto manifest = image::parse_manifest(*text);
  if (!manifest.ok()) return std::move(manifest).error().with_context("image " + name);
  auto spec = image::stored_spec(*manifest);
  if (!spec.ok()) return std::move(spec).error().with_context("image " + name + ": stored spec is invalid");
  if (requested_paging(ctx, *spec, paging) == "eager")
    return Error(ErrorKind::kConflict,
                 "image " + name + " is still being pulled: an eager restore needs all of it; "
                 "wait for the pull, or restore lazily (--paging lazy)");
  ctx.say("image " + name + " is still being pulled; restoring lazily, its pages served as they arrive");
  LoadedImage img;
  img.name = name;
  img.dir = pull.lazy_copy;
  img.store_digest = pull.manifest_digest;
  img.pages_from_store = pull.manifest_digest;
  img.pull_lock = pull.lock;
  img.manifest = std::move(manifest).value();
  img.spec = std::move(spec).value();
  return std::optional<LoadedImage>(std::move(img));
}

}  // namespace

// In load.cpp: a LoadedImage from a lazy copy when that is what the start needs.
Result<std::optional<LoadedImage>> open_lazy_copy(const engine::Context& ctx, const std::string& name,
                                                  const std::string& paging) {
  std::error_code ec;
  if (stdfs::exists(ctx.image_dir(name) / image::kManifestFile, ec)) return std::optional<LoadedImage>();
  PW_ASSIGN(store::Store st, open_store(ctx));
  auto stored = st.stored_image(name);
  if (!stored.ok() && stored.error().kind() == ErrorKind::kNotFound) {
    PW_ASSIGN(std::optional<PullInProgress> pulling, pull_in_progress(ctx, name, true));
    if (pulling) return open_pulling(ctx, st, name, *pulling, paging);
    stored = st.stored_image(name);  // the pull may have ended meanwhile
    if (!stored.ok() && stored.error().kind() == ErrorKind::kNotFound) return std::optional<LoadedImage>();
  }
  if (!stored.ok()) return std::move(stored).error();
  // A lazy copy made before (by the pull, or an earlier start): its manifest.json must be the
  // one the store holds; the store's config of the image (every chunk) is not read again.
  const stdfs::path existing = lazy_copies_dir(ctx) / digest_hex(stored->manifest_digest);
  std::string manifest_json;
  stdfs::path dir;
  if (auto text = fs::read_file(existing / image::kManifestFile, 16 << 20);
      text.ok() && sha256_hex(*text) == stored->manifest_json_sha256) {
    manifest_json = std::move(text).value();
    dir = existing;
  }
  std::optional<store::ImageReader> reader;
  if (dir.empty()) {
    auto r = store::ImageReader::open(st, stored->manifest_digest);
    if (!r.ok()) return std::move(r).error().with_context("image " + name);
    reader.emplace(std::move(r).value());
    manifest_json = reader->manifest_json();
  }
  auto manifest = image::parse_manifest(manifest_json);
  if (!manifest.ok()) return std::move(manifest).error().with_context("image " + name);
  auto spec = image::stored_spec(*manifest);
  if (!spec.ok()) return std::move(spec).error().with_context("image " + name + ": stored spec is invalid");
  PW_ASSIGN(bool lazy, restore_is_lazy(ctx, *manifest, *spec, paging));
  if (!lazy) return std::optional<LoadedImage>();
  if (dir.empty()) {
    ctx.say("image " + name + ": no unpacked copy here; restoring lazily straight from the store");
    PW_ASSIGN(dir, make_lazy_copy(ctx, *reader));
  }
  LoadedImage img;
  img.name = name;
  img.dir = dir;
  img.store_digest = stored->manifest_digest;
  img.pages_from_store = img.store_digest;
  img.manifest = std::move(manifest).value();
  img.spec = std::move(spec).value();
  return std::optional<LoadedImage>(std::move(img));
}

Result<bool> prepare_lazy_copy(const engine::Context& ctx, const std::string& name) {
  PW_ASSIGN(store::Store st, open_store(ctx));
  PW_ASSIGN(store::ImageReader reader, store::ImageReader::open(st, name));
  auto made = make_default_lazy_copy(ctx, reader, {});
  if (!made.ok()) return std::move(made).error().with_context("image " + name);
  return made->has_value();
}

int page_server_main(const std::vector<std::string>& args) {
  if (args.size() != 2 && args.size() != 3) {
    std::fprintf(stderr, "usage: prewarm page-server STORE_DIR MANIFEST_DIGEST [PULL_LOCK] (fd 3: the daemon)\n");
    return 2;
  }
  auto fail = [](const Error& e) {
    std::fprintf(stderr, "prewarm page-server: %s\n", e.to_string().c_str());
    return 1;
  };
  auto st = store::Store::open(args[0]);
  if (!st.ok()) return fail(st.error());
  auto reader = store::ImageReader::open(*st, args[1]);
  if (!reader.ok()) return fail(reader.error());
  if (args.size() == 3) {
    // The image is still being pulled: a pack not here yet is waited for while the pull runs.
    const stdfs::path lock = args[2];
    reader->on_missing_pack([lock](const std::string& digest, const stdfs::path& where) -> Status {
      std::error_code ec;
      for (;;) {
        const bool pulling = pull_lock_held(lock);
        if (stdfs::exists(where, ec)) return {};
        if (!pulling)
          return Error(ErrorKind::kNotFound,
                       "pack " + digest + " is not in the store, and the pull that was to bring it "
                       "has stopped (pull the image again)");
        ::usleep(2000);
      }
    });
  }
  std::map<pid_t, TaskPages> tasks;
  criu::PageSource source = [&](pid_t pid, uint64_t vaddr, uint64_t pages, char* out) -> Status {
    auto it = tasks.find(pid);
    if (it == tasks.end()) {
      const std::string path = std::string(image::kCheckpointDir) + "/pagemap-" + std::to_string(pid) + ".img";
      PW_ASSIGN(TaskPages t, read_task_pages(*reader, path));
      it = tasks.emplace(pid, std::move(t)).first;
    }
    const auto& entries = it->second.entries;
    while (pages > 0) {
      auto e = std::upper_bound(entries.begin(), entries.end(), vaddr,
                                [](uint64_t a, const Placed& p) { return a < p.vaddr; });
      if (e == entries.begin() || vaddr >= std::prev(e)->vaddr + std::prev(e)->pages * kPage)
        return Error(ErrorKind::kInvalidInput,
                     "no page at " + std::to_string(vaddr) + " in the checkpoint");
      --e;
      const uint64_t n = std::min(pages, (e->vaddr + e->pages * kPage - vaddr) / kPage);
      PW_TRY(reader->read(it->second.file, e->offset + (vaddr - e->vaddr), n * kPage, out));
      vaddr += n * kPage;
      out += n * kPage;
      pages -= n;
    }
    return {};
  };
  Status served = criu::serve_page_requests(3, source);
  if (!served.ok()) return fail(served.error());
  return 0;
}

}  // namespace prewarm::images
