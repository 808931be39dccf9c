/* Process costs: times N operations of one kind, prints microseconds per
 * operation (the clock read around the loop).
 *   procs fork N       fork, the child _exits, the parent waits
 *   procs spawn N      fork, the child execs /bin/true, the parent waits
 *   procs pipeline N   /bin/sh -c 'echo x | cat | cat >/dev/null' (a
 *                      3-stage shell pipeline), started and waited for
 *   procs thread N     pthread_create of a thread that returns, then join
 *   procs pingpong N   two threads hand a token back and forth N times
 *                      through a mutex and a condition variable (a
 *                      contended hand-over each way) */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int run(char *const argv[]) {
    pid_t c = fork();
    if (c < 0) return -1;
    if (c == 0) {
        if (argv) execv(argv[0], argv);
        _exit(argv ? 127 : 0);
    }
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
    return 0;
}

static void *nothing(void *a) { return a; }

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long turn, rounds;

/* Player `me` (0 or 1) waits for its turn, passes it on, `rounds` times. */
static void *player(void *arg) {
    long me = (long)arg;
    pthread_mutex_lock(&mu);
    for (long i = 0; i < rounds; i++) {
        while (turn % 2 != me) pthread_cond_wait(&cv, &mu);
        turn++;
        pthread_cond_signal(&cv);
    }
    pthread_mutex_unlock(&mu);
    return 0;
}

static int threads(const char *mode, long n) {
    if (!strcmp(mode, "thread")) {
        for (long i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, 0, nothing, 0) || pthread_join(t, 0)) return -1;
        }
        return 0;
    }
    rounds = n;
    pthread_t a, b;
    if (pthread_create(&a, 0, player, (void *)0) || pthread_create(&b, 0, player, (void *)1)) return -1;
    pthread_join(a, 0);
    pthread_join(b, 0);
    return turn == 2 * n ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fork";
    long n = argc > 2 ? atol(argv[2]) : 100;
    char *truth[] = {"/bin/true", 0};
    char *pipeline[] = {"/bin/sh", "-c", "echo x | cat | cat >/dev/null", 0};
    char *const *what;
    if (!strcmp(mode, "thread") || !strcmp(mode, "pingpong")) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (threads(mode, n) != 0) {
            fprintf(stderr, "procs: %s failed\n", mode);
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &b);
        double us = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
        printf("%.2f\n", us / n);
        return 0;
    }
    if (!strcmp(mode, "fork")) what = 0;
    else if (!strcmp(mode, "spawn")) what = truth;
    else if (!strcmp(mode, "pipeline")) what = pipeline;
    else {
        fprintf(stderr, "procs: unknown mode %s\n", mode);
        return 2;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (run(what) != 0) {
            fprintf(stderr, "procs: %s %ld failed\n", mode, i);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
    printf("%.1f\n", us / n);
    return 0;
}
