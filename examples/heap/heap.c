// heap: an HTTP server holding a large, incompressible heap, for prewarm's lazy-restore work and
// heap-size sweeps. No dependencies; built static.
//
//   GET /         increments an in-memory counter, answers "count=N hostname=H pid=P\n"
//                 (HEAD answers the same headers and does not count)
//   GET /healthz  answers "ok\n" without counting
//   GET /check    reads the WHOLE heap, recomputes its checksum and answers
//                 200 "heap=<MiB> sum=<hex> ok\n" when it matches the one computed at start,
//                 500 "heap=<MiB> sum=<hex> expected=<hex> MISMATCH\n" when it does not
//
// HEAP_MB=N (default 100, 1..65536) makes it map N MiB of private anonymous memory at start and
// fill it with xorshift64 output from a fixed seed: every page differs, none is zero, and
// nothing compresses, so a checkpoint carries the whole heap and a restore must bring every
// page back. The data (and so the checksum) is the same in every run with the same HEAP_MB.
//
// It listens on 0.0.0.0:$PORT (8080 when PORT is unset), serves one request per connection
// ("Connection: close"), one at a time, on one thread: trivial to checkpoint.
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum {
  kMaxRequest = 8192,        // request line and headers together
  kRequestTimeoutMs = 2000,  // a client that has not sent its headers by then is dropped
  kSendTimeoutMs = 2000,
  kDefaultHeapMb = 100,
  kMaxHeapMb = 65536,
};

static const uint64_t kSeed = 0x9e3779b97f4a7c15ULL;

static unsigned long long counter;
static uint64_t* heap;
static size_t heap_mb;
static uint64_t heap_sum;  // computed right after the fill

static size_t heap_words(void) { return (heap_mb << 20) / sizeof(uint64_t); }

// FNV-1a style over 64-bit words: a chain through every word, so a lost, zeroed or misplaced
// page changes the result.
static uint64_t checksum(void) {
  uint64_t h = 14695981039346656037ULL;
  const size_t n = heap_words();
  for (size_t i = 0; i < n; ++i) h = (h ^ heap[i]) * 1099511628211ULL;
  return h;
}

static int make_heap(void) {
  heap = mmap(NULL, heap_mb << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (heap == MAP_FAILED) {
    fprintf(stderr, "heap: mmap %zu MiB: %s\n", heap_mb, strerror(errno));
    return -1;
  }
  uint64_t x = kSeed;
  const size_t n = heap_words();
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    heap[i] = x;
  }
  heap_sum = checksum();
  return 0;
}

#include "../common/mini_http.h"

static void handle(int fd) {
  char req[kMaxRequest];
  if (read_request(fd, req, sizeof req) < 0) {
    // Only answer when something arrived: a bare connect (a tcpSocket probe) gets a plain close.
    if (req[0] != '\0') respond(fd, 400, "Bad Request", "bad request\n", 0);
    return;
  }
  char* method = req;
  char* sp = strchr(method, ' ');
  if (!sp) {
    respond(fd, 400, "Bad Request", "bad request\n", 0);
    return;
  }
  *sp = '\0';
  char* target = sp + 1;
  target[strcspn(target, " \r\n")] = '\0';
  target[strcspn(target, "?#")] = '\0';

  int head_only = strcmp(method, "HEAD") == 0;
  if (!head_only && strcmp(method, "GET") != 0) {
    respond(fd, 405, "Method Not Allowed", "method not allowed\n", 0);
    return;
  }

  char body[512];
  if (strcmp(target, "/") == 0) {
    char host[256];
    if (gethostname(host, sizeof host) != 0) strcpy(host, "?");
    host[sizeof host - 1] = '\0';
    if (!head_only) ++counter;
    snprintf(body, sizeof body, "count=%llu hostname=%s pid=%ld\n", counter, host,
             (long)getpid());
  } else if (strcmp(target, "/healthz") == 0) {
    strcpy(body, "ok\n");
  } else if (strcmp(target, "/check") == 0) {
    uint64_t sum = checksum();
    if (sum != heap_sum) {
      snprintf(body, sizeof body, "heap=%zu sum=%016" PRIx64 " expected=%016" PRIx64 " MISMATCH\n",
               heap_mb, sum, heap_sum);
      respond(fd, 500, "Internal Server Error", body, head_only);
      return;
    }
    snprintf(body, sizeof body, "heap=%zu sum=%016" PRIx64 " ok\n", heap_mb, sum);
  } else {
    respond(fd, 404, "Not Found", "not found\n", head_only);
    return;
  }
  respond(fd, 200, "OK", body, head_only);
}

// Parses a decimal environment variable in [lo, hi]; returns 0, or -1 after a message.
static int env_number(const char* name, long lo, long hi, long* out) {
  const char* s = getenv(name);
  if (!s || !*s) return 0;
  char* end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "heap: %s must be %ld..%ld, got \"%s\"\n", name, lo, hi, s);
    return -1;
  }
  *out = v;
  return 0;
}

int main(void) {
  long port = 8080, mb = kDefaultHeapMb;
  if (env_number("PORT", 1, 65535, &port) != 0) return 2;
  if (env_number("HEAP_MB", 1, kMaxHeapMb, &mb) != 0) return 2;
  heap_mb = (size_t)mb;

  long long t0 = now_ms();
  if (make_heap() != 0) return 1;
  printf("heap: %zu MiB filled in %lld ms, sum=%016" PRIx64 "\n", heap_mb, now_ms() - t0,
         heap_sum);

  return serve_forever("heap", (int)port, handle);
}
