// The few pieces of HTTP/1.1 serving the example apps share (tiny's counter, the heap): static
// C, no libc beyond what a static busybox-style rootfs offers. Include once, in the app's file,
// after defining kRequestTimeoutMs and kSendTimeoutMs.
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// As PID 1 of a container, signals without a handler are ignored: exit on TERM/INT explicitly.
static void on_signal(int sig) {
  (void)sig;
  _exit(0);
}

// Reads until the end of the headers ("\r\n\r\n"), the buffer is full, EOF or the deadline.
// Returns the bytes read (NUL-terminated in buf), or -1 if no complete header block arrived.
static int read_request(int fd, char* buf, size_t cap) {
  size_t len = 0;
  long long deadline = now_ms() + kRequestTimeoutMs;
  buf[0] = '\0';
  while (len + 1 < cap) {
    long long left = deadline - now_ms();
    if (left <= 0) return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    len += (size_t)n;
    buf[len] = '\0';
    if (strstr(buf, "\r\n\r\n") || strstr(buf, "\n\n")) return (int)len;
  }
  return -1;
}

static void send_all(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // client gone or send timeout: nothing more to do
    data += n;
    len -= (size_t)n;
  }
}

static void respond(int fd, int status, const char* reason, const char* body, int head_only) {
  char head[256];
  size_t body_len = strlen(body);
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: text/plain\r\n"
                   "Content-Length: %zu\r\n"
                   "Connection: close\r\n"
                   "\r\n",
                   status, reason, body_len);
  send_all(fd, head, (size_t)n);
  if (!head_only) send_all(fd, body, body_len);
}

// Exits on TERM/INT, listens on port (all addresses) and answers one connection at a time
// with handle(fd) until killed; returns 1 when it cannot listen (after saying why).
static int serve_forever(const char* name, int port, void (*handle)(int fd)) {
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) {
    fprintf(stderr, "%s: socket: %s\n", name, strerror(errno));
    return 1;
  }
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(lfd, (struct sockaddr*)&addr, sizeof addr) != 0) {
    fprintf(stderr, "%s: bind: %s\n", name, strerror(errno));
    return 1;
  }
  if (listen(lfd, 128) != 0) {
    fprintf(stderr, "%s: listen: %s\n", name, strerror(errno));
    return 1;
  }
  printf("%s listening on :%d\n", name, port);
  fflush(stdout);

  for (;;) {
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        usleep(10000);  // out of resources: back off instead of spinning
      continue;         // EINTR, ECONNABORTED and the like: just accept the next one
    }
    struct timeval tv = {.tv_sec = kSendTimeoutMs / 1000,
                         .tv_usec = (kSendTimeoutMs % 1000) * 1000};
    setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    handle(cfd);
    close(cfd);
  }
}
