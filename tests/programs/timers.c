/* POSIX timers (timer_create): a periodic timer's signals with SI_TIMER and
 * its value, a SIGEV_NONE timer read back, the checks Linux makes, and a
 * timer that ends a blocking wait. Prints only what is the same on every
 * run, natively and in dmvx. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t fired, bad_code, bad_value;

static void on_usr1(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    if (si->si_code != SI_TIMER)
        bad_code++;
    if (si->si_value.sival_int != 77)
        bad_value++;
    fired++;
}

static void on_alrm(int sig) { (void)sig; }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);

    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    sev.sigev_value.sival_int = 77;
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0) {
        printf("timer_create: %s\n", strerror(errno));
        return 1;
    }
    struct itimerspec every = {{0, 20 * 1000 * 1000}, {0, 20 * 1000 * 1000}};
    timer_settime(t, 0, &every, NULL);
    sigset_t none;
    sigemptyset(&none);
    while (fired < 5)
        sigsuspend(&none);
    struct itimerspec cur;
    timer_gettime(t, &cur);
    printf("periodic: at least 5 signals, codes ok %d, values ok %d, interval %ld ms\n", bad_code == 0,
           bad_value == 0, cur.it_interval.tv_nsec / 1000000);
    int first = timer_delete(t);
    int again = timer_delete(t);
    printf("delete: %d, again: %s\n", first, again == 0 ? "0" : strerror(errno));

    /* SIGEV_NONE: nothing is delivered; the time left is read back. */
    sev.sigev_notify = SIGEV_NONE;
    timer_t quiet;
    timer_create(CLOCK_REALTIME, &sev, &quiet);
    struct itimerspec once = {{0, 0}, {30, 0}};
    timer_settime(quiet, 0, &once, NULL);
    timer_gettime(quiet, &cur);
    printf("none: %s\n", cur.it_value.tv_sec > 25 && cur.it_value.tv_sec <= 30 ? "time left" : "wrong");
    struct itimerspec badspec = {{0, 0}, {0, 1000 * 1000 * 1000}};
    printf("bad spec: %s\n", timer_settime(quiet, 0, &badspec, NULL) == 0 ? "accepted" : strerror(errno));
    timer_delete(quiet);

    /* A bad clock and a bad signal are refused. */
    timer_t x;
    printf("bad clock: %s\n", timer_create(12345, NULL, &x) == 0 ? "accepted" : strerror(errno));
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = 99;
    printf("bad signal: %s\n", timer_create(CLOCK_MONOTONIC, &sev, &x) == 0 ? "accepted" : strerror(errno));

    /* The default sigevent: SIGALRM, which ends a blocking read with EINTR. */
    struct sigaction al;
    memset(&al, 0, sizeof al);
    al.sa_handler = on_alrm; /* no SA_RESTART: the read ends */
    sigaction(SIGALRM, &al, NULL);
    timer_t d;
    timer_create(CLOCK_MONOTONIC, NULL, &d);
    struct itimerspec soon = {{0, 0}, {0, 100 * 1000 * 1000}};
    timer_settime(d, 0, &soon, NULL);
    int p[2];
    char c;
    if (pipe(p) != 0)
        return 1;
    ssize_t n = read(p[0], &c, 1);
    printf("read: %zd %s\n", n, n < 0 ? strerror(errno) : "");
    return 0;
}
