// Filling fresh anonymous memory from a file, as CRIU's restorer fills a restored process's
// memory from pages-*.img: plain 4 KiB pages (the baseline), madvise(MADV_HUGEPAGE) first, and
// madvise(MADV_POPULATE_WRITE) first. The modes alternate; medians and ratios to the baseline
// go to stdout as JSON. Every fill's memory stays mapped until the end (3 x RUNS x the file's
// size in all). With IDLE_S > 0 it sleeps that long before every fill: on a VM that returns free
// memory to its host (virtio-balloon free page reporting), memory idle for a few seconds is
// handed back in huge-page-sized blocks, and touching it again costs host faults.
// Usage: memory_fill FILE [RUNS] [IDLE_S]
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

// One fill: map, advise, read the whole file in. The mapping stays, as a restored instance
// keeps its memory: every fill gets memory nobody freed just before (reusing freed huge pages
// would flatter MADV_HUGEPAGE). Returns milliseconds, or -1.
static double fill(int fd, size_t n, int mode) {
  double t0 = now_ms();
  char* p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return -1;
  if (mode == 1 && madvise(p, n, MADV_HUGEPAGE) != 0) return -1;
  if (mode == 2 && madvise(p, n, MADV_POPULATE_WRITE) != 0) return -1;
  size_t off = 0;
  while (off < n) {
    ssize_t r = pread(fd, p + off, n - off, (off_t)off);
    if (r <= 0) return -1;
    off += (size_t)r;
  }
  return now_ms() - t0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE [RUNS] [IDLE_S]\n", argv[0]);
    return 2;
  }
  int runs = argc > 2 ? atoi(argv[2]) : 15;
  if (runs < 1 || runs > 1000) runs = 15;
  int idle_s = argc > 3 ? atoi(argv[3]) : 0;
  if (idle_s < 0 || idle_s > 600) idle_s = 0;
  int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || st.st_size <= 0) {
    perror(argv[1]);
    return 1;
  }
  size_t n = (size_t)st.st_size;
  static const char* names[] = {"pages_4k", "madv_hugepage", "madv_populate_write"};
  double* ms[3];
  for (int m = 0; m < 3; ++m) ms[m] = calloc((size_t)runs, sizeof(double));
  (void)fill(fd, n, 0);  // the file into the page cache, as for a restore
  for (int i = 0; i < runs; ++i)
    for (int k = 0; k < 3; ++k) {
      int m = (i + k) % 3;  // rotate which goes first
      if (idle_s > 0) sleep((unsigned)idle_s);
      ms[m][i] = fill(fd, n, m);
      if (ms[m][i] < 0) {
        fprintf(stderr, "%s failed\n", names[m]);
        return 1;
      }
    }
  double med[3];
  for (int m = 0; m < 3; ++m) {
    qsort(ms[m], (size_t)runs, sizeof(double), cmp);
    med[m] = runs % 2 ? ms[m][runs / 2] : (ms[m][runs / 2 - 1] + ms[m][runs / 2]) / 2;
  }
  printf("{\n  \"benchmark\": \"memory_fill\",\n  \"file\": \"%s\",\n  \"bytes\": %zu,\n"
         "  \"runs\": %d,\n  \"idle_seconds_before_each_fill\": %d,\n",
         argv[1], n, runs, idle_s);
  for (int m = 0; m < 3; ++m) printf("  \"%s_median_ms\": %.2f,\n", names[m], med[m]);
  printf("  \"ratios\": {\"madv_hugepage_vs_4k\": %.3f, \"madv_populate_write_vs_4k\": %.3f}\n}\n",
         med[1] / med[0], med[2] / med[0]);
  return 0;
}
