/* A deliberately vulnerable TCP server for the exploit scenario
 * (tests/exploit.rs, scripts/demo.sh). For every connection it reads a
 * 4-byte length and then that many bytes into a 64-byte buffer on the
 * stack: the length is never checked, so a client overwrites the return
 * address of handle() (built with -fno-stack-protector; PIE, dynamically
 * linked). Otherwise it answers "ok\n".
 *
 *   vulnserver PORT     listen on 127.0.0.1:PORT, print "listening"
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int read_full(int fd, void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        if (n <= 0)
            return -1;
        done += n;
    }
    return 0;
}

__attribute__((noinline)) static void handle(int c) {
    char buf[64];
    uint32_t len;
    if (read_full(c, &len, sizeof len) != 0)
        return;
    if (read_full(c, buf, len) != 0) /* the bug: len may exceed sizeof buf */
        return;
    if (write(c, "ok\n", 3) != 3)
        return;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: vulnserver PORT\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0) {
        perror("vulnserver: listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            continue;
        handle(c);
        close(c);
    }
}
