// CRIU pagemap images (protobuf entries after two magic numbers) and working-set files.
#include "image/pagemap.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

#include "base/fs.h"
#include "pagemap.pb.h"

namespace prewarm::image {
namespace {

namespace stdfs = std::filesystem;

constexpr uint32_t kImgCommonMagic = 0x54564319;  // CRIU's IMG_COMMON_MAGIC
constexpr uint32_t kPagemapMagic = 0x56084025;    // PAGEMAP_MAGIC
constexpr uint64_t kPage = 4096;
constexpr size_t kMaxPagemap = 64 << 20;

Error bad(const std::string& what) {
  return Error(ErrorKind::kInvalidInput, "pagemap image: " + what);
}

bool next_record(std::string_view& in, std::string_view& rec) {
  if (in.size() < 4) return false;
  uint32_t n = 0;
  std::memcpy(&n, in.data(), 4);
  if (n > in.size() - 4) return false;
  rec = in.substr(4, n);
  in.remove_prefix(4 + n);
  return true;
}

void put_record(std::string& out, const google::protobuf::MessageLite& m) {
  std::string body = m.SerializeAsString();
  uint32_t n = static_cast<uint32_t>(body.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out += body;
}

// Sorted, merged ranges.
std::vector<PageRange> normalized(std::vector<PageRange> r) {
  std::sort(r.begin(), r.end(), [](const PageRange& a, const PageRange& b) { return a.start < b.start; });
  std::vector<PageRange> out;
  for (const auto& x : r) {
    if (x.pages == 0) continue;
    if (!out.empty() && out.back().start + out.back().pages * kPage >= x.start) {
      uint64_t end = std::max(out.back().start + out.back().pages * kPage, x.start + x.pages * kPage);
      out.back().pages = (end - out.back().start) / kPage;
    } else {
      out.push_back(x);
    }
  }
  return out;
}

template <typename T>
bool parse_num(std::string_view s, T& v, int base = 10) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  return ec == std::errc() && p == s.data() + s.size();
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> f;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
    if (j > i) f.push_back(line.substr(i, j - i));
    i = j;
  }
  return f;
}

template <typename Fn>
Status for_each_line(std::string_view text, Fn fn) {
  size_t lineno = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    PW_TRY(fn(lineno, fields(line)));
  }
  return {};
}

}  // namespace

bool is_pagemap_name(const std::string& name) {
  return name.rfind("pagemap-", 0) == 0 && name.size() > 12 &&
         name.compare(name.size() - 4, 4, ".img") == 0;
}

Result<pid_t> pagemap_pid(const std::string& name) {
  pid_t pid = 0;
  if (!is_pagemap_name(name) || !parse_num(std::string_view(name).substr(8, name.size() - 12), pid) ||
      pid <= 0)
    return bad(name + ": not named pagemap-<pid>.img");
  return pid;
}

bool is_pages_name(const std::string& name) {
  return name.rfind("pages-", 0) == 0 && name.size() > 10 &&
         name.compare(name.size() - 4, 4, ".img") == 0;
}

Result<Pagemap> parse_pagemap(std::string_view in) {
  if (in.size() < 8) return bad("truncated");
  uint32_t m1 = 0, m2 = 0;
  std::memcpy(&m1, in.data(), 4);
  std::memcpy(&m2, in.data() + 4, 4);
  if (m1 != kImgCommonMagic || m2 != kPagemapMagic) return bad("wrong magic");
  in.remove_prefix(8);
  Pagemap pm;
  std::string_view rec;
  if (!next_record(in, rec)) return bad("no head");
  ::pagemap_head head;
  if (!head.ParseFromArray(rec.data(), static_cast<int>(rec.size()))) return bad("bad head");
  pm.pages_id = head.pages_id();
  while (!in.empty()) {
    if (!next_record(in, rec)) return bad("truncated entry");
    ::pagemap_entry e;
    if (!e.ParseFromArray(rec.data(), static_cast<int>(rec.size()))) return bad("bad entry");
    PagemapEntry out;
    out.vaddr = e.vaddr();
    out.nr_pages = e.has_nr_pages() ? e.nr_pages() : e.compat_nr_pages();
    out.flags = e.has_flags() ? e.flags() : kPagemapPresent;
    if (out.vaddr % kPage != 0) return bad("unaligned entry");
    pm.entries.push_back(out);
  }
  return pm;
}

std::string serialize_pagemap(const Pagemap& pm) {
  std::string out;
  out.append(reinterpret_cast<const char*>(&kImgCommonMagic), 4);
  out.append(reinterpret_cast<const char*>(&kPagemapMagic), 4);
  ::pagemap_head head;
  head.set_pages_id(pm.pages_id);
  put_record(out, head);
  for (const auto& e : pm.entries) {
    ::pagemap_entry pe;
    pe.set_vaddr(e.vaddr);
    pe.set_compat_nr_pages(0);
    pe.set_nr_pages(e.nr_pages);
    pe.set_flags(e.flags);
    put_record(out, pe);
  }
  return out;
}

Result<WorkingSet> parse_working_set(std::string_view text) {
  WorkingSet ws;
  PW_TRY(for_each_line(text, [&](size_t n, const std::vector<std::string_view>& f) -> Status {
    pid_t pid = 0;
    PageRange r;
    if (f.size() != 3 || !parse_num(f[0], pid) || pid <= 0 || !parse_num(f[1], r.start, 16) ||
        !parse_num(f[2], r.pages) || r.start % kPage != 0 || r.pages == 0)
      return Error(ErrorKind::kInvalidInput,
                   "working set, line " + std::to_string(n) + ": expected '<pid> <hex address> <pages>'");
    ws[pid].push_back(r);
    return {};
  }));
  for (auto& [pid, r] : ws) r = normalized(std::move(r));
  return ws;
}

std::string format_working_set(const WorkingSet& ws) {
  std::string out = "# pid address pages: the pages the app touched from resume until warm\n";
  char buf[64];
  for (const auto& [pid, ranges] : ws)
    for (const auto& r : ranges) {
      int n = std::snprintf(buf, sizeof buf, "%d %llx %llu\n", pid,
                            static_cast<unsigned long long>(r.start),
                            static_cast<unsigned long long>(r.pages));
      out.append(buf, static_cast<size_t>(n));
    }
  return out;
}

Result<WorkingSet> working_set_from_faults(std::string_view record) {
  WorkingSet ws;
  PW_TRY(for_each_line(record, [&](size_t n, const std::vector<std::string_view>& f) -> Status {
    pid_t pid = 0;
    uint64_t addr = 0;
    if (f.size() != 2 || !parse_num(f[0], pid) || pid <= 0 || !parse_num(f[1], addr, 16))
      return Error(ErrorKind::kInvalidInput,
                   "fault record, line " + std::to_string(n) + ": expected '<pid> <hex address>'");
    ws[pid].push_back({addr & ~(kPage - 1), 1});
    return {};
  }));
  for (auto& [pid, r] : ws) r = normalized(std::move(r));
  return ws;
}

uint64_t working_set_pages(const WorkingSet& ws) {
  uint64_t n = 0;
  for (const auto& [pid, ranges] : ws)
    for (const auto& r : ranges) n += r.pages;
  return n;
}

uint64_t make_pages_eager(Pagemap& pm, const std::vector<PageRange>& ranges_in) {
  const std::vector<PageRange> ranges = normalized(ranges_in);
  uint64_t eager = 0;
  std::vector<PagemapEntry> out;
  out.reserve(pm.entries.size());
  size_t ri = 0;
  for (const auto& e : pm.entries) {
    if (!(e.flags & kPagemapLazy)) {
      out.push_back(e);
      continue;
    }
    const uint64_t end = e.vaddr + e.nr_pages * kPage;
    uint64_t at = e.vaddr;
    // Ranges are sorted, entries too (CRIU writes them in address order); rewind for safety.
    while (ri > 0 && ranges[ri - 1].start + ranges[ri - 1].pages * kPage > e.vaddr) --ri;
    auto emit = [&](uint64_t from, uint64_t to, uint32_t flags) {
      if (to <= from) return;
      out.push_back({from, (to - from) / kPage, flags});
    };
    while (at < end) {
      while (ri < ranges.size() && ranges[ri].start + ranges[ri].pages * kPage <= at) ++ri;
      if (ri == ranges.size() || ranges[ri].start >= end) {
        emit(at, end, e.flags);
        break;
      }
      const uint64_t rs = std::max(at, ranges[ri].start);
      const uint64_t re = std::min(end, ranges[ri].start + ranges[ri].pages * kPage);
      emit(at, rs, e.flags);
      emit(rs, re, e.flags & ~kPagemapLazy);
      eager += (re - rs) / kPage;
      at = re;
    }
  }
  pm.entries = std::move(out);
  return eager;
}

std::pair<uint64_t, uint64_t> pagemap_pages(const Pagemap& pm) {
  uint64_t present = 0, lazy = 0;
  for (const auto& e : pm.entries) {
    if (e.flags & kPagemapPresent) present += e.nr_pages;
    if ((e.flags & kPagemapLazy) && (e.flags & kPagemapPresent)) lazy += e.nr_pages;
  }
  return {present, lazy};
}

Result<LazyView> make_lazy_view(const stdfs::path& checkpoint_dir, const stdfs::path& view,
                                const WorkingSet& ws) {
  std::vector<std::string> pagemaps;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(checkpoint_dir, ec)) {
    std::string name = e.path().filename().string();
    if (is_pagemap_name(name)) pagemaps.push_back(std::move(name));
  }
  if (ec) return Error::sys("read directory", ec.value(), checkpoint_dir.string());
  if (pagemaps.empty())
    return Error(ErrorKind::kInvalidInput, checkpoint_dir.string() + ": no pagemap-*.img");
  PW_TRY(fs::symlink_view(checkpoint_dir, view, pagemaps));
  LazyView out;
  out.dir = view;
  uint64_t wanted = 0;
  for (const auto& name : pagemaps) {
    PW_ASSIGN(pid_t pid, pagemap_pid(name));
    PW_ASSIGN(std::string text, fs::read_file(checkpoint_dir / name, kMaxPagemap));
    auto pm = parse_pagemap(text);
    if (!pm.ok()) return std::move(pm).error().with_context((checkpoint_dir / name).string());
    if (auto it = ws.find(pid); it != ws.end()) {
      for (const auto& r : it->second) wanted += r.pages;
      out.working_set += make_pages_eager(*pm, it->second);
    }
    auto [present, lazy] = pagemap_pages(*pm);
    out.pages += present;
    out.lazy_pages += lazy;
    PW_TRY(fs::write_file(view / name, serialize_pagemap(*pm), 0600));
  }
  out.working_set_stale = out.working_set < wanted;
  for (const auto& [pid, r] : ws)
    if (!stdfs::exists(checkpoint_dir / ("pagemap-" + std::to_string(pid) + ".img")))
      out.working_set_stale = true;
  return out;
}

Result<std::pair<uint64_t, uint64_t>> checkpoint_pages(const stdfs::path& checkpoint_dir) {
  uint64_t present = 0, lazy = 0;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(checkpoint_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!is_pagemap_name(name)) continue;
    PW_ASSIGN(std::string text, fs::read_file(e.path(), kMaxPagemap));
    auto pm = parse_pagemap(text);
    if (!pm.ok()) return std::move(pm).error().with_context(e.path().string());
    auto [p, l] = pagemap_pages(*pm);
    present += p;
    lazy += l;
  }
  if (ec) return Error::sys("read directory", ec.value(), checkpoint_dir.string());
  return std::make_pair(present, lazy);
}

}  // namespace prewarm::image
