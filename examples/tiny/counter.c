// counter: a tiny HTTP server for prewarm's examples and tests. No dependencies; built static.
//
//   GET /         increments an in-memory counter, answers "count=N hostname=H pid=P\n"
//                 (HEAD answers the same headers and does not count)
//   GET /count    answers the counter ("N\n") without incrementing it
//   GET /healthz  answers "ok\n" without counting
//   GET /ballast  answers "<MiB> <checksum>\n" of the ballast (below), recomputed from memory
//   GET /log      prints "count is N" on stdout (where a container's log goes), answers "logged\n"
//
// BALLAST_MB=N makes it fill N MiB of anonymous memory with a pattern at start, so that tests
// can check that a restore brought large memory areas back intact.
//
// It listens on 0.0.0.0:$PORT (8080 when PORT is unset). State lives only in memory, so after a
// checkpoint of a warmed instance the count continues where the warm-up left it. The hostname is
// read at request time because prewarm gives every restored copy its own.
//
// One request per connection ("Connection: close"), served one at a time: a single thread and
// no connection left open between requests keeps the process trivial to checkpoint.
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
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
};

static unsigned long long counter;
static unsigned char* ballast;
static size_t ballast_mb;

// FNV-1a over the ballast: any page restored wrong changes it.
static unsigned long long ballast_checksum(void) {
  unsigned long long h = 1469598103934665603ULL;
  for (size_t i = 0; i < ballast_mb << 20; ++i) h = (h ^ ballast[i]) * 1099511628211ULL;
  return h;
}

static int make_ballast(const char* mb) {
  char* end;
  long v = strtol(mb, &end, 10);
  if (*end != '\0' || v < 1 || v > 4096) {
    fprintf(stderr, "counter: BALLAST_MB must be 1..4096, got \"%s\"\n", mb);
    return -1;
  }
  ballast_mb = (size_t)v;
  ballast = mmap(NULL, ballast_mb << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ballast == MAP_FAILED) {
    perror("counter: mmap ballast");
    return -1;
  }
  for (size_t i = 0; i < ballast_mb << 20; ++i)
    ballast[i] = (unsigned char)((i * 2654435761u) >> 13);
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
  // Request line: METHOD SP TARGET SP VERSION
  char* method = req;
  char* sp = strchr(method, ' ');
  if (!sp) {
    respond(fd, 400, "Bad Request", "bad request\n", 0);
    return;
  }
  *sp = '\0';
  char* target = sp + 1;
  size_t tlen = strcspn(target, " \r\n");
  target[tlen] = '\0';
  target[strcspn(target, "?#")] = '\0';  // the query does not select the handler

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
    if (!head_only) ++counter;  // only a GET counts
    snprintf(body, sizeof body, "count=%llu hostname=%s pid=%ld\n", counter, host,
             (long)getpid());
  } else if (strcmp(target, "/count") == 0) {
    snprintf(body, sizeof body, "%llu\n", counter);
  } else if (strcmp(target, "/healthz") == 0) {
    strcpy(body, "ok\n");
  } else if (strcmp(target, "/log") == 0) {
    printf("count is %llu\n", counter);
    fflush(stdout);
    strcpy(body, "logged\n");
  } else if (strcmp(target, "/ballast") == 0) {
    snprintf(body, sizeof body, "%zu %llx\n", ballast_mb, ballast ? ballast_checksum() : 0ULL);
  } else {
    respond(fd, 404, "Not Found", "not found\n", head_only);
    return;
  }
  respond(fd, 200, "OK", body, head_only);
}

int main(void) {
  int port = 8080;
  const char* env_port = getenv("PORT");
  if (env_port && *env_port) {
    char* end;
    long v = strtol(env_port, &end, 10);
    if (*end != '\0' || v < 1 || v > 65535) {
      fprintf(stderr, "counter: PORT must be 1..65535, got \"%s\"\n", env_port);
      return 2;
    }
    port = (int)v;
  }

  const char* env_ballast = getenv("BALLAST_MB");
  if (env_ballast && *env_ballast && make_ballast(env_ballast) != 0) return 2;

  return serve_forever("counter", port, handle);
}
