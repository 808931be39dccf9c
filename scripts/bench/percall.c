/* Per-call cost: times N calls of one kind, prints nanoseconds per call.
 *   percall getppid N          a relaxed call the VMM answers itself
 *   percall read512 N FILE     a 512-byte pread of FILE (an image file: local)
 *   percall read4k N FILE      a 4 KiB pread of FILE
 *   percall yield N            sched_yield
 *   percall lockstep N         unlink of a missing file in /tmp: a lockstep
 *                              file modification (the leader waits for every
 *                              follower before it takes effect)
 * The clock is read twice, around the loop. */
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "getppid";
    long n = argc > 2 ? atol(argv[2]) : 100000;
    char buf[4096];
    size_t len = !strcmp(mode, "read4k") ? 4096 : 512;
    int fd = -1;
    if (!strcmp(mode, "read512") || !strcmp(mode, "read4k")) {
        fd = open(argc > 3 ? argv[3] : "/bin/sh", O_RDONLY);
        if (fd < 0 || pread(fd, buf, len, 0) != (ssize_t)len) {
            perror("percall: open/pread");
            return 1;
        }
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (!strcmp(mode, "getppid")) {
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
    } else if (!strcmp(mode, "read512") || !strcmp(mode, "read4k")) {
        for (long i = 0; i < n; i++) pread(fd, buf, len, 0);
    } else if (!strcmp(mode, "open")) {
        for (long i = 0; i < n; i++) close(open("/bin/sh", O_RDONLY));
    } else if (!strcmp(mode, "yield")) {
        for (long i = 0; i < n; i++) sched_yield();
    } else if (!strcmp(mode, "lockstep")) {
        for (long i = 0; i < n; i++) unlink("/tmp/dmvx-percall-missing");
    } else {
        fprintf(stderr, "percall: unknown mode %s\n", mode);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / n);
    return 0;
}
