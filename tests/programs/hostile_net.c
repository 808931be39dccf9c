/* A hostile program against host services: it connects out. Modes:
 *   connect ADDR PORT   a TCP connection; "connected" or the error
 *   udp ADDR PORT       a datagram with sendto
 *   self                a TCP listener on loopback and a connection to it
 *                       (a server talking to itself)
 *   socket              whether an IP socket can be made at all
 *   udp-echo            a datagram server: prints its port, answers one
 *                       datagram to its sender */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in addr(const char *a, const char *p) {
    struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(atoi(p)) };
    inet_pton(AF_INET, a, &s.sin_addr);
    return s;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "connect") && argc > 3) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = addr(argv[2], argv[3]);
        if (connect(s, (void *)&a, sizeof a)) {
            printf("connect: %s\n", strerror(errno));
            return 1;
        }
        printf("connected\n");
        return write(s, "hello", 5) == 5 ? 0 : 1;
    }
    if (!strcmp(mode, "udp") && argc > 3) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = addr(argv[2], argv[3]);
        if (sendto(s, "hello", 5, 0, (void *)&a, sizeof a) != 5) {
            printf("sendto: %s\n", strerror(errno));
            return 1;
        }
        printf("sent\n");
        return 0;
    }
    if (!strcmp(mode, "self")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = addr("127.0.0.1", "0");
        socklen_t n = sizeof a;
        if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &n)) {
            printf("listen: %s\n", strerror(errno));
            return 1;
        }
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a)) {
            printf("connect to self: %s\n", strerror(errno));
            return 1;
        }
        int s = accept(l, NULL, NULL);
        char b[4] = {0};
        if (s < 0 || write(c, "abc", 3) != 3 || read(s, b, 3) != 3) return 1;
        printf("talked to self: %s\n", b);
        return 0;
    }
    if (!strcmp(mode, "udp-echo")) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = addr("127.0.0.1", "0"), from;
        socklen_t n = sizeof a, fl = sizeof from;
        if (bind(s, (void *)&a, sizeof a) || getsockname(s, (void *)&a, &n)) return 1;
        printf("port %d\n", ntohs(a.sin_port));
        char b[64];
        ssize_t got = recvfrom(s, b, sizeof b, 0, (void *)&from, &fl);
        if (got < 0 || sendto(s, b, got, 0, (void *)&from, fl) != got) {
            printf("answer: %s\n", strerror(errno));
            return 1;
        }
        printf("answered\n");
        return 0;
    }
    if (!strcmp(mode, "socket")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        printf("socket: %s\n", s < 0 ? strerror(errno) : "ok");
        return 0;
    }
    fprintf(stderr, "usage: hostile_net connect|udp ADDR PORT | self | socket\n");
    return 2;
}
