/* A program that acts differently in one variant, as a program under an
 * exploit would: it tells variants apart by where its stack lies (each
 * variant has its own address-space layout). Modes:
 *   open-leader | open-follower DIR   an extra open(O_CREAT) of DIR/extra in one variant
 *   socket                            a TCP server whose reply differs in one variant
 *   address                           prints the address of a local variable
 *   read FILE                         reads FILE and prints its size (agrees everywhere)
 * Before the divergent step every variant prints "ready". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
