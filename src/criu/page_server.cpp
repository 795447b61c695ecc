// CRIU's page-server wire format (criu/page-xfer.c): a fixed header per message, native endian.
#include "criu/page_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

namespace prewarm::criu {
namespace {

struct PsIov {
  uint32_t cmd;
  uint64_t nr_pages;
  uint64_t vaddr;
  uint64_t dst_id;
};
static_assert(sizeof(PsIov) == 32, "CRIU's struct page_server_iov");

constexpr uint32_t kIovAddF = 6, kIovGet = 7, kIovClose = 0x1023, kIovForceClose = 0x1024;
constexpr uint32_t kCmdBits = 16;
constexpr uint32_t kPresent = 1u << 2;  // PE_PRESENT
constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxRequestPages = 64 << 20 >> 12;  // CRIU asks for at most 4 MiB

Status recv_all(int fd, void* p, size_t n, bool* eof) {
  char* c = static_cast<char*>(p);
  size_t got = 0;
  while (got < n) {
    ssize_t r = ::recv(fd, c + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 && got == 0 && eof) {
      *eof = true;
      return {};
    }
    if (r <= 0) return Error::sys("page server: receive", r < 0 ? errno : EPIPE);
    got += static_cast<size_t>(r);
  }
  return {};
}

Status send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t r = ::send(fd, c, n, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Error::sys("page server: send", r < 0 ? errno : EPIPE);
    c += r;
    n -= static_cast<size_t>(r);
  }
  return {};
}

}  // namespace

Status serve_page_requests(int fd, const PageSource& source) {
  std::vector<char> buf;
  for (;;) {
    PsIov req{};
    bool eof = false;
    PW_TRY(recv_all(fd, &req, sizeof req, &eof));
    if (eof) return {};
    const uint32_t cmd = req.cmd & ((1u << kCmdBits) - 1);
    if (cmd == kIovClose || cmd == kIovForceClose) {
      int32_t status = 0;
      return send_all(fd, &status, sizeof status);
    }
    if (cmd != kIovGet)
      return Error(ErrorKind::kRuntime, "page server: unexpected request " + std::to_string(cmd));
    // On this path (request_remote_pages) dst_id is the task's pid itself, not the typed id
    // a dump's page transfer uses.
    if (req.dst_id == 0 || req.dst_id > INT32_MAX)
      return Error(ErrorKind::kRuntime, "page server: request for task " + std::to_string(req.dst_id));
    if (req.nr_pages == 0 || req.nr_pages > kMaxRequestPages)
      return Error(ErrorKind::kRuntime,
                   "page server: request for " + std::to_string(req.nr_pages) + " pages");
    const pid_t pid = static_cast<pid_t>(req.dst_id);
    buf.resize(req.nr_pages * kPage);
    Status st = source(pid, req.vaddr, req.nr_pages, buf.data());
    if (!st.ok()) return std::move(st).error().with_context("page server: pages of task " + std::to_string(pid));
    PsIov reply = req;
    reply.cmd = kIovAddF | (kPresent << kCmdBits);
    PW_TRY(send_all(fd, &reply, sizeof reply));
    PW_TRY(send_all(fd, buf.data(), buf.size()));
  }
}

}  // namespace prewarm::criu
