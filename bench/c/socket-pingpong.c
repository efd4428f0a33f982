// The floor under an introspection event's two socket crossings: a small message from one process to another
// over a UNIX stream socket and back, with blocking read() and write() and nothing else in either process. An
// event sent by a user-space VMM and answered by a tool crosses at least this; no VMM or tool written in any
// language does it cheaper on the same host.
//
// Usage: socket-pingpong ROUNDS SIZE   prints the mean nanoseconds per round trip (after ROUNDS / 10 warm-up
// rounds). The echoing side is a child process (fork): two processes, as a VMM and a tool are.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int full(int fd, char *buf, size_t n, int writing) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: socket-pingpong ROUNDS SIZE\n");
    return 2;
  }
  long rounds = atol(argv[1]);
  size_t size = (size_t)atol(argv[2]);
  if (rounds < 1 || size < 1 || size > 65536) {
    fprintf(stderr, "socket-pingpong: ROUNDS >= 1, SIZE 1..65536\n");
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
    perror("socketpair");
    return 1;
  }
  char *buf = calloc(1, size);
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    close(sv[0]);
    for (;;) {
      if (full(sv[1], buf, size, 0) < 0) _exit(0);
      if (full(sv[1], buf, size, 1) < 0) _exit(0);
    }
  }
  close(sv[1]);
  long warm = rounds / 10;
  double t0 = 0;
  for (long i = 0; i < warm + rounds; i++) {
    if (i == warm) t0 = now_ns();
    if (full(sv[0], buf, size, 1) < 0 || full(sv[0], buf, size, 0) < 0) {
      fprintf(stderr, "socket-pingpong: the echoing process went away\n");
      return 1;
    }
  }
  double t1 = now_ns();
  close(sv[0]);
  waitpid(child, NULL, 0);
  printf("%.1f\n", (t1 - t0) / (double)rounds);
  return 0;
}
