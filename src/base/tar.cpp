// The tar codec: header encoding and decoding, checksums, pax records, padding.
#include "base/tar.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "base/unique_fd.h"

namespace prewarm::tar {
namespace {

constexpr uint64_t kMaxOctal11 = 077777777777ULL;  // what an 11-digit ustar size field holds
constexpr size_t kMaxPaxHeader = 1 << 20;
constexpr size_t kMaxLongName = 64 << 10;
constexpr std::array<char, 2 * kBlock> kZeros{};

// width-1 octal digits and a NUL; a larger value in GNU base-256 (read by GNU tar and Go's
// archive/tar alike; a pax record says the same for strict POSIX readers where it matters).
void put_number(char* field, size_t width, uint64_t value) {
  if (value >> (3 * (width - 1)) == 0) {
    field[width - 1] = 0;
    for (size_t i = width - 1; i-- > 0; value >>= 3) field[i] = static_cast<char>('0' + (value & 7));
    return;
  }
  for (size_t i = width; i-- > 1; value >>= 8) field[i] = static_cast<char>(value & 0xff);
  field[0] = static_cast<char>(0x80);
}

std::string pax_record(const std::string& key, const std::string& value) {
  size_t body = key.size() + value.size() + 3;  // ' ', '=', '\n'
  size_t total = body + 1;
  while (std::to_string(total).size() + body != total) total = std::to_string(total).size() + body;
  return std::to_string(total) + " " + key + "=" + value + "\n";
}

uint64_t padding(uint64_t size) { return (kBlock - size % kBlock) % kBlock; }

Result<uint64_t> parse_number(const char* field, size_t width, const char* what,
                              const std::string& where) {
  const auto* f = reinterpret_cast<const unsigned char*>(field);
  if (f[0] & 0x80) {
    if (f[0] == 0xff) return Error(where + ": negative " + what + " in a tar header");
    uint64_t v = f[0] & 0x7f;
    for (size_t i = 1; i < width; ++i) {
      if (v >> 56) return Error(where + ": " + what + " in a tar header is out of range");
      v = (v << 8) | f[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < width && (f[i] == ' ' || f[i] == 0)) ++i;
  uint64_t v = 0;
  for (; i < width && f[i] >= '0' && f[i] <= '7'; ++i) {
    if (v >> 60) return Error(where + ": " + what + " in a tar header is out of range");
    v = v * 8 + (f[i] - '0');
  }
  for (; i < width; ++i)
    if (f[i] != ' ' && f[i] != 0)
      return Error(where + ": " + what + " field of a tar header is not a number");
  return v;
}

std::optional<uint64_t> parse_decimal(const std::string& s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

// "seconds[.fraction]", possibly negative; the fraction is cut to nanoseconds.
std::optional<std::pair<int64_t, uint32_t>> parse_pax_time(const std::string& s) {
  bool neg = !s.empty() && s[0] == '-';
  std::string body = neg ? s.substr(1) : s;
  size_t dot = body.find('.');
  auto secs = parse_decimal(body.substr(0, dot));
  if (!secs || *secs > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
  uint32_t nsec = 0;
  if (dot != std::string::npos) {
    std::string frac = body.substr(dot + 1);
    if (frac.empty() || frac.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    frac = (frac + "000000000").substr(0, 9);
    nsec = static_cast<uint32_t>(std::stoul(frac));
  }
  int64_t v = static_cast<int64_t>(*secs);
  if (neg) {  // -1.5 is 2 seconds before and half a second after: keep nsec in [0, 1e9)
    v = -v;
    if (nsec) {
      v -= 1;
      nsec = 1000000000 - nsec;
    }
  }
  return std::pair{v, nsec};
}

std::string c_string(const char* field, size_t width) {
  return std::string(field, strnlen(field, width));
}

}  // namespace

Status write_all(int fd, const char* data, size_t n, bool socket, const std::string& what) {
  while (n > 0) {
    // SAFETY: a socket peer (the compressor) may die; MSG_NOSIGNAL turns SIGPIPE into EPIPE.
    ssize_t w = socket ? ::send(fd, data, n, MSG_NOSIGNAL) : ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Error::sys("write", errno, what);
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}

Result<size_t> read_full(int fd, char* buf, size_t n, const std::string& what) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Error::sys("read", errno, what);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

Result<std::string> clean_name(std::string_view raw, const std::string& where) {
  if (!raw.empty() && raw.front() == '/')
    return Error(where + ": entry " + std::string(raw) +
                 " has an absolute path; refusing an archive that writes outside its directory");
  std::string out;
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string_view::npos) slash = raw.size();
    std::string_view comp = raw.substr(pos, slash - pos);
    if (comp == "..")
      return Error(where + ": entry " + std::string(raw) +
                   " contains \"..\"; refusing an archive that writes outside its directory");
    if (!comp.empty() && comp != ".") {
      if (!out.empty()) out += '/';
      out += comp;
    }
    pos = slash + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

Writer::Writer(int fd, bool socket, std::string what, Sha256Stream* hash)
    : what_(std::move(what)), hash_(hash) {
  sink_ = [fd, socket, w = what_](const char* data, size_t n) {
    return write_all(fd, data, n, socket, w);
  };
}

Status Writer::dir(const std::string& name, const Meta& meta) {
  return header(name + "/", '5', 0, meta);
}

Status Writer::bytes(const std::string& name, std::string_view data, const Meta& meta) {
  PW_TRY(header(name, '0', data.size(), meta));
  PW_TRY(out(data.data(), data.size()));
  return pad(data.size());
}

Status Writer::file(const std::string& name, const std::filesystem::path& src, uint64_t size,
                    const Meta& meta) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in.valid()) return Error::sys("open", errno, src.string());
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return Error::sys("stat", errno, src.string());
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size)
    return Error(src.string() + " changed while being archived (expected " +
                 std::to_string(size) + " bytes)");
  PW_TRY(header(name, '0', size, meta));
  std::vector<char> buf(1 << 20);
  for (uint64_t left = size; left > 0;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
    PW_ASSIGN(size_t got, read_full(in.get(), buf.data(), want, src.string()));
    if (got == 0) return Error(src.string() + " shrank while being archived");
    PW_TRY(out(buf.data(), got));
    left -= got;
  }
  return pad(size);
}

Status Writer::symlink(const std::string& name, const std::string& target, const Meta& meta) {
  return header(name, '2', 0, meta, target);
}

Status Writer::whiteout(const std::string& name, int64_t mtime) {
  return header(name, '3', 0, {0, 0, 0, mtime});
}

Status Writer::finish() { return out(kZeros.data(), kZeros.size()); }

Status Writer::header(const std::string& name, char type, uint64_t size, const Meta& meta,
                      const std::string& link) {
  const bool long_name = name.size() > 100;
  const bool long_link = link.size() > 100;
  const bool big = size > kMaxOctal11;
  if (long_name || long_link || big) {
    std::string records;
    if (long_name) records += pax_record("path", name);
    if (long_link) records += pax_record("linkpath", link);
    if (big) records += pax_record("size", std::to_string(size));
    std::string base = name.substr(name.find_last_of('/', name.size() - 2) + 1);
    PW_TRY(block(("PaxHeaders/" + base).substr(0, 100), 'x', records.size(),
                 {0644, 0, 0, meta.mtime}));
    PW_TRY(out(records.data(), records.size()));
    PW_TRY(pad(records.size()));
  }
  return block(name.substr(0, 100), type, size, meta, link.substr(0, 100));
}

Status Writer::block(const std::string& name, char type, uint64_t size, const Meta& meta,
                     const std::string& link) {
  std::array<char, kBlock> h{};
  std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
  put_number(&h[100], 8, meta.mode & 07777);
  put_number(&h[108], 8, meta.uid);
  put_number(&h[116], 8, meta.gid);
  put_number(&h[124], 12, size);
  put_number(&h[136], 12, static_cast<uint64_t>(std::max<int64_t>(0, meta.mtime)));
  std::memset(&h[148], ' ', 8);
  h[156] = type;
  std::memcpy(&h[157], link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memcpy(&h[265], "root", 4);
  std::memcpy(&h[297], "root", 4);
  put_number(&h[329], 8, 0);
  put_number(&h[337], 8, 0);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(&h[148], 8, "%06o", sum);  // six digits, NUL, and the space already there
  return out(h.data(), h.size());
}

Status Writer::pad(uint64_t size) {
  uint64_t n = padding(size);
  return n ? out(kZeros.data(), static_cast<size_t>(n)) : Status{};
}

// ---------------------------------------------------------------------------------------------
// Reader

Reader::Reader(int fd, std::string where) : where_(std::move(where)) {
  source_ = [fd, w = where_](char* buf, size_t n) { return read_full(fd, buf, n, w); };
}

std::string Reader::at() const {
  return where_ + " (tar header at byte " + std::to_string(header_offset_) + ")";
}

Result<std::optional<Entry>> Reader::next() {
  PW_TRY(skip(remaining_ + padding_));
  remaining_ = padding_ = 0;
  std::map<std::string, std::string> pax;
  std::string long_name, long_link;
  for (int extended = 0;; ++extended) {
    if (extended > 16) return Error(at() + ": too many extended headers in a row");
    header_offset_ = offset_;
    std::array<char, kBlock> h{};
    PW_ASSIGN(size_t got, source_(h.data(), kBlock));
    offset_ += got;
    if (got == 0)
      return Error(where_ + ": ends without the end-of-archive marker (truncated download?)");
    if (got < kBlock) return Error(at() + ": truncated in a tar header");
    if (std::all_of(h.begin(), h.end(), [](char c) { return c == 0; }))
      return std::optional<Entry>();
    PW_TRY(check_sum(h.data()));

    Entry e;
    e.type = h[156];
    PW_ASSIGN(e.size, parse_number(&h[124], 12, "size", at()));
    PW_ASSIGN(uint64_t mode, parse_number(&h[100], 8, "mode", at()));
    e.mode = static_cast<unsigned>(mode & 07777);
    PW_ASSIGN(e.uid, parse_number(&h[108], 8, "uid", at()));
    PW_ASSIGN(e.gid, parse_number(&h[116], 8, "gid", at()));
    PW_ASSIGN(uint64_t mtime, parse_number(&h[136], 12, "mtime", at()));
    e.mtime = static_cast<int64_t>(mtime);
    if (e.type == '3' || e.type == '4') {
      PW_ASSIGN(uint64_t major, parse_number(&h[329], 8, "device major", at()));
      PW_ASSIGN(uint64_t minor, parse_number(&h[337], 8, "device minor", at()));
      e.dev_major = static_cast<uint32_t>(major);
      e.dev_minor = static_cast<uint32_t>(minor);
    }
    e.name = c_string(&h[0], 100);
    e.link = c_string(&h[157], 100);
    // POSIX ustar ("ustar\0") splits long names into prefix + name; GNU ("ustar  ") does not.
    if (std::memcmp(&h[257], "ustar\0", 6) == 0) {
      std::string prefix = c_string(&h[345], 155);
      if (!prefix.empty()) e.name = prefix + "/" + e.name;
    }
    if (e.type == 'x' || e.type == 'g' || e.type == 'L' || e.type == 'K') {
      size_t cap = (e.type == 'x' || e.type == 'g') ? kMaxPaxHeader : kMaxLongName;
      if (e.size > cap)
        return Error(at() + ": an extended header of " + std::to_string(e.size) +
                     " bytes (more than " + std::to_string(cap) + ")");
      std::string data(static_cast<size_t>(e.size), '\0');
      PW_TRY(read_exact(data.data(), data.size()));
      PW_TRY(skip(padding(e.size)));
      if (e.type == 'x') PW_TRY(parse_pax(data, pax));
      if (e.type == 'L') long_name = data.substr(0, strnlen(data.data(), data.size()));
      if (e.type == 'K') long_link = data.substr(0, strnlen(data.data(), data.size()));
      continue;  // 'g' (global pax) only carries defaults this reader has no use for
    }
    if (!long_name.empty()) e.name = long_name;
    if (!long_link.empty()) e.link = long_link;
    if (auto it = pax.find("path"); it != pax.end()) e.name = it->second;
    if (auto it = pax.find("linkpath"); it != pax.end()) e.link = it->second;
    if (auto it = pax.find("size"); it != pax.end()) {
      auto v = parse_decimal(it->second);
      if (!v) return Error(at() + ": pax size " + it->second + " is not a number");
      e.size = *v;
    }
    for (const char* key : {"uid", "gid"}) {
      auto it = pax.find(key);
      if (it == pax.end()) continue;
      auto v = parse_decimal(it->second);
      if (!v) return Error(at() + ": pax " + key + " " + it->second + " is not a number");
      (key[0] == 'u' ? e.uid : e.gid) = *v;
    }
    if (auto it = pax.find("mtime"); it != pax.end()) {
      auto t = parse_pax_time(it->second);
      if (!t) return Error(at() + ": pax mtime " + it->second + " is not a time");
      e.mtime = t->first;
      e.mtime_nsec = t->second;
    }
    for (const auto& [k, v] : pax) {
      if (k.rfind("GNU.sparse.", 0) == 0) e.sparse = true;
      if (k.rfind("SCHILY.xattr.", 0) == 0 && k.size() > 13) e.xattrs[k.substr(13)] = v;
    }
    if (e.type == 'S') e.sparse = true;
    // Links, devices and FIFOs carry no data whatever their size field says.
    bool has_data =
        e.type == '0' || e.type == '\0' || e.type == '7' || e.type == '5' || e.type == 'S';
    remaining_ = has_data ? e.size : 0;
    padding_ = padding(remaining_);
    return std::optional<Entry>(std::move(e));
  }
}

Status Reader::copy_to(int out_fd, const std::string& dest) {
  std::vector<char> buf(1 << 20);
  while (remaining_ > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(remaining_, buf.size()));
    PW_TRY(read_exact(buf.data(), want));
    remaining_ -= want;
    PW_TRY(write_all(out_fd, buf.data(), want, false, dest));
  }
  PW_TRY(skip(padding_));
  padding_ = 0;
  return {};
}

Result<std::string> Reader::read_data(size_t max) {
  if (remaining_ > max)
    return Error(at() + ": entry data of " + std::to_string(remaining_) + " bytes (more than " +
                 std::to_string(max) + ")");
  std::string out(static_cast<size_t>(remaining_), '\0');
  PW_TRY(read_exact(out.data(), out.size()));
  remaining_ = 0;
  PW_TRY(skip(padding_));
  padding_ = 0;
  return out;
}

Status Reader::check_sum(const char* h) {
  PW_ASSIGN(uint64_t stored, parse_number(h + 148, 8, "checksum", at()));
  uint64_t usum = 0;
  int64_t ssum = 0;  // some historic writers summed signed chars
  for (size_t i = 0; i < kBlock; ++i) {
    bool in_sum = i >= 148 && i < 156;
    usum += in_sum ? ' ' : static_cast<unsigned char>(h[i]);
    ssum += in_sum ? ' ' : static_cast<signed char>(h[i]);
  }
  if (stored != usum && static_cast<int64_t>(stored) != ssum)
    return Error(at() + ": header checksum mismatch (not a tar archive, or corrupt)");
  return {};
}

Status Reader::parse_pax(const std::string& data, std::map<std::string, std::string>& pax) {
  size_t pos = 0;
  while (pos < data.size()) {
    size_t space = data.find(' ', pos);
    if (space == std::string::npos || space == pos) break;
    auto len = parse_decimal(data.substr(pos, space - pos));
    if (!len || *len < 5 || *len > data.size() - pos || data[pos + *len - 1] != '\n')
      return Error(at() + ": malformed pax extended header");
    std::string rec = data.substr(space + 1, pos + *len - 1 - (space + 1));
    size_t eq = rec.find('=');
    if (eq == std::string::npos) return Error(at() + ": malformed pax record");
    pax[rec.substr(0, eq)] = rec.substr(eq + 1);
    pos += *len;
  }
  return {};
}

Status Reader::read_exact(char* buf, size_t n) {
  PW_ASSIGN(size_t got, source_(buf, n));
  offset_ += got;
  if (got < n) return Error(at() + ": truncated in the data of an entry");
  return {};
}

Status Reader::skip(uint64_t n) {
  char buf[65536];
  while (n > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(n, sizeof buf));
    PW_TRY(read_exact(buf, want));
    n -= want;
  }
  return {};
}

}  // namespace prewarm::tar
