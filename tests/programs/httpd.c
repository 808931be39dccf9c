/* A small static-file HTTP/1.1 server (epoll, keep-alive, GET and HEAD),
 * the program images/build-nversion.sh builds twice with different
 * compilers or flags, to run the builds as variants (tests/nversion.rs).
 *
 *   httpd PORT DOCROOT    listen on 127.0.0.1:PORT, serve files under DOCROOT,
 *                         print "listening"; SIGTERM ends it with status 0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FDS 1024
#define REQ_MAX 4096

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

struct conn {
    char buf[REQ_MAX];
    size_t len;
};
static struct conn *conns[MAX_FDS];
static int root_fd;

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= w;
    }
    return 0;
}

static const char *type_of(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot && !strcmp(dot, ".html")) return "text/html";
    if (dot && !strcmp(dot, ".txt")) return "text/plain";
    return "application/octet-stream";
}

static int reply_error(int c, int code, const char *what) {
    char h[256];
    int n = snprintf(h, sizeof h, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
                     code, what, strlen(what) + 1, what);
    return write_all(c, h, n);
}

/* Answers one request (the head is NUL-terminated in req); -1 closes. */
static int serve(int c, char *req) {
    char method[8], path[1024];
    if (sscanf(req, "%7s %1023s", method, path) != 2 || path[0] != '/') return reply_error(c, 400, "Bad Request"), -1;
    int head = !strcmp(method, "HEAD");
    if (!head && strcmp(method, "GET")) return reply_error(c, 405, "Method Not Allowed");
    if (strstr(path, "..")) return reply_error(c, 403, "Forbidden");
    char *q = strchr(path, '?');
    if (q) *q = 0;
    const char *rel = path[1] ? path + 1 : "index.html";
    int f = openat(root_fd, rel, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (f < 0 || fstat(f, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (f >= 0) close(f);
        return reply_error(c, 404, "Not Found");
    }
    char h[512];
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 200 OK\r\nServer: dmvx-httpd\r\nContent-Type: %s\r\nContent-Length: %lld\r\n\r\n",
                     type_of(rel), (long long)st.st_size);
    int r = write_all(c, h, n);
    static char body[65536];
    for (off_t off = 0; r == 0 && !head && off < st.st_size;) {
        ssize_t got = pread(f, body, sizeof body, off);
        if (got <= 0) { r = -1; break; }
        r = write_all(c, body, got);
        off += got;
    }
    close(f);
    return r;
}

/* Reads what the client sent and answers every complete request. */
static int on_readable(int c) {
    struct conn *k = conns[c];
    ssize_t n = read(c, k->buf + k->len, REQ_MAX - 1 - k->len);
    if (n <= 0) return -1;
    k->len += n;
    k->buf[k->len] = 0;
    char *end;
    while ((end = strstr(k->buf, "\r\n\r\n"))) {
        *end = 0;
        if (serve(c, k->buf) != 0) return -1;
        size_t used = end + 4 - k->buf;
        memmove(k->buf, end + 4, k->len - used + 1);
        k->len -= used;
    }
    return k->len == REQ_MAX - 1 ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: httpd PORT DOCROOT\n");
        return 2;
    }
    root_fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        perror("httpd: docroot");
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 128) != 0) {
        perror("httpd: listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening\n");
    fflush(stdout);
    struct epoll_event evs[64];
    while (!stop) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("httpd: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int c;
                while ((c = accept4(ls, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
                    if (c >= MAX_FDS || !(conns[c] = calloc(1, sizeof *conns[c]))) {
                        close(c);
                        continue;
                    }
                    struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
                }
                continue;
            }
            if (on_readable(fd) != 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                free(conns[fd]);
                conns[fd] = NULL;
            }
        }
    }
    return 0;
}
