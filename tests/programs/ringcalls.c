/* Calls the exit-less path serves, and ones it finishes through an exit,
 * with results that must equal native: prints one line per kind.
 *   ringcalls N FILE */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t caught;
static void on_usr1(int s) { (void)s; caught++; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000;
    const char *file = argc > 2 ? argv[2] : "/etc/passwd";
    int fd = open(file, O_RDONLY);
    if (fd < 0) {
        perror("ringcalls: open");
        return 1;
    }
    char buf[4096];
    unsigned long sum = 0, ppid = 0;
    for (long i = 0; i < n; i++) {
        ppid += (unsigned long)syscall(SYS_getppid);
        ssize_t r = pread(fd, buf, sizeof buf, (i % 4) * 16);
        if (r < 0) {
            perror("ringcalls: pread");
            return 1;
        }
        for (ssize_t j = 0; j < r; j++) sum = sum * 31 + (unsigned char)buf[j];
    }
    printf("getppid %lu\npread %lu\n", ppid / (unsigned long)n, sum);
    /* Unmapping narrows page tables: the call finishes through an exit. */
    for (int i = 0; i < 50; i++) {
        char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        p[0] = 1;
        p[4096] = 2;
        munmap(p, 8192);
    }
    printf("mmap ok\n");
    /* A signal made pending while blocked is delivered when a ring call
     * (rt_sigprocmask) unblocks it. */
    signal(SIGUSR1, on_usr1);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    for (int i = 0; i < 20; i++) {
        sigprocmask(SIG_BLOCK, &s, 0);
        kill(getpid(), SIGUSR1);
        if (caught != i) return 2;
        sigprocmask(SIG_UNBLOCK, &s, 0);
    }
    printf("signals %d\n", (int)caught);
    /* A bad pointer is EFAULT on the ring as on the exit. */
    long e = syscall(SYS_pread64, fd, (void *)8, 16, 0);
    printf("efault %ld\n", e);
    return 0;
}
