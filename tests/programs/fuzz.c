/* A system-call fuzzer for dmvx: random calls with random and boundary
 * arguments, and pointers into every kind of region (null, low, a valid
 * buffer and its last byte, read-only code, a PROT_NONE page, the kernel
 * half, non-canonical addresses). Each batch runs in a child process (it may
 * crash, hang or unmap itself; the parent kills it after a while), so the
 * run goes on whatever a batch does. Calls that would end or multiply the
 * fuzzer (exit, execve, fork, kill) are left out.
 *   fuzz SEED BATCHES CALLS   prints "batch N status S" and "fuzz done" */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

static uint64_t rnd(void) {
    /* xorshift64*: the same sequence in every variant for one seed */
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545F4914F6CDD1DULL;
}

static char buf[8192];
static char *rw_map, *none_map;

static long pointer(void) {
    switch (rnd() % 12) {
    case 0: return 0;
    case 1: return 1;
    case 2: return 0x1000;
    case 3: return (long)(buf + rnd() % sizeof buf);
    case 4: return (long)(buf + sizeof buf - 1 - rnd() % 8);
    case 5: return (long)rw_map + (long)(rnd() % 8192);
    case 6: return (long)none_map + (long)(rnd() % 4096);
    case 7: return (long)&pointer;
    case 8: return (long)0xffff800000000000UL + (long)(rnd() % 0x100000);
    case 9: return (long)0x0000800000000000UL - (long)(rnd() % 64);
    case 10: return (long)0x00007ffffffff000UL;
    default: return (long)rnd();
    }
}

static long integer(void) {
    static const long edge[] = { 0, 1, 2, -1, -2, 3, 7, 8, 16, 255, 256, 4095, 4096, 4097, 0x7fffffff, -0x80000000L,
                                 0xffffffffL, 0x7fffffffffffffffL, (long)0x8000000000000000UL, -100 /* AT_FDCWD */ };
    switch (rnd() % 4) {
    case 0: return edge[rnd() % (sizeof edge / sizeof edge[0])];
    case 1: return (long)(rnd() % 64);           /* descriptors, small counts */
    case 2: return (long)(rnd() % 0x10000);
    default: return (long)rnd();
    }
}

static long argument(void) {
    return rnd() % 2 ? pointer() : integer();
}

/* Calls the fuzzer leaves out: they end, replace or multiply it. */
static int skipped(long nr) {
    switch (nr) {
    case SYS_exit: case SYS_exit_group: case SYS_execve: case SYS_execveat:
    case SYS_fork: case SYS_vfork: case SYS_clone: case SYS_clone3:
    case SYS_kill: case SYS_tkill: case SYS_tgkill: case SYS_rt_sigqueueinfo: case SYS_rt_tgsigqueueinfo:
    case SYS_pidfd_send_signal: case SYS_reboot:
        return 1;
    }
    return 0;
}

static void batch(int calls) {
    alarm(2);
    for (int i = 0; i < calls; i++) {
        long nr = rnd() % 8 ? (long)(rnd() % 335) : (long)(rnd() % 512);
        if (skipped(nr)) continue;
        long a[6];
        for (int j = 0; j < 6; j++) a[j] = argument();
        /* Some fill the buffer with plausible structures first. */
        if (rnd() % 4 == 0) memset(buf, (int)rnd(), sizeof buf);
        syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 4) {
        fprintf(stderr, "usage: fuzz SEED BATCHES CALLS\n");
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 0);
    int batches = atoi(argv[2]), calls = atoi(argv[3]);
    rw_map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    none_map = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int b = 0; b < batches; b++) {
        state = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)b + 1;
        pid_t c = fork();
        if (c < 0) {
            perror("fork");
            return 1;
        }
        if (c == 0) {
            batch(calls);
            _exit(0);
        }
        int st = 0;
        /* A child that hangs in a call the fuzzer made is killed. */
        struct timespec tick = { 0, 10 * 1000 * 1000 };
        int waited = 0;
        while (waitpid(c, &st, WNOHANG) == 0) {
            if (++waited == 300) {
                syscall(SYS_kill, c, SIGKILL);
                waitpid(c, &st, 0);
                break;
            }
            nanosleep(&tick, NULL);
        }
        printf("batch %d status %d\n", b, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    }
    printf("fuzz done\n");
    return 0;
}
