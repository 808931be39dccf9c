/* A program that acts differently in one variant, as a program under an
 * exploit would: it tells variants apart by where its stack lies (each
 * variant has its own address-space layout). Modes:
 *   open-leader | open-follower DIR   an extra open(O_CREAT) of DIR/extra in one variant
 *   socket                            a TCP server whose reply differs in one variant
 *   address                           prints the address of a local variable
 *   data-address                      prints where its heap, thread data and an anonymous
 *                                     mapping are (the same everywhere when data is shared)
 *   child-address                     a child process prints the address of a local
 *                                     variable; the parent waits for it
 *   secrets                           prints AT_RANDOM and the stack canary glibc made of it
 *   read FILE                         reads FILE and prints its size (agrees everywhere)
 *   echo poll|select PORT             a TCP echo server driven by poll or select, up to
 *                                     8 clients; "quit" ends it (agrees everywhere)
 * Before the divergent step every variant prints "ready". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/select.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Waits with poll or select for the listener and the clients in fds[1..n]. */
static int wait_ready(int use_select, int *fds, int n, int *ready) {
    if (use_select) {
        fd_set r;
        FD_ZERO(&r);
        int max = 0;
        for (int i = 0; i < n; i++) {
            FD_SET(fds[i], &r);
            if (fds[i] > max) max = fds[i];
        }
        if (select(max + 1, &r, NULL, NULL, NULL) <= 0) return -1;
        for (int i = 0; i < n; i++) ready[i] = FD_ISSET(fds[i], &r);
        return 0;
    }
    struct pollfd p[9];
    for (int i = 0; i < n; i++) p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
    if (poll(p, n, -1) <= 0) return -1;
    for (int i = 0; i < n; i++) ready[i] = p[i].revents != 0;
    return 0;
}

static int echo_server(int use_select, int port) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 8)) return 3;
    printf("listening\n");
    int fds[9] = { ls }, ready[9], n = 1;
    for (;;) {
        if (wait_ready(use_select, fds, n, ready)) return 6;
        for (int i = n - 1; i >= 1; i--) {
            if (!ready[i]) continue;
            char buf[256];
            ssize_t got = read(fds[i], buf, sizeof buf);
            if (got <= 0) {
                close(fds[i]);
                fds[i] = fds[--n];
                continue;
            }
            if (got >= 4 && !memcmp(buf, "quit", 4)) return 0;
            if (write(fds[i], buf, got) != got) return 7;
        }
        if (ready[0] && n < 9) fds[n++] = accept(ls, NULL, NULL);
    }
}

static int is_leader(void) {
    int x;
    /* Variant 0's stack is right below 128 TiB; others are 4 TiB apart. */
    return (uintptr_t)&x > 0x7f0000000000ULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("ready\n");
    if (!strcmp(mode, "open-leader") || !strcmp(mode, "open-follower")) {
        int mine = !strcmp(mode, "open-leader") ? is_leader() : !is_leader();
        char path[512];
        snprintf(path, sizeof path, "%s/extra", argc > 2 ? argv[2] : "/tmp");
        if (mine) {
            int fd = open(path, O_CREAT | O_WRONLY, 0644);
            if (fd >= 0) write(fd, "x", 1);
        }
        printf("done\n");
        return 0;
    }
    if (!strcmp(mode, "socket")) {
        int ls = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4)) return 3;
        printf("listening\n");
        int c = accept(ls, NULL, NULL);
        char buf[256];
        ssize_t n = read(c, buf, sizeof buf);
        if (n <= 0) return 4;
        /* The reply differs in one variant: a leak, or a hijacked variant. */
        const char *reply = is_leader() ? "reply from the leader\n" : "reply from a follower\n";
        write(c, reply, strlen(reply));
        close(c);
        return 0;
    }
    if (!strcmp(mode, "address")) {
        int x;
        printf("%p\n", (void *)&x);
        return 0;
    }
    if (!strcmp(mode, "data-address")) {
        static __thread int tls;
        void *heap = malloc(64);
        void *anon = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("%p %p %p\n", heap, (void *)&tls, anon);
        return 0;
    }
    if (!strcmp(mode, "child-address")) {
        pid_t c = fork();
        if (c == 0) {
            int x;
            printf("child %p\n", (void *)&x);
            _exit(0);
        }
        int st;
        waitpid(c, &st, 0);
        printf("parent done\n");
        return 0;
    }
    if (!strcmp(mode, "secrets")) {
        const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
        unsigned long canary;
        __asm__ volatile("mov %%fs:0x28, %0" : "=r"(canary));
        for (int i = 0; i < 16; i++) printf("%02x", r[i]);
        printf(" %016lx\n", canary);
        return 0;
    }
    if (!strcmp(mode, "echo") && argc > 3) return echo_server(!strcmp(argv[2], "select"), atoi(argv[3]));
    if (!strcmp(mode, "read")) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) return 5;
        char buf[65536];
        long total = 0;
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) total += n;
        printf("read %ld bytes\n", total);
        return 0;
    }
    return 2;
}
