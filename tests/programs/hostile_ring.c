/* A program that attacks the exit-less call ring (dmvx_abi::Ring) from
 * user code: it finds its ring page (mapped user-writable only with the
 * ring on) and writes requests into it directly, without the entry stub,
 * while its vCPU keeps running. Prints "key=value" lines; the test checks
 * them and that the VMM survives.
 *   hostile_ring FILE   (FILE: any readable file, e.g. the program itself) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* dmvx_abi::Ring (guest/abi/src/lib.rs), field by field. */
struct ring {
    volatile uint32_t state, service;
    volatile uint64_t nr, args[6], rcx, r11, rsp, ret;
    volatile uint32_t spin;
    volatile uint16_t cs, pad;
    volatile uint64_t calls[8];
};
enum { IDLE = 0, REQUEST = 1, TAKEN = 2, DONE = 3, EXIT = 4 };

/* The guest kernel is linked at 0xffffffff80000000 + 1 MiB. */
#define KERNEL_BASE 0xffffffff80100000ul
#define PROBE_PAGES 256

static sigjmp_buf probe_env;
static void on_segv(int s) {
    (void)s;
    siglongjmp(probe_env, 1);
}

static int readable(volatile unsigned char *p) {
    if (sigsetjmp(probe_env, 1)) return 0;
    (void)*p;
    return 1;
}

static int writable(volatile unsigned char *p) {
    if (sigsetjmp(probe_env, 1)) return 0;
    unsigned char v = *p;
    *p = v;
    return 1;
}

static struct ring *R;
static unsigned char *wait_out; /* the ring stub's `out` to PORT_RING_WAIT */
static long ppid;

static void pause_(void) { __asm__ volatile("pause"); }

/* Posts a request straight into the page (no stub), after an honest call
 * that wakes the service; waits for the VMM to finish it. Returns DONE or
 * EXIT, -1 if it was never taken, -2 if it stayed taken. */
static int post(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
    for (int attempt = 0; attempt < 200; attempt++) {
        syscall(SYS_getppid);
        R->nr = nr;
        R->args[0] = a0;
        R->args[1] = a1;
        R->args[2] = a2;
        R->args[3] = a3;
        R->args[4] = a4;
        R->args[5] = a5;
        R->rcx = 0;
        R->r11 = 0x202;
        R->rsp = 0;
        __atomic_store_n(&R->state, REQUEST, __ATOMIC_RELEASE);
        for (long i = 0;; i++) {
            uint32_t s = __atomic_load_n(&R->state, __ATOMIC_ACQUIRE);
            if (s == DONE || s == EXIT) return (int)s;
            if (s == REQUEST && i > 200000) {
                uint32_t want = REQUEST;
                if (__atomic_compare_exchange_n(&R->state, &want, IDLE, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                    break; /* not taken (parked, or backed off): again */
            }
            if (i > 400000000) return -2;
            pause_();
        }
    }
    return -1;
}

/* Posts getppid and at once rewrites it into exit_group(77), which is
 * never on the list: the VMM copies the request once, so it serves
 * getppid or refuses exit_group; a VMM that read the number again after
 * checking it would end the program with status 77. Returns how many of
 * `rounds` were taken. */
static int post_rewritten(int rounds) {
    int taken = 0;
    for (int round = 0; round < rounds; round++) {
        syscall(SYS_getppid);
        R->nr = SYS_getppid;
        R->args[0] = 0;
        R->rcx = 0;
        __atomic_store_n(&R->state, REQUEST, __ATOMIC_RELEASE);
        /* Sooner or later: before the VMM's copy, or while it serves. */
        for (int d = 0; d < (round % 64) * 8; d++) pause_();
        R->args[0] = 77;
        R->nr = SYS_exit_group;
        for (long i = 0;; i++) {
            uint32_t s = __atomic_load_n(&R->state, __ATOMIC_ACQUIRE);
            if (s == DONE || s == EXIT) {
                taken++;
                break;
            }
            uint32_t want = REQUEST;
            if (i > 200000 &&
                __atomic_compare_exchange_n(&R->state, &want, IDLE, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                break;
            if (i > 400000000) return -1;
            pause_();
        }
    }
    return taken;
}

static void report(const char *what, int st) {
    if (st == DONE)
        printf("%s=done %ld\n", what, (long)R->ret);
    else if (st == EXIT)
        printf("%s=exit\n", what);
    else
        printf("%s=%s\n", what, st == -1 ? "untaken" : "stuck");
    fflush(stdout);
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ul;
static uint64_t rnd(void) {
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

int main(int argc, char **argv) {
    const char *file = argc > 1 ? argv[1] : argv[0];
    int fd = open(file, O_RDONLY);
    if (fd < 0) {
        perror("hostile_ring: open");
        return 1;
    }
    ppid = syscall(SYS_getppid);
    signal(SIGSEGV, on_segv);
    for (int i = 0; i < PROBE_PAGES; i++) {
        unsigned char *p = (unsigned char *)(KERNEL_BASE + (unsigned long)i * 4096);
        if (!readable(p)) continue;
        if (writable(p + 2048)) {
            R = (struct ring *)p;
        } else if (!wait_out) {
            for (int j = 0; j + 2 < 4096; j++)
                if (p[j] == 0xe6 && p[j + 1] == 0xd3 && p[j + 2] == 0xf4) {
                    wait_out = p + j;
                    break;
                }
        }
    }
    if (!R) {
        printf("ring=absent\n");
        return 0;
    }
    printf("ring=found\n");
    fflush(stdout);

    /* The stub's exit with no fresh request: the VMM takes it as a call
     * (or finishes it with the last result, which was getppid's too). */
    if (wait_out) {
        long r;
        syscall(SYS_getppid);
        __asm__ volatile("lea 1f(%%rip), %%rcx\n\t"
                         "pushfq\n\t"
                         "pop %%r11\n\t"
                         "mov $110, %%eax\n\t"
                         "jmp *%1\n"
                         "1:"
                         : "=a"(r)
                         : "r"(wait_out)
                         : "rcx", "r11", "memory", "cc");
        printf("bare-wait=%s\n", r == ppid ? "ok" : "wrong");
    }

    /* Calls the VMM must refuse: out of range, not on its list (whatever
     * bitmap the page shows). */
    for (int i = 0; i < 8; i++) R->calls[i] = ~0ul;
    report("nr-out-of-range", post(100000, 0, 0, 0, 0, 0, 0));
    report("nr-all-ones", post(~0ul, 0, 0, 0, 0, 0, 0));
    report("exit_group", post(SYS_exit_group, 77, 0, 0, 0, 0, 0));
    report("execve", post(SYS_execve, (uint64_t) "/bin/sh", 0, 0, 0, 0, 0));
    report("kill", post(SYS_kill, 0, SIGKILL, 0, 0, 0, 0));

    /* Wild pointers and huge lengths: errors, nothing else. */
    report("read-kernel-ptr", post(SYS_read, fd, 0xffffffff80000000ul, 1ul << 62, 0, 0, 0));
    report("read-noncanonical", post(SYS_read, fd, 0x8000000000000000ul, 4096, 0, 0, 0));
    report("pread-null-huge", post(SYS_pread64, fd, 16, ~0ul, 0, 0, 0));
    report("write-wild", post(SYS_write, 1, 0x10, 1ul << 40, 0, 0, 0));
    report("readv-huge-count", post(SYS_readv, fd, 0x1000, 1ul << 30, 0, 0, 0));
    static struct iovec iov[2] = {{(void *)0x1000, 1ul << 62}, {(void *)0xffff800000000000ul, 1ul << 62}};
    report("readv-wild-iov", post(SYS_readv, fd, (uint64_t)iov, 2, 0, 0, 0));
    report("writev-wild-iov", post(SYS_writev, 1, (uint64_t)iov, 2, 0, 0, 0));
    report("mmap-huge", post(SYS_mmap, 0, 1ul << 62, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, ~0ul, 0));
    report("munmap-kernel", post(SYS_munmap, 0xffffffff80000000ul, 1ul << 30, 0, 0, 0, 0));
    report("mprotect-kernel", post(SYS_mprotect, (uint64_t)R, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0));
    report("poll-wild", post(SYS_poll, 0x10, 1ul << 40, 0, 0, 0, 0));
    report("select-wild", post(SYS_select, 1ul << 31, 0x10, 0x10, 0x10, 0x10, 0));
    report("stat-wild", post(SYS_stat, 0xdead0000ul, 0xbeef0000ul, 0, 0, 0, 0));
    report("sendfile-wild", post(SYS_sendfile, 1, fd, 0x10, 1ul << 62, 0, 0));
    report("rt_sigaction-kill", post(SYS_rt_sigaction, SIGKILL, 0x10, 0x10, 8, 0, 0));
    report("ioctl-wild", post(SYS_ioctl, fd, 0xc0ffee, 0x10, 0, 0, 0));
    report("getrandom-huge", post(SYS_getrandom, 0x10, 1ul << 62, 0, 0, 0, 0));
    report("epoll_wait-wild", post(SYS_epoll_wait, fd, 0x10, 1 << 30, 0, 0, 0));
    report("recvfrom-wild", post(SYS_recvfrom, fd, 0x10, 1ul << 62, 0, 0x10, 0x10));
    /* A path with no terminating NUL within a page of ones. */
    char *longpath = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(longpath, 'a', 1 << 20);
    report("open-unterminated", post(SYS_open, (uint64_t)longpath, O_RDONLY, 0, 0, 0, 0));
    long honest = syscall(SYS_getppid);
    printf("after-wild=%s\n", honest == ppid ? "ok" : "wrong");

    /* A page the program unmapped by a request it wrote itself (its vCPU
     * ran on meanwhile, so its translations of the page may be stale):
     * memory given out afterwards must never show through it. */
    {
        volatile uint64_t *a = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        unsigned char *b = mmap(0, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        a[0] = 0x5a5a5a5a5a5a5a5aul;
        char want[8];
        if (pread(fd, want, 8, 0) != 8) {
            perror("hostile_ring: pread");
            return 1;
        }
        int s1 = post(SYS_munmap, (uint64_t)a, 4096, 0, 0, 0, 0);
        int s2 = -1;
        const char *what = "untaken";
        if (sigsetjmp(probe_env, 1)) {
            what = "fault";
        } else {
            (void)a[0]; /* keep a stale translation hot, if there is one */
            s2 = post(SYS_pread64, fd, (uint64_t)b, 4096, 0, 0, 0);
            uint64_t seen = a[0];
            if (s1 == EXIT && s2 == DONE)
                what = seen == 0x5a5a5a5a5a5a5a5aul ? "stale-own" : memcmp(&seen, want, 8) == 0 ? "ALIASED" : "other";
        }
        printf("unmapped-page=%s\n", what);
        /* An honest call exits (the page tables must be narrowed first). */
        syscall(SYS_getppid);
        if (sigsetjmp(probe_env, 1))
            printf("unmapped-after=fault\n");
        else
            printf("unmapped-after=%s\n", a[0] == 0x5a5a5a5a5a5a5a5aul ? "stale" : "mapped");
        (void)b;
    }

    {
        int n = post_rewritten(500);
        printf("posted-then-rewritten=%s\n", n > 0 ? "served" : n == 0 ? "untaken" : "stuck");
        fflush(stdout);
    }

    /* A request rewritten while the VMM serves it: number, arguments and
     * state flipped as fast as the program can. */
    {
        /* exit_group is never on the list: served, the run would end here
         * (a number read again after it was checked). */
        static const uint64_t nrs[] = {SYS_getppid, SYS_getpid, SYS_lseek, SYS_fstat, SYS_read, SYS_exit_group, 100000, ~0ul};
        long taken = 0;
        for (int round = 0; round < 3000; round++) {
            syscall(SYS_getppid);
            R->nr = SYS_getppid;
            R->rcx = 0;
            __atomic_store_n(&R->state, REQUEST, __ATOMIC_RELEASE);
            for (int k = 0; k < 64; k++) {
                uint64_t x = rnd();
                R->nr = nrs[x % 8];
                R->args[0] = (x >> 8) & 1 ? (uint64_t)fd : x;
                R->args[1] = (x >> 9) & 1 ? 0x10 : rnd();
                R->args[2] = rnd() & 0xffff;
                R->rsp = rnd();
                R->rcx = rnd();
                uint32_t s = __atomic_exchange_n(&R->state, (x >> 16) % 3 == 0 ? 0xdeadbeef : (uint32_t)((x >> 20) % 5),
                                                 __ATOMIC_ACQ_REL);
                if (s == DONE || s == EXIT) taken++;
            }
            __atomic_store_n(&R->state, IDLE, __ATOMIC_RELEASE);
            /* Let anything the VMM still serves finish before the next call. */
            for (int i = 0; i < 20000; i++) pause_();
            __atomic_store_n(&R->state, IDLE, __ATOMIC_RELEASE);
        }
        printf("rewritten=%s\n", taken > 0 ? "served" : "never-served");
        fflush(stdout);
    }

    /* Settings the VMM owns, overwritten: the service word and the spin. */
    R->service = 1;
    R->spin = 0;
    for (int i = 0; i < 8; i++) R->calls[i] = ~0ul;
    for (int i = 0; i < 1000000; i++) pause_();

    /* Honest calls still get their own results. */
    int bad = 0;
    for (int i = 0; i < 2000; i++)
        if (syscall(SYS_getppid) != ppid) bad++;
    char buf[16];
    if (pread(fd, buf, sizeof buf, 0) != sizeof buf) bad++;
    printf("after-chaos=%s\n", bad ? "wrong" : "ok");
    printf("survived\n");
    return 0;
}
