/* A guest that attacks the host through the VMM's authority, as a hostile
 * program would. Each mode prints one line per attempt, "NAME ok" when the
 * host let it through, "NAME errno E (text)" when it was refused; the test
 * judges the host's state itself.
 *   hostile shadow               read /etc/shadow
 *   hostile unix PATH            connect to the unix socket PATH, send "hi"
 *   hostile setuid DIR VICTIM    in a writable root: make DIR/suid 04755 (by
 *                                open and by chmod), chown it to root and to
 *                                1234, chmod/chown the existing VICTIM
 *   hostile devices              open /dev/kmsg, /dev/kvm, /dev/mem, DIR nodes
 *   hostile mincore              mincore over a huge PROT_NONE reservation (up to 2.75 TiB)
 *                                into a one-page vector, then sleep 3 s
 *   hostile sleep N              sleep N seconds (for a test to inspect the VMM) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, int r) {
    if (r < 0)
        printf("%s errno %d (%s)\n", what, errno, strerror(errno));
    else
        printf("%s ok\n", what);
    fflush(stdout);
}

static int shadow(void) {
    int fd = open("/etc/shadow", O_RDONLY);
    report("open /etc/shadow", fd);
    if (fd >= 0) {
        char b[64];
        ssize_t n = read(fd, b, sizeof b);
        printf("read %zd bytes of /etc/shadow\n", n);
    }
    return 0;
}

static int unix_connect(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    report("socket", s);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    report("connect", r);
    if (r == 0) report("send", (int)write(s, "hi", 2));
    return 0;
}

static int setuid_files(const char *dir, const char *victim) {
    char p[512];
    snprintf(p, sizeof p, "%s/suid", dir);
    int fd = open(p, O_CREAT | O_WRONLY | O_EXCL, 04755);
    report("create 04755", fd);
    if (fd >= 0) {
        report("write", (int)write(fd, "#!/bin/sh\nid\n", 13));
        report("fchmod 04755", fchmod(fd, 04755));
        close(fd);
    }
    report("chmod 06755", chmod(p, 06755));
    report("chown 0:0", chown(p, 0, 0));
    report("chown 1234:1234", chown(p, 1234, 1234));
    report("chmod 04755 after chown", chmod(p, 04755));
    report("victim chmod 04777", chmod(victim, 04777));
    report("victim chown 1234:1234", chown(victim, 1234, 1234));
    int v = open(victim, O_WRONLY | O_TRUNC);
    report("victim truncate", v);
    return 0;
}

static int devices(int argc, char **argv) {
    const char *fixed[] = { "/dev/kmsg", "/dev/kvm", "/dev/mem", "/dev/port" };
    char what[600];
    for (unsigned i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        snprintf(what, sizeof what, "open %s", fixed[i]);
        report(what, open(fixed[i], O_RDWR));
    }
    for (int i = 0; i < argc; i++) {
        snprintf(what, sizeof what, "open %s", argv[i]);
        report(what, open(argv[i], O_RDWR));
    }
    report("open /dev/null", open("/dev/null", O_RDWR));
    return 0;
}

static int huge_mincore(void) {
    size_t len = (size_t)11 << 38; /* 2.75 TiB, or the largest the layout gives */
    void *p = MAP_FAILED;
    for (; len >= ((size_t)1 << 30) && p == MAP_FAILED; len /= 2)
        p = mmap(0, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    len *= 2;
    printf("reserved %zu GiB\n", len >> 30);
    report("mmap", p == MAP_FAILED ? -1 : 0);
    static unsigned char vec[4096];
    report("mincore", mincore(p, len, vec));
    struct timespec t = { .tv_sec = 3 };
    nanosleep(&t, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "mincore")) return huge_mincore();
    if (argc >= 2 && !strcmp(argv[1], "shadow")) return shadow();
    if (argc >= 3 && !strcmp(argv[1], "unix")) return unix_connect(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "setuid")) return setuid_files(argv[2], argv[3]);
    if (argc >= 2 && !strcmp(argv[1], "devices")) return devices(argc - 2, argv + 2);
    if (argc >= 3 && !strcmp(argv[1], "sleep")) {
        struct timespec t = { .tv_sec = atoi(argv[2]) };
        nanosleep(&t, 0);
        puts("slept");
        return 0;
    }
    fprintf(stderr, "usage: hostile shadow|unix PATH|setuid DIR VICTIM|devices [PATH...]|sleep N\n");
    return 2;
}
