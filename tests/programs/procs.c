/* Processes, for tests/processes.rs. Modes:
 *   fork-wait        a child changes a copy of the parent's memory and exits 7;
 *                    the parent reaps it with waitpid and waitid
 *   groups           process groups, sessions, kill of a group, SIGCHLD handler
 *   shared           MAP_SHARED anonymous memory seen by three children in turn
 *   bomb             forks until fork fails, then reports how and reaps all
 *   pdeathsig        a child asks for SIGTERM when its parent ends
 * Output never contains pids (they are virtual: the test compares runs). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t chld;
static void on_chld(int s) { (void)s; chld++; }

static int fork_wait(void) {
    int x = 42;
    pid_t p = fork();
    if (p < 0) return 1;
    if (p == 0) { x++; printf("child x=%d ppid-is-parent=%d\n", x, getppid() > 1); _exit(7); }
    int st;
    if (waitpid(p, &st, 0) != p) return 2;
    printf("parent x=%d exited=%d code=%d\n", x, WIFEXITED(st), WEXITSTATUS(st));
    pid_t q = fork();
    if (q == 0) { raise(SIGUSR1); _exit(0); }
    siginfo_t si;
    if (waitid(P_PID, q, &si, WEXITED)) return 3;
    printf("waitid code=%d status=%d samepid=%d\n", si.si_code, si.si_status, si.si_pid == q);
    printf("no more children: %d\n", waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD);
    return 0;
}

static int groups(void) {
    struct sigaction sa = { .sa_handler = on_chld, .sa_flags = SA_RESTART };
    sigaction(SIGCHLD, &sa, 0);
    printf("leader: pgrp==pid %d, sid==pid %d\n", getpgrp() == getpid(), getsid(0) == getpid());
    int pfd[2];
    if (pipe(pfd)) return 1;
    pid_t c = fork();
    if (c == 0) {
        setpgid(0, 0);
        close(pfd[0]);
        if (write(pfd[1], "x", 1) != 1) _exit(9);
        pause();
        _exit(0);
    }
    char b;
    close(pfd[1]);
    if (read(pfd[0], &b, 1) != 1) return 2;
    printf("child in own group: %d\n", getpgid(c) == c);
    printf("leader cannot setsid: %d\n", setsid() < 0 && errno == EPERM);
    kill(-c, SIGTERM);
    int st;
    waitpid(c, &st, 0);
    printf("killed by SIGTERM: %d, SIGCHLD handled: %d\n", WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, chld > 0);
    pid_t d = fork();
    if (d == 0) { _exit(setsid() == getpid() && getsid(0) == getpid() ? 3 : 4); }
    waitpid(d, &st, 0);
    printf("child started a session: %d\n", WEXITSTATUS(st) == 3);
    printf("no such process: %d\n", kill(99999, 0) < 0 && errno == ESRCH);
    return 0;
}

static int shared(void) {
    volatile long *p = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    volatile long *q = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || q == MAP_FAILED) return 1;
    p[0] = 1;
    q[0] = 1;
    for (int i = 0; i < 3; i++) {
        pid_t c = fork();
        if (c == 0) { p[0] += 10; p[1000] = 7; q[0] = 99; _exit(0); }
        waitpid(c, 0, 0);
    }
    printf("shared=%ld far=%ld private=%ld\n", p[0], p[1000], q[0]);
    return 0;
}

static int bomb(void) {
    int made = 0, err = 0;
    for (int i = 0; i < 100000; i++) {
        pid_t c = fork();
        if (c < 0) { err = errno; break; }
        if (c == 0) { pause(); _exit(0); }
        made++;
    }
    signal(SIGTERM, SIG_IGN);
    kill(0, SIGTERM);
    int reaped = 0, st;
    while (wait(&st) > 0) reaped++;
    printf("fork failed with %s after %s; reaped all: %d\n", err == EAGAIN ? "EAGAIN" : strerror(err),
           made > 0 ? "some children" : "none", reaped == made);
    return 0;
}

static int report_fd = -1;
static void on_usr2(int s) {
    (void)s;
    if (write(report_fd, "got SIGUSR2 when the parent ended\n", 34) < 0) _exit(5);
    _exit(0);
}

static int pdeathsig(void) {
    int rep[2];
    if (pipe(rep)) return 1;
    pid_t mid = fork();
    if (mid == 0) {
        int ready[2];
        if (pipe(ready)) _exit(1);
        pid_t c = fork();
        if (c == 0) {
            close(rep[0]);
            report_fd = rep[1];
            signal(SIGUSR2, on_usr2);
            prctl(PR_SET_PDEATHSIG, SIGUSR2);
            close(ready[0]);
            if (write(ready[1], "x", 1) != 1) _exit(2);
            for (;;) pause();
        }
        char b;
        close(ready[1]);
        if (read(ready[0], &b, 1) != 1) _exit(4);
        _exit(0);
    }
    close(rep[1]);
    int st;
    waitpid(mid, &st, 0);
    printf("middle exited %d\n", WEXITSTATUS(st));
    char buf[64];
    ssize_t n = read(rep[0], buf, sizeof buf);
    if (n > 0) fwrite(buf, 1, n, stdout);
    return 0;
}

/* An alternate signal stack does not survive execve (Linux resets it). */
static int exec_altstack(char *self) {
    static char stack[1 << 16];
    stack_t ss = { .ss_sp = stack, .ss_size = sizeof stack, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) return 1;
    stack_t now;
    sigaltstack(NULL, &now);
    printf("before exec: %s\n", now.ss_flags & SS_DISABLE ? "disabled" : "set");
    char *args[] = { self, "altstack-after", NULL };
    execv(self, args);
    return 2;
}

static int altstack_after(void) {
    stack_t now;
    sigaltstack(NULL, &now);
    printf("after exec: %s\n", now.ss_flags & SS_DISABLE ? "disabled" : "set");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "exec-altstack")) return exec_altstack(argv[0]);
    if (!strcmp(m, "altstack-after")) return altstack_after();
    if (!strcmp(m, "fork-wait")) return fork_wait();
    if (!strcmp(m, "groups")) return groups();
    if (!strcmp(m, "shared")) return shared();
    if (!strcmp(m, "bomb")) return bomb();
    if (!strcmp(m, "pdeathsig")) return pdeathsig();
    return 100;
}
