/* Records CLOCK_MONOTONIC in DMVX_LAUNCH_NS, then execs argv[1..], so the
 * VMM can report the time from launch to the guest's first instruction. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: launch PROGRAM [ARGS...]\n"); return 2; }
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    setenv("DMVX_LAUNCH_NS", buf, 1);
    execv(argv[1], argv + 1);
    perror("execv");
    return 127;
}
