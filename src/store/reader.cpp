// ImageReader: a stored image's files read chunk by chunk straight from the packs.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <list>
#include <map>

#include "base/fs.h"
#include "base/sha256.h"
#include "image/image.h"
#include "store/internal.h"
#include "store/store.h"

namespace prewarm::store {

using namespace detail;

namespace {
constexpr size_t kCacheChunks = 64;  // ~2 MiB of ~32 KiB chunks
}  // namespace

struct ImageReader::Impl {
  stdfs::path root;
  Lease lease;
  std::string manifest_digest;
  ChunkTable table;
  std::map<std::string, const ChunkTable::File*> by_path;
  std::vector<UniqueFd> packs;  // open pack blobs, by the table's pack index
  // chunk index -> bytes, most recent first
  std::list<std::pair<uint64_t, std::string>> cache;
  uint64_t chunks_read = 0;
  std::function<Status(const std::string&, const stdfs::path&)> wait_for_pack;

  Result<int> pack_fd(uint32_t pack) {
    if (packs.empty()) packs.resize(table.packs.size());
    if (packs[pack].valid()) return packs[pack].get();
    const stdfs::path p = blob_file(root, table.packs[pack]);
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid() && errno == ENOENT && wait_for_pack) {
      PW_TRY(wait_for_pack(table.packs[pack], p));
      fd.reset(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    }
    if (!fd.valid()) return Error::sys("open pack", errno, p.string());
    packs[pack] = std::move(fd);
    return packs[pack].get();
  }

  Result<const std::string*> chunk(uint64_t index) {
    for (auto it = cache.begin(); it != cache.end(); ++it)
      if (it->first == index) {
        cache.splice(cache.begin(), cache, it);
        return &cache.front().second;
      }
    const ChunkTable::Chunk& c = table.chunks[index];
    const std::string& pack = table.packs[c.pack];
    PW_ASSIGN(int fd, pack_fd(c.pack));
    std::string frame(c.pack_length, '\0');
    size_t got = 0;
    while (got < frame.size()) {
      ssize_t n = ::pread(fd, frame.data() + got, frame.size() - got,
                          static_cast<off_t>(c.pack_offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return Error(ErrorKind::kIo, "pack " + pack + ": short read at " +
                                         std::to_string(c.pack_offset + got), n < 0 ? errno : 0);
      got += static_cast<size_t>(n);
    }
    std::string raw(c.length, '\0');
    PW_TRY(decompress(frame, raw.data(), raw.size(), pack));
    const auto sum = sha256_bytes(raw);
    if (!std::equal(sum.begin(), sum.end(), c.sha256))
      return Error(ErrorKind::kInvalidInput,
                   "pack " + pack + ": a chunk at " + std::to_string(c.pack_offset) +
                       " does not match its SHA-256 (the store is damaged; `prewarm verify`)");
    ++chunks_read;
    cache.emplace_front(index, std::move(raw));
    if (cache.size() > kCacheChunks) cache.pop_back();
    return &cache.front().second;
  }

  Result<const ChunkTable::File*> file(const std::string& path) const {
    auto it = by_path.find(path);
    if (it == by_path.end())
      return Error(ErrorKind::kNotFound, "image " + manifest_digest + " has no file " + path);
    return it->second;
  }

  // The chunks of f, as [begin, end) indexes into table.chunks.
  const ChunkTable::Chunk* begin(const ChunkTable::File& f) const { return table.chunks.data() + f.first; }
  const ChunkTable::Chunk* end(const ChunkTable::File& f) const { return begin(f) + f.count; }
};

ImageReader::ImageReader() : impl_(std::make_unique<Impl>()) {}
ImageReader::ImageReader(ImageReader&&) noexcept = default;
ImageReader& ImageReader::operator=(ImageReader&&) noexcept = default;
ImageReader::~ImageReader() = default;

Result<ImageReader> ImageReader::open(const Store& store, const std::string& name_or_digest) {
  ImageReader r;
  r.impl_->root = store.root();
  PW_ASSIGN(r.impl_->lease, store.lease());
  std::string digest = name_or_digest;
  int64_t size = -1;
  if (name_or_digest.rfind("sha256:", 0) != 0) {
    PW_ASSIGN(IndexEntry entry, find_entry(store.root(), name_or_digest));
    digest = entry.digest;
    size = static_cast<int64_t>(entry.size);
  }
  auto table = load_chunk_table(store.root(), digest, size);
  if (!table.ok()) return std::move(table).error().with_context("image " + name_or_digest);
  r.impl_->manifest_digest = digest;
  r.impl_->table = std::move(table).value();
  for (const auto& f : r.impl_->table.files) r.impl_->by_path[f.path] = &f;
  return r;
}

const std::string& ImageReader::manifest_digest() const { return impl_->manifest_digest; }
const std::string& ImageReader::manifest_json() const { return impl_->table.manifest_json; }
uint64_t ImageReader::chunks_read() const { return impl_->chunks_read; }

std::vector<std::pair<std::string, uint64_t>> ImageReader::files() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& f : impl_->table.files) out.emplace_back(f.path, f.size);
  return out;
}

std::vector<std::string> ImageReader::packs_for(const std::string& path, uint64_t offset,
                                                uint64_t len) const {
  std::vector<std::string> out;
  auto f = impl_->file(path);
  if (!f.ok()) return out;
  for (const auto* c = impl_->begin(**f); c != impl_->end(**f); ++c) {
    if (c->offset + c->length <= offset || c->offset >= offset + len) continue;
    const std::string& pack = impl_->table.packs[c->pack];
    if (std::find(out.begin(), out.end(), pack) == out.end()) out.push_back(pack);
  }
  return out;
}

void ImageReader::on_missing_pack(
    std::function<Status(const std::string& digest, const stdfs::path& where)> wait) {
  impl_->wait_for_pack = std::move(wait);
}

std::pair<uint64_t, uint64_t> ImageReader::chunk_span(const std::string& path, uint64_t offset,
                                                      uint64_t len) const {
  auto f = impl_->file(path);
  if (!f.ok() || len == 0) return {offset, offset};
  using Chunk = ChunkTable::Chunk;
  const Chunk* b = impl_->begin(**f);
  const Chunk* e = impl_->end(**f);
  const Chunk* first = std::upper_bound(b, e, offset, [](uint64_t o, const Chunk& c) { return o < c.offset; });
  if (first != b) --first;
  const Chunk* last = std::lower_bound(b, e, offset + len, [](const Chunk& c, uint64_t o) { return c.offset < o; });
  uint64_t start = first == e ? offset : first->offset;
  uint64_t stop = last == b ? offset + len : (last - 1)->offset + (last - 1)->length;
  return {start, std::max(stop, offset + len)};
}

Status ImageReader::read(const std::string& path, uint64_t offset, uint64_t len, char* out) {
  PW_ASSIGN(const ChunkTable::File* f, impl_->file(path));
  if (offset > f->size || len > f->size - offset)
    return Error(ErrorKind::kInvalidInput, path + ": read of " + std::to_string(len) + " at " +
                                               std::to_string(offset) + " is past its end (" +
                                               std::to_string(f->size) + " bytes)");
  using Chunk = ChunkTable::Chunk;
  const Chunk* b = impl_->begin(*f);
  const Chunk* e = impl_->end(*f);
  const Chunk* it = std::upper_bound(b, e, offset, [](uint64_t o, const Chunk& c) { return o < c.offset; });
  if (it != b) --it;
  uint64_t at = offset, stop = offset + len;
  for (; at < stop && it != e; ++it) {
    if (it->offset + it->length <= at) continue;
    PW_ASSIGN(const std::string* bytes, impl_->chunk(static_cast<uint64_t>(it - impl_->table.chunks.data())));
    const uint64_t from = at - it->offset;
    const uint64_t n = std::min<uint64_t>(it->length - from, stop - at);
    std::copy_n(bytes->data() + from, n, out + (at - offset));
    at += n;
  }
  if (at != stop) return Error(ErrorKind::kInvalidInput, path + ": its chunks do not cover it");
  return {};
}

Status ImageReader::copy_file(const std::string& path, const stdfs::path& dest) {
  PW_ASSIGN(const ChunkTable::File* f, impl_->file(path));
  PW_TRY(fs::make_dirs(dest.parent_path(), 0700));
  UniqueFd fd(::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::sys("create", errno, dest.string());
  Sha256Stream h;
  for (uint64_t k = f->first; k < f->first + f->count; ++k) {
    PW_ASSIGN(const std::string* bytes, impl_->chunk(k));
    h.update(*bytes);
    size_t done = 0;
    while (done < bytes->size()) {
      ssize_t n = ::write(fd.get(), bytes->data() + done, bytes->size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Error::sys("write", errno, dest.string());
      done += static_cast<size_t>(n);
    }
  }
  if (h.final_hex() != f->sha256)
    return Error(ErrorKind::kInvalidInput, path + ": does not match its SHA-256 in the store");
  return {};
}

}  // namespace prewarm::store
