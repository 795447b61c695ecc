// SHA-256 through OpenSSL's EVP interface.
#include "base/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <memory>
#include <vector>

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

EVP_MD_CTX* md(void* ctx) { return static_cast<EVP_MD_CTX*>(ctx); }

}  // namespace

std::string sha256_hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), out, &n, EVP_sha256(), nullptr);
  return to_hex(out, n);
}

std::array<uint8_t, 32> sha256_bytes(std::string_view data) {
  std::array<uint8_t, 32> out{};
  unsigned n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

Result<std::string> sha256_file(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::sys("open", errno, path.string());
  Sha256Stream hash;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::sys("read", errno, path.string());
    }
    if (n == 0) break;
    hash.update(buf.data(), static_cast<size_t>(n));
  }
  return hash.final_hex();
}

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) { reset(); }
Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(md(ctx_)); }
void Sha256Stream::reset() { EVP_DigestInit_ex(md(ctx_), EVP_sha256(), nullptr); }
void Sha256Stream::update(const void* data, size_t size) {
  EVP_DigestUpdate(md(ctx_), data, size);
}
std::string Sha256Stream::final_hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(md(ctx_), out, &n);
  return to_hex(out, n);
}

}  // namespace prewarm
