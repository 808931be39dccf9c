/* A program that changes a file's metadata or a host lock in the leader
 * only (told apart by where its stack lies, as divergent.c), as a program
 * under an exploit would. Every variant opens FILE and prints "ready"; then
 * the leader makes the call and the followers write a line instead. Modes:
 *   ftruncate|fchmod|fchown|flock|fallocate|utimes FILE
 *   shutdown|close PORT   every variant serves one client on 127.0.0.1:PORT;
 *                   the leader alone shuts the connection down or closes it
 *   lock-all FILE   every variant takes an exclusive flock on FILE (identical
 *                   variants on one host must not block each other) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int is_leader(void) {
    int x;
    return (uintptr_t)&x > 0x7f0000000000ULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: hostile_mvx MODE FILE\n");
        return 2;
    }
    const char *mode = argv[1];
    if (!strcmp(mode, "shutdown") || !strcmp(mode, "close")) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (bind(l, (void *)&a, sizeof a) || listen(l, 1)) {
            perror("listen");
            return 1;
        }
        printf("ready\n");
        int c = accept(l, NULL, NULL);
        if (c < 0) return 1;
        if (!is_leader()) {
            /* Followers reach their next call seconds later (no system
             * calls meanwhile): the leader's must not reach the peer first. */
            for (volatile long i = 0; i < 4000000000L; i++) {}
            printf("follower\n");
        }
        else if (!strcmp(mode, "shutdown")) shutdown(c, SHUT_WR);
        else close(c);
        printf("done\n");
        return 0;
    }
    /* lock-all reads the file only: each variant opens its own copy. */
    int fd = open(argv[2], strcmp(mode, "lock-all") ? O_RDWR : O_RDONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    printf("ready\n");
    if (!strcmp(mode, "lock-all")) {
        if (flock(fd, LOCK_EX)) {
            perror("flock");
            return 1;
        }
        /* Under the lock, a call the leader checks in lockstep (as a program
         * that writes its pid file while holding the lock). */
        char spare[4096];
        snprintf(spare, sizeof spare, "%s.spare", argv[2]);
        unlink(spare);
        printf("locked\n");
        flock(fd, LOCK_UN);
        return 0;
    }
    if (!is_leader()) {
        printf("follower\n");
        return 0;
    }
    if (!strcmp(mode, "ftruncate")) ftruncate(fd, 0);
    else if (!strcmp(mode, "fchmod")) fchmod(fd, 0777);
    else if (!strcmp(mode, "fchown")) fchown(fd, 1234, 1234);
    else if (!strcmp(mode, "flock")) flock(fd, LOCK_EX);
    else if (!strcmp(mode, "fallocate")) fallocate(fd, 0, 0, 1 << 20);
    else if (!strcmp(mode, "utimes")) futimens(fd, NULL);
    printf("leader\n");
    return 0;
}
