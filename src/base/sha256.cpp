// SHA-256 through nettle: its SHA-NI code hashes at OpenSSL's speed (1.25 against 1.36 GB/s
// here), and it has nothing to set up, where OpenSSL 3's first digest in a process loads its
// configuration and providers (~1.2-1.6 ms, paid by every `prewarm` command that checks a digest).
#include "base/sha256.h"

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include "base/unique_fd.h"

namespace prewarm {
namespace {

std::string to_hex(const unsigned char* d, unsigned n) {
  static const char* kHex = "0123456789abcdef";
  std::string s;
  s.reserve(n * 2);
  for (unsigned i = 0; i < n; ++i) {
    s += kHex[d[i] >> 4];
    s += kHex[d[i] & 15];
  }
  return s;
}

sha256_ctx* md(void* ctx) { return static_cast<sha256_ctx*>(ctx); }

}  // namespace

std::string sha256_hex(std::string_view data) {
  auto out = sha256_bytes(data);
  return to_hex(out.data(), SHA256_DIGEST_SIZE);
}

std::array<uint8_t, 32> sha256_bytes(std::string_view data) {
  sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  std::array<uint8_t, 32> out{};
  sha256_digest(&c, SHA256_DIGEST_SIZE, out.data());
  return out;
}

Result<std::string> sha256_file(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, path.string());
  Sha256Stream hash;
  // Sized to the file (up to 1 MiB) and left uninitialised: zero-filling a fresh 1 MiB buffer
  // faults in 256 pages, which cost more than hashing a small file (a manifest, ~10 KB, is
  // hashed on every start). One byte over the size sees EOF in the same read.
  struct stat st {};
  size_t size = 1 << 20;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode))
    size = std::clamp<size_t>(static_cast<size_t>(st.st_size) + 1, 4096, size);
  std::unique_ptr<char[]> buf(new char[size]);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("read", errno, path.string());
    }
    if (n == 0) break;
    hash.update(buf.get(), static_cast<size_t>(n));
  }
  return hash.final_hex();
}

Sha256Stream::Sha256Stream() : ctx_(new sha256_ctx) { reset(); }
Sha256Stream::~Sha256Stream() { delete md(ctx_); }
void Sha256Stream::reset() { sha256_init(md(ctx_)); }
void Sha256Stream::update(const void* data, size_t size) {
  sha256_update(md(ctx_), size, static_cast<const uint8_t*>(data));
}
std::string Sha256Stream::final_hex() {
  unsigned char out[SHA256_DIGEST_SIZE];
  sha256_digest(md(ctx_), SHA256_DIGEST_SIZE, out);
  return to_hex(out, SHA256_DIGEST_SIZE);
}

}  // namespace prewarm
