/* Exercises the memory and file calls dmvx-vmm handles, and misbehaves on
 * request. Built by the tests with gcc -static and -static-pie.
 * Usage: memtest MODE [ARG]; prints "ok MODE" and exits 0 when every check
 * passes, "FAIL ..." and exits 1 otherwise. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); failures++; } } while (0)

/* Raw system calls, so libc cannot check or rewrite the arguments. */
static long raw(long nr, long a, long b, long c, long d) { return syscall(nr, a, b, c, d); }

static void test_brk(void) {
    char *start = sbrk(0);
    CHECK(start != (void *)-1, "sbrk(0)");
    for (int i = 1; i <= 64; i++) {
        char *p = sbrk(4096 * 3);
        CHECK(p != (void *)-1, "sbrk grow %d", i);
        memset(p, i, 4096 * 3);
    }
    for (int i = 1; i <= 64; i++)
        CHECK(start[(i - 1) * 4096 * 3 + 5] == (char)i, "brk contents %d", i);
    CHECK(sbrk(-(4096 * 3 * 32)) != (void *)-1, "sbrk shrink");
    CHECK(sbrk(0) == start + 4096 * 3 * 32, "brk after shrink");
    /* malloc of many small and some large blocks (mmap threshold) */
    void *blocks[200];
    for (int i = 0; i < 200; i++) { blocks[i] = malloc(i * 997 + (i % 10 == 0 ? 300000 : 1)); CHECK(blocks[i], "malloc %d", i); memset(blocks[i], 0xab, i * 997 + 1); }
    for (int i = 0; i < 200; i++) free(blocks[i]);
}

static void test_mmap(void) {
    size_t len = 64 * 4096;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED, "mmap anon");
    size_t nonzero = 0;
    for (size_t i = 0; i < len; i++) nonzero += p[i] != 0;
    CHECK(nonzero == 0, "fresh mmap has %zu non-zero bytes", nonzero);
    for (size_t i = 0; i < len; i += 4096) p[i] = (unsigned char)(i >> 12);
    /* mprotect read-only keeps contents; back to RW allows writes */
    CHECK(mprotect(p, len, PROT_READ) == 0, "mprotect RO");
    CHECK(p[4096 * 7] == 7, "contents after mprotect RO");
    CHECK(mprotect(p, len, PROT_NONE) == 0, "mprotect NONE");
    CHECK(mprotect(p, len, PROT_READ | PROT_WRITE) == 0, "mprotect RW");
    CHECK(p[4096 * 9] == 9, "contents survive PROT_NONE");
    p[1] = 42;
    /* partial munmap splits the mapping */
    CHECK(munmap(p + 16 * 4096, 16 * 4096) == 0, "munmap middle");
    CHECK(p[4096 * 40] == 40, "tail after split");
    CHECK(munmap(p, len) == 0, "munmap all (with a hole)");
    /* remapping the same range gives zeroes again */
    unsigned char *q = mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(q == p, "MAP_FIXED at the old address");
    CHECK(q[4096 * 7] == 0 && q[1] == 0, "MAP_FIXED gives fresh zero pages");
    /* mremap grow and move */
    q[0] = 0x5a;
    unsigned char *r = mremap(q, len, len * 4, MREMAP_MAYMOVE);
    CHECK(r != MAP_FAILED && r[0] == 0x5a, "mremap grow keeps contents");
    r[len * 4 - 1] = 1;
    CHECK(munmap(r, len * 4) == 0, "munmap after mremap");
    /* MAP_FIXED_NOREPLACE over an existing mapping fails */
    void *a = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mmap(a, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == MAP_FAILED && errno == EEXIST, "MAP_FIXED_NOREPLACE");
    /* bad arguments */
    CHECK(mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED && errno == EINVAL, "mmap len 0");
    CHECK(munmap((void *)0x1001, 4096) == -1 && errno == EINVAL, "munmap unaligned");
    CHECK(mprotect((void *)0x7000000000, 4096, PROT_READ) == -1 && errno == ENOMEM, "mprotect unmapped");
}

static void test_reservation(void) {
    size_t gib = 1UL << 30;
    char *res = mmap(NULL, gib, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(res != MAP_FAILED, "1 GiB PROT_NONE reservation");
    /* commit scattered pieces, as allocators do */
    for (int i = 0; i < 8; i++) {
        char *piece = res + (size_t)i * (gib / 8);
        CHECK(mprotect(piece, 1 << 20, PROT_READ | PROT_WRITE) == 0, "commit piece %d", i);
        piece[0] = (char)i;
        piece[(1 << 20) - 1] = (char)i;
    }
    for (int i = 0; i < 8; i++) CHECK(res[(size_t)i * (gib / 8)] == (char)i, "piece %d", i);
    CHECK(munmap(res, gib) == 0, "unmap reservation");
    /* a 1 GiB read-write mapping touched sparsely */
    char *big = mmap(NULL, gib, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(big != MAP_FAILED, "1 GiB RW mapping");
    for (size_t off = 0; off < gib; off += 64 << 20) big[off] = 1;
    CHECK(munmap(big, gib) == 0, "unmap 1 GiB");
}

static void test_file(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/memtest.out", dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
    const char msg[] = "written inside dmvx\n";
    struct iovec iov[2] = { { (void *)msg, 8 }, { (void *)(msg + 8), sizeof msg - 9 } };
    CHECK(writev(fd, iov, 2) == sizeof msg - 1, "writev");
    CHECK(close(fd) == 0, "close");
    char buf[64] = {0};
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && read(fd, buf, sizeof buf) == sizeof msg - 1 && strcmp(buf, msg) == 0, "read back");
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == sizeof msg - 1, "fstat size");
    close(fd);
    /* mmap of the file, private */
    fd = open(path, O_RDONLY);
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    CHECK(m != MAP_FAILED && memcmp(m, msg, sizeof msg - 1) == 0 && m[sizeof msg] == 0, "file mmap contents");
    m[0] = 'W';
    close(fd);
    fd = open(path, O_RDONLY);
    CHECK(read(fd, buf, 1) == 1 && buf[0] == 'w', "private mapping writes stay private");
    close(fd);
    munmap(m, 4096);
}

/* MAP_SHARED file mappings: what the program writes reaches the file at
 * msync, at munmap, and (mode "shared-exit") when the program ends. */
static void read_at(const char *path, off_t off, char *buf, size_t n) {
    int fd = open(path, O_RDONLY);
    memset(buf, 0, n);
    CHECK(fd >= 0 && pread(fd, buf, n, off) >= 0, "read %s back", path);
    close(fd);
}

static void test_shared(const char *dir, int leave_mapped) {
    char path[512], buf[16];
    snprintf(path, sizeof path, "%s/shared.bin", dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 8192 + 100) == 0, "create %s", path);
    char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED, "shared writable mapping: %s", strerror(errno));
    if (m == MAP_FAILED)
        return;
    memcpy(m, "msync", 5);
    CHECK(msync(m, 4096, MS_SYNC) == 0, "msync");
    read_at(path, 0, buf, 5);
    CHECK(!memcmp(buf, "msync", 5), "msync wrote the page back");
    CHECK(msync(m, 4096, MS_SYNC | MS_ASYNC) == -1 && errno == EINVAL, "msync with both MS_SYNC and MS_ASYNC");
    memcpy(m + 8192 + 90, "tail", 4);
    if (leave_mapped) {
        memcpy(m + 4096, "exit", 4);
        printf("ok shared-exit\n");
        exit(0);
    }
    memcpy(m + 4096, "munmap", 6);
    CHECK(munmap(m, 3 * 4096) == 0, "munmap");
    read_at(path, 4096, buf, 6);
    CHECK(!memcmp(buf, "munmap", 6), "munmap wrote the page back");
    read_at(path, 8192 + 90, buf, 16);
    CHECK(!memcmp(buf, "tail", 4), "the last partial page too");
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == 8192 + 100, "the file did not grow");
    close(fd);
    /* A file not open for writing maps shared read-only, never writable. */
    fd = open(path, O_RDONLY);
    CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EACCES, "EACCES");
    m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    CHECK(m != MAP_FAILED && !memcmp(m, "msync", 5), "read-only shared mapping");
    CHECK(mprotect(m, 4096, PROT_READ | PROT_WRITE) == -1 && errno == EACCES, "mprotect to writable: EACCES");
    close(fd);
}

static void test_hostile(void) {
    char ok[16] = "x";
    /* pointers outside any mapping, into the kernel half, and wrapping lengths */
    CHECK(raw(SYS_write, 1, 0x1, 10, 0) == -1 && errno == EFAULT, "write from 0x1");
    CHECK(raw(SYS_write, 1, (long)0xffff888000000000UL, 10, 0) == -1 && errno == EFAULT, "write from the direct map");
    CHECK(raw(SYS_write, 1, (long)0xffffffff80100000UL, 10, 0) == -1 && errno == EFAULT, "write from the kernel image");
    CHECK(raw(SYS_write, 1, (long)ok, 1L << 62, 0) == -1 && errno == EFAULT, "write with a huge length");
    CHECK(raw(SYS_read, 0, (long)ok, -1L, 0) == -1 && errno == EFAULT, "read with length -1");
    CHECK(raw(SYS_read, 0, (long)0x7ffffffff000UL, 100, 0) == -1 && errno == EFAULT, "read past user space");
    CHECK(raw(SYS_openat, AT_FDCWD, 0x10, O_RDONLY, 0) == -1 && errno == EFAULT, "open with a bad path");
    CHECK(raw(SYS_newfstatat, AT_FDCWD, (long)"/", 0x8, 0) == -1 && errno == EFAULT, "stat into a bad buffer");
    CHECK(raw(SYS_readv, 0, 0x1000, 4, 0) == -1 && errno == EFAULT, "readv with a bad iovec array");
    CHECK(raw(SYS_readv, 0, (long)ok, 1 << 20, 0) == -1 && errno == EINVAL, "readv with too many iovecs");
    struct iovec bad = { (void *)0x2000, 100 };
    CHECK(raw(SYS_writev, 1, (long)&bad, 1, 0) == -1 && errno == EFAULT, "writev of a bad buffer");
    CHECK(raw(SYS_clock_gettime, CLOCK_REALTIME, 0x1, 0, 0) == -1 && errno == EFAULT, "clock_gettime into 0x1");
    CHECK(raw(SYS_getrandom, 0x5000, 64, 0, 0) == -1 && errno == EFAULT, "getrandom into nothing");
    CHECK(raw(SYS_uname, (long)0xffff800000000000UL, 0, 0, 0) == -1 && errno == EFAULT, "uname into a non-canonical address");
    CHECK(raw(SYS_execve, 0x10, 0, 0, 0) == -1 && errno == EFAULT, "execve with a bad path");
    CHECK(raw(SYS_close, -1, 0, 0, 0) == -1 && errno == EBADF, "close(-1)");
    CHECK(raw(SYS_write, 1 << 30, (long)ok, 1, 0) == -1 && errno == EBADF, "write to a huge fd");
    CHECK(syscall(SYS_mmap, 0, 1L << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -1 && errno == ENOMEM, "mmap of 2^62 bytes");
    /* writing a read-only page through the VMM must fail like Linux */
    const char *ro = "read-only literal";
    int fd = open("/dev/zero", O_RDONLY);
    CHECK(raw(SYS_read, fd, (long)ro, 4, 0) == -1 && errno == EFAULT, "read into a read-only page");
    close(fd);
}

static void test_escape(const char *secret) {
    /* The test puts SECRET outside the root and symlinks to it; every path must stay inside. */
    const char *paths[] = { "../secret", "/../secret", "/../../secret", "link-abs", "link-rel", "sub/../../secret", "/proc/self/root/secret", secret };
    for (unsigned i = 0; i < sizeof paths / sizeof *paths; i++) {
        int fd = open(paths[i], O_RDONLY);
        char buf[32] = {0};
        if (fd >= 0) {
            ssize_t n = read(fd, buf, sizeof buf - 1);
            CHECK(n <= 0 || strstr(buf, "TOPSECRET") == NULL, "escaped through %s", paths[i]);
            close(fd);
        }
    }
    CHECK(chdir("/..") == 0, "chdir /..");
    char cwd[256];
    CHECK(getcwd(cwd, sizeof cwd) && strcmp(cwd, "/") == 0, "cwd stays / (%s)", cwd);
    CHECK(open("/proc/self/mem", O_RDWR) == -1, "/proc/self/mem refused");
    CHECK(open("/dev/kvm", O_RDWR) == -1, "/dev/kvm refused");
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "all")) { test_brk(); test_mmap(); test_reservation(); }
    else if (!strcmp(mode, "file")) test_file(argc > 2 ? argv[2] : "/tmp");
    else if (!strcmp(mode, "shared")) test_shared(argc > 2 ? argv[2] : "/tmp", 0);
    else if (!strcmp(mode, "shared-exit")) test_shared(argc > 2 ? argv[2] : "/tmp", 1);
    else if (!strcmp(mode, "hostile")) test_hostile();
    else if (!strcmp(mode, "escape")) test_escape(argc > 2 ? argv[2] : "/secret");
    else if (!strcmp(mode, "null")) { volatile int *p = NULL; return *p; }
    else if (!strcmp(mode, "ill")) { __asm__ volatile("ud2"); }
    else if (!strcmp(mode, "after-munmap")) {
        volatile char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1; p[4096] = 2;
        munmap((void *)p, 8192);
        return p[4096];
    }
    else if (!strcmp(mode, "after-mprotect")) {
        volatile char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 1;
        mprotect((void *)p, 4096, PROT_READ);
        p[0] = 2;
        return 0;
    }
    else if (!strcmp(mode, "kernel-read")) { volatile char *k = (char *)0xffffffff80101000UL; return *k; }
    else if (!strcmp(mode, "port-io")) { __asm__ volatile("out %%al, $0xd0" ::: "memory"); return 0; }
    else if (!strcmp(mode, "abort")) abort();
    else if (!strcmp(mode, "exit")) return atoi(argc > 2 ? argv[2] : "0");
    else { printf("unknown mode %s\n", mode); return 2; }
    if (failures) return 1;
    printf("ok %s\n", mode);
    return 0;
}
