// The registry client against the real Debian docker-registry (distribution), started per
// test on 127.0.0.1 with storage in a temporary directory (support/registry_server.h). A
// test-owned TCP proxy cuts or corrupts traffic; a test-owned token server signs JWTs for the
// registry's token auth.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "base/base64.h"
#include "base/clock.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "base/unique_fd.h"
#include "registry/http.h"
#include "registry/registry.h"
#include "support/files.h"
#include "support/registry_server.h"

namespace prewarm::registry {
namespace {

namespace stdfs = std::filesystem;
using prewarm::testing::listen_loopback;
using prewarm::testing::RegistryServer;
using prewarm::testing::registry_skip_reason;
using prewarm::testing::send_all;
using prewarm::testing::slurp;
using prewarm::testing::spit;
using prewarm::testing::TcpProxy;
using prewarm::testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;

Blob random_blob(const stdfs::path& path, uint64_t size, uint64_t seed,
                 std::string media_type = "application/vnd.oci.image.layer.v1.tar") {
  std::mt19937_64 rng(seed);
  std::string data(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }
  spit(path, data);
  return Blob{"sha256:" + sha256_hex(data), size, std::move(media_type), path};
}

std::string descriptor(const Blob& b) {
  return R"({"mediaType":")" + b.media_type + R"(","digest":")" + b.digest +
         R"(","size":)" + std::to_string(b.size) + "}";
}

// An OCI manifest with blobs[0] as config and the rest as layers.
std::string oci_manifest(const std::vector<Blob>& blobs) {
  std::string m = R"({"schemaVersion":2,"mediaType":")" + std::string(kOciManifest) +
                  R"(","config":)" + descriptor(blobs[0]) + R"(,"layers":[)";
  for (size_t i = 1; i < blobs.size(); ++i) m += (i > 1 ? "," : "") + descriptor(blobs[i]);
  return m + "]}";
}

void run_ok(const std::vector<std::string>& argv) {
  auto r = run_checked(argv);
  ASSERT_TRUE(r.ok()) << r.error().to_string();
}

std::string base64url(std::string_view data) {
  std::string s = base64_encode(data);
  for (char& c : s) c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (!s.empty() && s.back() == '=') s.pop_back();
  return s;
}

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// The registry's token server: answers GET /token?service=..&scope=repository:NAME:ACTIONS
// with a JWT (RS256, signed by `openssl dgst`, its certificate in the x5c header) granting
// the requested actions, to the one user it knows.
class TokenServer {
 public:
  TokenServer(stdfs::path dir, std::string user, std::string password)
      : dir_(std::move(dir)), user_(std::move(user)), password_(std::move(password)) {
    listen_ = listen_loopback(&port_);
    thread_ = std::thread([this] { loop(); });
  }
  ~TokenServer() {
    stopping_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
  }
  std::string realm() const { return "http://127.0.0.1:" + std::to_string(port_) + "/token"; }
  int requests() const { return requests_; }
  static constexpr const char* kService = "prewarm-test-registry";
  static constexpr const char* kIssuer = "prewarm-test-issuer";

 private:
  void loop() {
    while (!stopping_) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR) continue;
        return;
      }
      UniqueFd conn(fd);
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos && req.size() < 65536) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      ++requests_;
      std::string reply = answer(req);
      send_all(fd, reply.data(), reply.size());
    }
  }

  static std::string http_reply(const std::string& status, const std::string& body) {
    return "HTTP/1.1 " + status + "\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  }

  std::string answer(const std::string& req) {
    std::string basic = "authorization: basic " + base64_encode(user_ + ":" + password_);
    std::string lower;
    for (char c : req.substr(0, req.find("\r\n\r\n"))) lower += static_cast<char>(std::tolower(c));
    // Base64 is case-sensitive: compare the credentials in their original case.
    size_t at = lower.find("authorization: basic ");
    bool authorized = at != std::string::npos &&
                      req.compare(at + 21, basic.size() - 21, basic, 21) == 0;
    if (!authorized)
      return http_reply("401 Unauthorized", R"({"details":"wrong or missing credentials"})");
    std::string target = req.substr(req.find(' ') + 1);
    target = target.substr(0, target.find(' '));
    std::string scope;
    for (size_t q = target.find('?'); q != std::string::npos;) {
      size_t amp = target.find('&', q + 1);
      std::string kv = target.substr(q + 1, amp == std::string::npos ? std::string::npos : amp - q - 1);
      if (kv.starts_with("scope=")) scope = url_decode(kv.substr(6));
      q = amp;
    }
    // repository:NAME:ACTIONS
    std::string access = "[]";
    size_t first = scope.find(':'), last = scope.rfind(':');
    if (first != std::string::npos && last > first) {
      std::string actions;
      std::string list = scope.substr(last + 1);
      for (size_t s = 0; s <= list.size();) {
        size_t e = list.find(',', s);
        if (e == std::string::npos) e = list.size();
        actions += (actions.empty() ? "\"" : ",\"") + list.substr(s, e - s) + "\"";
        s = e + 1;
      }
      access = R"([{"type":")" + scope.substr(0, first) + R"(","name":")" +
               scope.substr(first + 1, last - first - 1) + R"(","actions":[)" + actions + "]}]";
    }
    auto token = sign(access);
    if (!token.ok()) return http_reply("500 Internal Server Error", "{}");
    return http_reply("200 OK", R"({"token":")" + *token + R"(","expires_in":300})");
  }

  Result<std::string> sign(const std::string& access) {
    PW_ASSIGN(std::string der, fs::read_file(dir_ / "token.der"));
    long now = static_cast<long>(std::time(nullptr));
    std::string header = R"({"typ":"JWT","alg":"RS256","x5c":[")" + base64_encode(der) + R"("]})";
    std::string claims = R"({"iss":")" + std::string(kIssuer) + R"(","sub":")" + user_ +
                         R"(","aud":")" + kService + R"(","exp":)" + std::to_string(now + 300) +
                         R"(,"nbf":)" + std::to_string(now - 10) + R"(,"iat":)" +
                         std::to_string(now) + R"(,"jti":")" + fs::random_hex(8) +
                         R"(","access":)" + access + "}";
    std::string input = base64url(header) + "." + base64url(claims);
    stdfs::path in = dir_ / ("jwt-" + fs::random_hex(4));
    PW_TRY(fs::write_file(in, input));
    auto sig = run_checked({"openssl", "dgst", "-sha256", "-sign", (dir_ / "token.key").string(),
                            "-binary", in.string()});
    std::error_code ec;
    stdfs::remove(in, ec);
    if (!sig.ok()) return std::move(sig).error();
    return input + "." + base64url(*sig);
  }

  stdfs::path dir_;
  std::string user_, password_;
  uint16_t port_ = 0;
  UniqueFd listen_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = registry_skip_reason(); !why.empty()) GTEST_SKIP() << why;
    log::set_level(log::Level::kDebug);  // retries show in the test output
    ::unsetenv("PREWARM_REGISTRY_USER");
    ::unsetenv("PREWARM_REGISTRY_PASSWORD");
    opts_.retry_backoff = std::chrono::milliseconds(50);
    opts_.progress = [this](const std::string& line) {
      std::lock_guard lock(progress_mu_);
      progress_.push_back(line);
    };
  }
  void TearDown() override {
    if (HasFailure() && registry_) std::fprintf(stderr, "registry log:\n%s\n", registry_->log().c_str());
  }

  void start_registry(const RegistryServer::Config& cfg = {}) {
    registry_ = std::make_unique<RegistryServer>();
    auto st = registry_->start(dir_.path() / "registry", cfg);
    ASSERT_TRUE(st.ok()) << st.error().to_string();
  }

  Reference ref(uint16_t port, const std::string& rest = "team/app:v1") {
    return *parse_reference("127.0.0.1:" + std::to_string(port) + "/" + rest);
  }

  // Config plus layers of the given sizes, in dir_/name.
  std::vector<Blob> make_blobs(const std::string& name, const std::vector<uint64_t>& layer_sizes,
                               uint64_t seed) {
    std::vector<Blob> blobs;
    blobs.push_back(random_blob(dir_.path() / name / "config", 300, seed,
                                "application/vnd.oci.image.config.v1+json"));
    for (size_t i = 0; i < layer_sizes.size(); ++i)
      blobs.push_back(random_blob(dir_.path() / name / ("layer" + std::to_string(i)),
                                  layer_sizes[i], seed + i + 1));
    return blobs;
  }

  // The same blobs, with destinations under dir_/name.
  std::vector<Blob> destinations(const std::vector<Blob>& blobs, const std::string& name) {
    std::vector<Blob> out = blobs;
    for (auto& b : out) b.path = dir_.path() / name / b.digest.substr(7);
    return out;
  }

  void expect_same_files(const std::vector<Blob>& a, const std::vector<Blob>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_TRUE(stdfs::exists(b[i].path)) << b[i].path;
      EXPECT_TRUE(slurp(a[i].path) == slurp(b[i].path)) << b[i].digest;
      EXPECT_FALSE(stdfs::exists(b[i].path.string() + ".partial"));
    }
  }

  TempDir dir_{"registry-test"};
  std::unique_ptr<RegistryServer> registry_;
  Options opts_;
  std::mutex progress_mu_;
  std::vector<std::string> progress_;
};

TEST_F(RegistryTest, PushesAndPullsBlobsAndManifestByteExact) {
  start_registry();
  auto blobs = make_blobs("src", {5 * kMiB + 123, 3 * kMiB, 1536 * 1024, 0}, 1);
  std::string manifest = oci_manifest(blobs);
  Stats stats;
  opts_.stats = &stats;
  opts_.chunk_size = 1 * kMiB;
  Reference r = ref(registry_->port());
  auto pushed = push(r, blobs, manifest, std::string(kOciManifest), opts_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  EXPECT_EQ(stats.blobs_uploaded, 5u);
  EXPECT_EQ(stats.upload_starts, 5u);
  EXPECT_EQ(stats.upload_chunks, 1u + 6 + 3 + 2 + 0);  // config, then ceil(size / 1 MiB) per layer
  EXPECT_FALSE(progress_.empty());
  EXPECT_NE(progress_.back().find("manifest sha256:"), std::string::npos) << progress_.back();

  auto m = get_manifest(r, opts_);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(m->json, manifest);
  EXPECT_EQ(m->digest, "sha256:" + sha256_hex(manifest));
  EXPECT_EQ(m->media_type, kOciManifest);
  Reference by_digest = r;
  by_digest.tag.clear();
  by_digest.digest = m->digest;
  auto m2 = get_manifest(by_digest, opts_);
  ASSERT_TRUE(m2.ok()) << m2.error().to_string();
  EXPECT_EQ(m2->json, manifest);

  auto missing = get_manifest(ref(registry_->port(), "team/app:v9"), opts_);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("manifest 'v9' not found"), std::string::npos)
      << missing.error().message();

  auto wanted = destinations(blobs, "dst");
  Stats pull_stats;
  opts_.stats = &pull_stats;
  auto pulled = pull_blobs(r, wanted, opts_);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);
  for (const auto& line : progress_) std::printf("progress: %s\n", line.c_str());
  EXPECT_EQ(pull_stats.blobs_downloaded, 5u);

  Blob unknown = wanted[1];
  unknown.digest = "sha256:" + std::string(64, '0');
  unknown.path = dir_.path() / "dst" / "unknown";
  auto not_there = pull_blobs(r, {unknown}, opts_);
  ASSERT_FALSE(not_there.ok());
  EXPECT_NE(not_there.error().message().find("not found in 127.0.0.1:"), std::string::npos)
      << not_there.error().message();
  EXPECT_FALSE(stdfs::exists(unknown.path));
  EXPECT_EQ(pull_stats.bytes_downloaded, 300u + 5 * kMiB + 123 + 3 * kMiB + 1536 * 1024);
}

TEST_F(RegistryTest, SecondPushUploadsNothing) {
  start_registry();
  auto blobs = make_blobs("src", {2 * kMiB, kMiB}, 2);
  Reference r = ref(registry_->port());
  ASSERT_TRUE(push(r, blobs, oci_manifest(blobs), std::string(kOciManifest), opts_).ok());
  Stats stats;
  opts_.stats = &stats;
  auto again = push(ref(registry_->port(), "team/app:v2"), blobs, oci_manifest(blobs),
                    std::string(kOciManifest), opts_);
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_EQ(stats.upload_starts, 0u);
  EXPECT_EQ(stats.upload_chunks, 0u);
  EXPECT_EQ(stats.blobs_skipped, 3u);
  EXPECT_EQ(stats.bytes_uploaded, 0u);
  EXPECT_TRUE(get_manifest(ref(registry_->port(), "team/app:v2"), opts_).ok());
}

TEST_F(RegistryTest, InterruptedPullResumesFromThePartialFile) {
  start_registry();
  auto blobs = make_blobs("src", {6 * kMiB}, 3);
  ASSERT_TRUE(push(ref(registry_->port()), blobs, oci_manifest(blobs), std::string(kOciManifest),
                   opts_).ok());
  TcpProxy proxy(registry_->port());
  Reference via = ref(proxy.port());
  std::vector<Blob> layer = destinations({blobs[1]}, "dst");
  stdfs::path partial = layer[0].path.string() + ".partial";

  // Without retries the cut fails the pull and leaves the partial file.
  proxy.cut_download_after(3 * kMiB);
  opts_.retries = 0;
  auto first = pull_blobs(via, layer, opts_);
  ASSERT_FALSE(first.ok());
  std::printf("cut pull: %s\n", first.error().to_string().c_str());
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_NE(first.error().message().find(blobs[1].digest), std::string::npos) << first.error().message();
  EXPECT_NE(first.error().message().find("pulling again resumes"), std::string::npos);
  ASSERT_TRUE(stdfs::exists(partial));
  uint64_t kept = stdfs::file_size(partial);
  EXPECT_GT(kept, 2 * kMiB);
  EXPECT_LT(kept, 3 * kMiB);
  EXPECT_FALSE(stdfs::exists(layer[0].path));

  // Pulling again asks only for the rest.
  Stats stats;
  opts_.stats = &stats;
  auto second = pull_blobs(via, layer, opts_);
  ASSERT_TRUE(second.ok()) << second.error().to_string();
  expect_same_files({blobs[1]}, layer);
  EXPECT_EQ(stats.resumed, 1u);
  EXPECT_EQ(stats.bytes_downloaded, 6 * kMiB - kept);

  // With retries, one call gets over the cut by itself.
  stdfs::remove(layer[0].path);
  proxy.cut_download_after(2 * kMiB);
  Stats retried;
  opts_.stats = &retried;
  opts_.retries = 3;
  auto third = pull_blobs(via, layer, opts_);
  ASSERT_TRUE(third.ok()) << third.error().to_string();
  EXPECT_EQ(proxy.cuts(), 2);
  EXPECT_EQ(retried.retries, 1u);
  EXPECT_EQ(retried.resumed, 1u);
  EXPECT_EQ(retried.bytes_downloaded, 6 * kMiB);
  expect_same_files({blobs[1]}, layer);
}

TEST_F(RegistryTest, InterruptedPushRecovers) {
  start_registry();
  auto blobs = make_blobs("src", {5 * kMiB}, 4);
  TcpProxy proxy(registry_->port());
  proxy.cut_upload_after(2 * kMiB + kMiB / 2);  // inside the third 1 MiB chunk
  Stats stats;
  opts_.stats = &stats;
  opts_.chunk_size = kMiB;
  opts_.parallel = 1;
  Reference via = ref(proxy.port());
  auto pushed = push(via, blobs, oci_manifest(blobs), std::string(kOciManifest), opts_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_GE(stats.retries, 1u);
  std::printf("interrupted push: %lu upload starts, %lu chunks, %lu resumed\n",
              static_cast<unsigned long>(stats.upload_starts.load()),
              static_cast<unsigned long>(stats.upload_chunks.load()),
              static_cast<unsigned long>(stats.resumed.load()));

  auto wanted = destinations(blobs, "dst");
  auto pulled = pull_blobs(ref(registry_->port()), wanted, opts_);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);
}

TEST_F(RegistryTest, FailedChunkResumesFromTheOffsetTheRegistryReports) {
  start_registry();
  auto blobs = make_blobs("src", {4 * kMiB}, 9);
  TcpProxy proxy(registry_->port());
  // PATCH 1 is the config, 2 and 3 the layer's first chunks: the third arrives without body.
  proxy.cut_request_body("PATCH", 3);
  Stats stats;
  opts_.stats = &stats;
  opts_.chunk_size = kMiB;
  opts_.parallel = 1;
  auto pushed = push(ref(proxy.port()), blobs, oci_manifest(blobs), std::string(kOciManifest), opts_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  EXPECT_EQ(proxy.cuts(), 1);
  EXPECT_EQ(stats.retries, 1u);
  EXPECT_EQ(stats.resumed, 1u);       // asked the registry (GET) and went on at 1 MiB
  EXPECT_EQ(stats.upload_starts, 2u);  // no fresh upload
  EXPECT_EQ(stats.upload_chunks, 1u + 4 + 1);
  auto wanted = destinations(blobs, "dst");
  auto pulled = pull_blobs(ref(registry_->port()), wanted, opts_);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);
}

TEST_F(RegistryTest, CorruptedBlobFailsNamingTheDigestAndKeepsNothing) {
  start_registry();
  auto blobs = make_blobs("src", {4 * kMiB}, 5);
  ASSERT_TRUE(push(ref(registry_->port()), blobs, oci_manifest(blobs), std::string(kOciManifest),
                   opts_).ok());
  TcpProxy proxy(registry_->port());
  proxy.flip_download_at(kMiB);  // inside the body of the first response on each connection
  auto layer = destinations({blobs[1]}, "dst");
  opts_.parallel = 1;
  auto pulled = pull_blobs(ref(proxy.port()), layer, opts_);
  ASSERT_FALSE(pulled.ok());
  const std::string& msg = pulled.error().message();
  std::printf("corrupted blob: %s\n", msg.c_str());
  EXPECT_NE(msg.find(blobs[1].digest), std::string::npos) << msg;
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(proxy.port())), std::string::npos) << msg;
  EXPECT_NE(msg.find("wrong content"), std::string::npos) << msg;
  EXPECT_FALSE(stdfs::exists(layer[0].path));
  EXPECT_FALSE(stdfs::exists(layer[0].path.string() + ".partial"));
}

// A self-signed certificate for 127.0.0.1 and a bcrypt htpasswd file.
void make_tls_and_htpasswd(const stdfs::path& dir) {
  run_ok({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
          "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
          "-keyout", (dir / "tls.key").string(), "-out", (dir / "tls.pem").string()});
  auto pw = run_checked({"htpasswd", "-Bbn", "alice", "s3cret"});
  ASSERT_TRUE(pw.ok()) << pw.error().to_string();
  spit(dir / "htpasswd", *pw);
}

TEST_F(RegistryTest, BasicAuthOverTls) {
  stdfs::path certs = dir_.path() / "certs";
  stdfs::create_directories(certs);
  make_tls_and_htpasswd(certs);
  if (HasFatalFailure()) return;
  RegistryServer::Config cfg;
  cfg.tls_cert = (certs / "tls.pem").string();
  cfg.tls_key = (certs / "tls.key").string();
  cfg.auth = "auth:\n  htpasswd:\n    realm: prewarm-test\n    path: " + (certs / "htpasswd").string() + "\n";
  start_registry(cfg);
  auto blobs = make_blobs("src", {2 * kMiB}, 6);
  std::string manifest = oci_manifest(blobs);
  Reference r = ref(registry_->port());
  opts_.insecure_http = false;
  opts_.ca_file = (certs / "tls.pem").string();

  auto anonymous = push(r, blobs, manifest, std::string(kOciManifest), opts_);
  ASSERT_FALSE(anonymous.ok());
  std::printf("no credentials: %s\n", anonymous.error().to_string().c_str());
  EXPECT_NE(anonymous.error().message().find("authentication required by 127.0.0.1:"), std::string::npos)
      << anonymous.error().message();
  EXPECT_NE(anonymous.error().message().find("PREWARM_REGISTRY_USER"), std::string::npos);

  opts_.username = "alice";
  opts_.password = "wrong";
  auto wrong = get_manifest(r, opts_);
  ASSERT_FALSE(wrong.ok());
  std::printf("wrong password: %s\n", wrong.error().to_string().c_str());
  EXPECT_NE(wrong.error().message().find("refused user 'alice'"), std::string::npos)
      << wrong.error().message();

  // The right ones (the CLI reads them from PREWARM_REGISTRY_USER / _PASSWORD into its
  // context, and passes them here).
  opts_.username = "alice";
  opts_.password = "s3cret";
  auto pushed = push(r, blobs, manifest, std::string(kOciManifest), opts_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  auto m = get_manifest(r, opts_);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(m->json, manifest);
  auto wanted = destinations(blobs, "dst");
  auto pulled = pull_blobs(r, wanted, opts_);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);

  // Without the CA the self-signed certificate is refused, and the error says what to do.
  opts_.ca_file.clear();
  auto untrusted = get_manifest(r, opts_);
  ASSERT_FALSE(untrusted.ok());
  std::printf("untrusted certificate: %s\n", untrusted.error().to_string().c_str());
  EXPECT_NE(untrusted.error().message().find("certificate"), std::string::npos)
      << untrusted.error().message();
  EXPECT_NE(untrusted.error().message().find("ca_file"), std::string::npos)
      << untrusted.error().message();
}

TEST_F(RegistryTest, BearerTokensFromTheRegistrysTokenServer) {
  stdfs::path certs = dir_.path() / "token";
  stdfs::create_directories(certs);
  run_ok({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
          "-subj", "/CN=prewarm-test-token", "-keyout", (certs / "token.key").string(),
          "-out", (certs / "token.pem").string()});
  run_ok({"openssl", "x509", "-in", (certs / "token.pem").string(), "-outform", "DER",
          "-out", (certs / "token.der").string()});
  if (HasFatalFailure()) return;
  TokenServer tokens(certs, "bob", "t0ken-pass");
  RegistryServer::Config cfg;
  cfg.auth = "auth:\n  token:\n    realm: " + tokens.realm() + "\n    service: " +
             TokenServer::kService + "\n    issuer: " + TokenServer::kIssuer +
             "\n    rootcertbundle: " + (certs / "token.pem").string() + "\n";
  start_registry(cfg);
  auto blobs = make_blobs("src", {3 * kMiB, kMiB}, 7);
  std::string manifest = oci_manifest(blobs);
  Reference r = ref(registry_->port());

  auto anonymous = push(r, blobs, manifest, std::string(kOciManifest), opts_);
  ASSERT_FALSE(anonymous.ok());
  std::printf("no credentials: %s\n", anonymous.error().to_string().c_str());
  EXPECT_NE(anonymous.error().message().find("authentication required by 127.0.0.1:"), std::string::npos)
      << anonymous.error().message();
  EXPECT_NE(anonymous.error().message().find(tokens.realm()), std::string::npos);

  opts_.username = "bob";
  opts_.password = "t0ken-pass";
  Stats stats;
  opts_.stats = &stats;
  opts_.chunk_size = kMiB;
  auto pushed = push(r, blobs, manifest, std::string(kOciManifest), opts_);
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  // One token for repository:team/app:pull,push serves every thread and request.
  EXPECT_EQ(stats.token_requests, 1u);

  auto m = get_manifest(r, opts_);
  ASSERT_TRUE(m.ok()) << m.error().to_string();
  EXPECT_EQ(m->json, manifest);
  auto wanted = destinations(blobs, "dst");
  Stats pull_stats;
  opts_.stats = &pull_stats;
  auto pulled = pull_blobs(r, wanted, opts_);
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);
  EXPECT_EQ(pull_stats.token_requests, 1u);

  opts_.password = "nope";
  auto wrong = get_manifest(r, opts_);
  ASSERT_FALSE(wrong.ok());
  std::printf("wrong password: %s\n", wrong.error().to_string().c_str());
  EXPECT_NE(wrong.error().message().find("for user 'bob'"), std::string::npos)
      << wrong.error().message();
}

TEST_F(RegistryTest, Throughput100MiB) {
  start_registry();
  std::vector<uint64_t> sizes(10, 10 * kMiB);
  auto blobs = make_blobs("src", sizes, 8);
  opts_.progress = nullptr;
  uint64_t total = 0;
  for (const auto& b : blobs) total += b.size;
  double mb = static_cast<double>(total) / 1e6;
  Stopwatch push_time;
  auto pushed = push(ref(registry_->port()), blobs, oci_manifest(blobs), std::string(kOciManifest), opts_);
  double push_s = push_time.seconds();
  ASSERT_TRUE(pushed.ok()) << pushed.error().to_string();
  auto wanted = destinations(blobs, "dst");
  Stopwatch pull_time;
  auto pulled = pull_blobs(ref(registry_->port()), wanted, opts_);
  double pull_s = pull_time.seconds();
  ASSERT_TRUE(pulled.ok()) << pulled.error().to_string();
  expect_same_files(blobs, wanted);
  std::printf("{\"bytes\": %lu, \"parallel\": %d, \"chunk_mib\": %zu, \"push_s\": %.3f, "
              "\"push_mb_s\": %.1f, \"pull_s\": %.3f, \"pull_mb_s\": %.1f}\n",
              static_cast<unsigned long>(total), opts_.parallel, opts_.chunk_size >> 20, push_s,
              mb / push_s, pull_s, mb / pull_s);
}

}  // namespace
}  // namespace prewarm::registry
