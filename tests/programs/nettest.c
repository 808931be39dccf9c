/* Exercises the socket, polling and signal calls of dmvx-vmm.
 * Usage: nettest MODE [ARGS]; prints "ok MODE" and exits 0 when every
 * check passes, "FAIL ..." and exits 1 otherwise. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf(" (errno %d)\n", errno); failures++; } } while (0)

static long raw(long nr, long a, long b, long c, long d, long e, long f) { return syscall(nr, a, b, c, d, e, f); }

/* A TCP echo server on 127.0.0.1:PORT driven by epoll; "quit\n" ends it. */
static void echo_server(int port) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    CHECK(bind(ls, (void *)&a, sizeof a) == 0, "bind");
    CHECK(listen(ls, 16) == 0, "listen");
    socklen_t al = sizeof a;
    CHECK(getsockname(ls, (void *)&a, &al) == 0, "getsockname");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xabcdef0000000000ULL | (unsigned)ls };
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) == 0, "epoll_ctl listen");
    printf("listening %d\n", ntohs(a.sin_port));
    int done = 0;
    while (!done) {
        struct epoll_event out[8];
        int n = epoll_wait(ep, out, 8, 10000);
        CHECK(n > 0, "epoll_wait");
        if (n <= 0) break;
        for (int i = 0; i < n; i++) {
            int fd = (int)(out[i].data.u64 & 0xffffffff);
            CHECK((out[i].data.u64 >> 40) == 0xabcdef, "epoll_data kept (%llx)", (unsigned long long)out[i].data.u64);
            if (fd == ls) {
                struct sockaddr_in peer; socklen_t pl = sizeof peer;
                int c = accept4(ls, (void *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                CHECK(c >= 0 && pl == sizeof peer && peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "accept4");
                struct epoll_event ce = { .events = EPOLLIN | EPOLLRDHUP, .data.u64 = 0xabcdef0000000000ULL | (unsigned)c };
                CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce) == 0, "epoll_ctl conn");
            } else {
                char buf[4096];
                ssize_t r = recv(fd, buf, sizeof buf, 0);
                if (r <= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); close(fd); continue; }
                struct iovec iov[2] = { { "echo: ", 6 }, { buf, (size_t)r } };
                struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
                CHECK(sendmsg(fd, &m, MSG_NOSIGNAL) == r + 6, "sendmsg");
                if (r >= 5 && memcmp(buf, "quit\n", 5) == 0) done = 1;
            }
        }
    }
}

static void hostile(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN };
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    CHECK(raw(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, p[0], 0x10, 0, 0) == -1 && errno == EFAULT, "epoll_ctl with a bad event");
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0, "epoll_ctl");
    CHECK(write(p[1], "x", 1) == 1, "write pipe");
    CHECK(raw(SYS_epoll_wait, ep, 0x1000, 4, 0, 0, 0) == -1 && errno == EFAULT, "epoll_wait into a bad buffer");
    CHECK(raw(SYS_epoll_wait, ep, (long)&ev, 1L << 40, 0, 0, 0) == -1 && errno == EINVAL, "epoll_wait with a huge maxevents");
    CHECK(raw(SYS_epoll_wait, ep, (long)&ev, 0, 0, 0, 0) == -1 && errno == EINVAL, "epoll_wait with maxevents 0");
    CHECK(raw(SYS_epoll_wait, p[0], (long)&ev, 1, 0, 0, 0) == -1 && errno == EINVAL, "epoll_wait on a pipe");
    CHECK(raw(SYS_recvmsg, s, 0x10, 0, 0, 0, 0) == -1 && errno == EFAULT, "recvmsg with a bad msghdr");
    struct msghdr m = { .msg_iov = (void *)0x2000, .msg_iovlen = 2 };
    CHECK(raw(SYS_recvmsg, s, (long)&m, MSG_DONTWAIT, 0, 0, 0) == -1 && errno == EFAULT, "recvmsg with a bad iovec array");
    m.msg_iov = (void *)&m; m.msg_iovlen = 1L << 40;
    CHECK(raw(SYS_sendmsg, s, (long)&m, 0, 0, 0, 0) == -1 && errno == EMSGSIZE, "sendmsg with a huge iovlen");
    struct iovec biov = { (void *)0xffff800000001000UL, 100 };
    struct msghdr bm = { .msg_iov = &biov, .msg_iovlen = 1 };
    CHECK(raw(SYS_sendmsg, s, (long)&bm, 0, 0, 0, 0) == -1 && errno == EFAULT, "sendmsg of a kernel-half buffer");
    struct sockaddr_in a = { .sin_family = AF_INET };
    CHECK(raw(SYS_bind, s, (long)&a, 1000, 0, 0, 0) == -1 && errno == EINVAL, "bind with a huge address length");
    CHECK(raw(SYS_bind, s, 0x30, sizeof a, 0, 0, 0) == -1 && errno == EFAULT, "bind with a bad address");
    CHECK(raw(SYS_connect, s, (long)0xffffffff80000000UL, sizeof a, 0, 0, 0) == -1 && errno == EFAULT, "connect with a kernel address");
    /* accept with a bad length pointer, with a connection pending */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t lal = sizeof la;
    CHECK(bind(l, (void *)&la, sizeof la) == 0 && listen(l, 4) == 0 && getsockname(l, (void *)&la, &lal) == 0, "listen");
    int cl = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(cl, (void *)&la, sizeof la) == 0, "connect");
    CHECK(raw(SYS_accept4, l, (long)&a, 0x40, 0, 0, 0) == -1 && errno == EFAULT, "accept with a bad length pointer");
    int big = 1;
    /* Linux reads only the option's own size from a longer buffer */
    CHECK(raw(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, (long)&big, 1 << 20, 0) == 0, "setsockopt with a huge optlen");
    CHECK(raw(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, (long)&big, 2, 0) == -1 && errno == EINVAL, "setsockopt with a short optlen");
    CHECK(raw(SYS_setsockopt, s, SOL_SOCKET, SO_REUSEADDR, 0x8, 4, 0) == -1 && errno == EFAULT, "setsockopt with a bad value");
    CHECK(raw(SYS_getsockname, s, 0x8, (long)&big, 0, 0, 0) == -1 && errno == EFAULT, "getsockname into a bad buffer");
    CHECK(raw(SYS_sendto, s, (long)"x", 1, 0, 0x10, sizeof a) == -1 && errno == EFAULT, "sendto with a bad destination");
    CHECK(raw(SYS_poll, 0x1000, 4, 0, 0, 0, 0) == -1 && errno == EFAULT, "poll with a bad array");
    CHECK(raw(SYS_poll, (long)&ev, 1L << 30, 0, 0, 0, 0) == -1 && errno == EINVAL, "poll with a huge nfds");
    struct timeval zero = { 0, 0 };
    CHECK(raw(SYS_select, 1 << 20, 0, 0, 0, (long)&zero, 0) == 0, "select clamps a huge nfds");
    CHECK(raw(SYS_select, -1, 0, 0, 0, (long)&zero, 0) == -1 && errno == EINVAL, "select with a negative nfds");
    CHECK(raw(SYS_select, 4, 0x10, 0, 0, 0, 0) == -1 && errno == EFAULT, "select with a bad fd_set");
    CHECK(raw(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, 0x10, 0, 0) == -1 && errno == EFAULT, "socketpair into a bad array");
    CHECK(raw(SYS_timerfd_settime, timerfd_create(CLOCK_MONOTONIC, 0), 0, 0x100, 0, 0, 0) == -1 && errno == EFAULT, "timerfd_settime with a bad spec");
    CHECK(raw(SYS_rt_sigaction, SIGUSR1, 0x10, 0, 8, 0, 0) == -1 && errno == EFAULT, "rt_sigaction with a bad action");
    /* the descriptors still work after all that */
    char c;
    CHECK(epoll_wait(ep, &ev, 1, 0) == 1 && read(p[0], &c, 1) == 1 && c == 'x', "still working");
}

/* A NETLINK_ROUTE socket (the VMM's own) fed the program's worst: every
 * request gets a well-formed reply or none, never a crashed VMM. */
struct nlreq { uint32_t len; uint16_t type, flags; uint32_t seq, pid; unsigned char body[64]; };

static int nl_reply(int s, unsigned char *buf, size_t n) {
    struct sockaddr_storage from;
    socklen_t fl = sizeof from;
    int r = recvfrom(s, buf, n, MSG_DONTWAIT, (void *)&from, &fl);
    if (r >= 0)
        CHECK(fl == 12 && from.ss_family == AF_NETLINK && ((uint32_t *)&from)[1] == 0, "a reply from the kernel's port");
    return r;
}

static void netlink(void) {
    int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
    CHECK(s >= 0, "NETLINK_ROUTE socket");
    struct sockaddr_storage sa = { .ss_family = AF_NETLINK };
    CHECK(bind(s, (void *)&sa, 12) == 0, "bind");
    CHECK(bind(s, (void *)&sa, 4) == -1 && errno == EINVAL, "bind with a short address");
    socklen_t sl = sizeof sa;
    CHECK(getsockname(s, (void *)&sa, &sl) == 0 && sl == 12 && ((uint32_t *)&sa)[1] == (uint32_t)getpid(), "port id");
    unsigned char buf[8192];
    /* A well-formed link dump: lo, then NLMSG_DONE, our seq. */
    struct nlreq q = { .len = 17, .type = 18, .flags = 0x301, .seq = 4711 };
    CHECK(send(s, &q, 20, 0) == 20, "send a dump request");
    int n = nl_reply(s, buf, sizeof buf);
    CHECK(n > 32 && ((struct nlreq *)buf)->seq == 4711, "the reply echoes the seq (%d bytes)", n);
    /* Lengths that lie: beyond the datagram, below a header, zero. */
    for (uint32_t len = 0; len < 40; len += 3) {
        q.len = len == 39 ? 0xffffffff : len;
        CHECK(send(s, &q, 20, 0) == 20, "send a request of length %u", q.len);
        while ((n = nl_reply(s, buf, sizeof buf)) > 0)
            CHECK(n >= 16 && ((uint32_t *)buf)[0] <= (uint32_t)n, "a well-formed reply");
    }
    /* Pointers that lie. */
    CHECK(raw(SYS_sendto, s, 0x10, 20, 0, 0, 0) == -1 && errno == EFAULT, "send from a bad buffer");
    CHECK(raw(SYS_sendto, s, (long)&q, 20, 0, 0x10, 12) == -1 && errno == EFAULT, "send to a bad address");
    CHECK(raw(SYS_getsockname, s, 0x10, (long)&sl, 0, 0, 0) == -1 && errno == EFAULT, "getsockname into a bad buffer");
    struct sockaddr_storage other = { .ss_family = AF_NETLINK };
    ((uint32_t *)&other)[1] = 12345;
    q.len = 20;
    CHECK(sendto(s, &q, 20, 0, (void *)&other, 12) == -1 && errno == ECONNREFUSED, "send to another port");
    /* Too large a request; a change of the network; a short receive buffer. */
    static unsigned char big[70000];
    CHECK(send(s, big, sizeof big, 0) == -1 && errno == EMSGSIZE, "a request beyond 64 KiB");
    struct nlreq del = { .len = 24, .type = 21 /* RTM_DELADDR */, .flags = 0x5, .seq = 9 };
    CHECK(send(s, &del, 24, 0) == 24, "send a change");
    n = nl_reply(s, buf, sizeof buf);
    CHECK(n == 36 && ((struct nlreq *)buf)->type == 2 && *(int32_t *)(buf + 16) == -EPERM, "EPERM for a change (%d)", n);
    q.len = 17;
    q.type = 22;
    CHECK(send(s, &q, 20, 0) == 20, "an address dump");
    n = recv(s, buf, 8, MSG_DONTWAIT | MSG_TRUNC);
    CHECK(n > 8, "a truncated reply says its length (%d)", n);
    CHECK(recv(s, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN, "nothing more queued");
    int one = 1;
    CHECK(setsockopt(s, 270 /* SOL_NETLINK */, 11 /* NETLINK_EXT_ACK */, &one, sizeof one) == 0, "NETLINK_EXT_ACK");
    CHECK(setsockopt(s, 270, 99, &one, sizeof one) == -1 && errno == ENOPROTOOPT, "an unknown netlink option");
    int ty = 0;
    sl = sizeof ty;
    CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &ty, &sl) == 0 && ty == SOCK_RAW, "SO_TYPE");
    CHECK(close(s) == 0, "close");
}

static void refused(void) {
    errno = 0;
    CHECK(socket(AF_NETLINK, SOCK_RAW, 9 /* NETLINK_AUDIT */) == -1 && errno == EPROTONOSUPPORT, "NETLINK_AUDIT");
    CHECK(socket(AF_NETLINK, SOCK_RAW, 4 /* NETLINK_SOCK_DIAG */) == -1 && errno == EPROTONOSUPPORT, "NETLINK_SOCK_DIAG");
    CHECK(socket(AF_NETLINK, SOCK_STREAM, 0) == -1 && errno == ESOCKTNOSUPPORT, "a netlink stream");
    CHECK(socket(AF_PACKET, SOCK_RAW, 0) == -1 && errno == EAFNOSUPPORT, "AF_PACKET");
    CHECK(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) == -1, "raw IP");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == -1 && errno == ENOPROTOOPT, "SO_BINDTODEVICE");
    int one = 1;
    CHECK(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "SO_REUSEADDR allowed");
    CHECK(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY allowed");
    int u = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un abs = { .sun_family = AF_UNIX };
    memcpy(abs.sun_path, "\0dmvx-abstract", 14);
    CHECK(bind(u, (void *)&abs, sizeof abs) == -1 && errno == EPERM, "abstract unix socket");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = { "x", 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &sv[0], sizeof(int));
    CHECK(sendmsg(sv[0], &m, 0) == -1 && errno == EPERM, "descriptor passing");
}

static void unix_sockets(const char *dir, int keep) {
    char path[200];
    snprintf(path, sizeof path, "%s/sock", dir);
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, path);
    CHECK(bind(l, (void *)&a, sizeof a) == 0, "bind %s", path);
    CHECK(listen(l, 1) == 0, "listen");
    struct sockaddr_un got; socklen_t gl = sizeof got;
    CHECK(getsockname(l, (void *)&got, &gl) == 0 && strcmp(got.sun_path, path) == 0, "getsockname shows the program's path (%s)", got.sun_path);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (void *)&a, sizeof a) == 0, "connect");
    int s = accept(l, NULL, NULL);
    CHECK(s >= 0 && write(c, "ping", 4) == 4, "write");
    char buf[8] = {0};
    CHECK(read(s, buf, 8) == 4 && strcmp(buf, "ping") == 0, "read");
    /* select and poll on it */
    fd_set rf; FD_ZERO(&rf); FD_SET(s, &rf);
    struct timeval tv = { 0, 1000 };
    CHECK(select(s + 1, &rf, NULL, NULL, &tv) == 0, "select idle");
    CHECK(write(c, "x", 1) == 1, "write");
    FD_ZERO(&rf); FD_SET(s, &rf); tv.tv_usec = 100000;
    CHECK(select(s + 1, &rf, NULL, NULL, &tv) == 1 && FD_ISSET(s, &rf), "select ready");
    struct pollfd pf = { .fd = s, .events = POLLIN };
    CHECK(poll(&pf, 1, 100) == 1 && (pf.revents & POLLIN), "poll");
    struct pollfd bad = { .fd = 999, .events = POLLIN };
    CHECK(poll(&bad, 1, 0) == 1 && bad.revents == POLLNVAL, "poll of a closed fd");
    int e = eventfd(3, EFD_NONBLOCK);
    uint64_t v;
    CHECK(read(e, &v, 8) == 8 && v == 3, "eventfd");
    int t = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = { .it_value = { 0, 2000000 } };
    CHECK(timerfd_settime(t, 0, &its, NULL) == 0 && read(t, &v, 8) == 8 && v == 1, "timerfd");
    if (!keep) unlink(path);
}

static volatile sig_atomic_t got_sig, got_code;
static volatile double fp_in_handler;
static void on_usr1(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig; got_code = si->si_code;
    volatile double x = 1.0;
    for (int i = 0; i < 10; i++) x = x * 3.5 + 0.25;
    fp_in_handler = x;
}
static void on_alarm(int sig) { (void)sig; got_sig = SIGALRM; }
static sigjmp_buf jb;
static void on_segv(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig;
    fp_in_handler = (double)(uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}
static char altstack[64 * 1024];
static void on_altstack(int sig) {
    int here;
    got_sig = sig;
    got_code = (char *)&here >= altstack && (char *)&here < altstack + sizeof altstack;
}

static void signals(void) {
    struct sigaction sa = { .sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO };
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    volatile double keep = 2.0;
    for (int i = 0; i < 20; i++) keep = keep * 1.5;
    double before = keep;
    CHECK(kill(getpid(), SIGUSR1) == 0, "kill self");
    CHECK(got_sig == SIGUSR1 && got_code == SI_USER, "handler ran (sig %d code %d)", got_sig, got_code);
    CHECK(keep == before && fp_in_handler > 1000, "FPU state survives the handler");
    /* blocked signals wait */
    sigset_t set; sigemptyset(&set); sigaddset(&set, SIGUSR1);
    got_sig = 0;
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    CHECK(got_sig == 0, "blocked signal not delivered");
    sigset_t pend; sigpending(&pend);
    CHECK(sigismember(&pend, SIGUSR1), "pending");
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    CHECK(got_sig == SIGUSR1, "delivered when unblocked");
    /* SA_RESTART: a blocking read interrupted by SIGALRM restarts */
    int p[2]; pipe(p);
    struct sigaction al = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
    sigaction(SIGALRM, &al, NULL);
    struct itimerval it = { .it_value = { 0, 50000 } };
    got_sig = 0;
    setitimer(ITIMER_REAL, &it, NULL);
    char c;
    struct pollfd pf = { .fd = p[0], .events = POLLIN };
    CHECK(poll(&pf, 1, 2000) == -1 && errno == EINTR && got_sig == SIGALRM, "poll interrupted by SIGALRM");
    /* without SA_RESTART a blocking read fails with EINTR */
    al.sa_flags = 0;
    sigaction(SIGALRM, &al, NULL);
    got_sig = 0;
    setitimer(ITIMER_REAL, &it, NULL);
    CHECK(read(p[0], &c, 1) == -1 && errno == EINTR && got_sig == SIGALRM, "read interrupted");
    /* a fault delivered to a handler, left with siglongjmp */
    struct sigaction sv = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_NODEFER };
    sigaction(SIGSEGV, &sv, NULL);
    got_sig = 0;
    if (sigsetjmp(jb, 1) == 0) { *(volatile int *)0x1234 = 1; }
    CHECK(got_sig == SIGSEGV && fp_in_handler == (double)0x1234, "SIGSEGV handler saw the address");
    /* the alternate stack */
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack };
    CHECK(sigaltstack(&ss, NULL) == 0, "sigaltstack");
    struct sigaction as = { .sa_handler = on_altstack, .sa_flags = SA_ONSTACK };
    sigaction(SIGUSR2, &as, NULL);
    got_sig = 0; got_code = 0;
    raise(SIGUSR2);
    CHECK(got_sig == SIGUSR2 && got_code == 1, "handler ran on the alternate stack");
}

static volatile sig_atomic_t term;
static void on_term(int sig) { (void)sig; term = 1; }

/* Waits in epoll_wait until SIGTERM; exits 7 after its handler ran. */
static int graceful(void) {
    struct sigaction sa = { .sa_handler = on_term };
    sigaction(SIGTERM, &sa, NULL);
    int ep = epoll_create1(0);
    printf("waiting\n");
    struct epoll_event ev;
    int n = epoll_wait(ep, &ev, 1, 20000);
    printf("epoll_wait=%d errno=%d term=%d\n", n, n < 0 ? errno : 0, term);
    return term ? 7 : 1;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "echo-server")) echo_server(atoi(argv[2]));
    else if (!strcmp(mode, "hostile")) hostile();
    else if (!strcmp(mode, "refused")) refused();
    else if (!strcmp(mode, "netlink")) netlink();
    else if (!strcmp(mode, "unix")) unix_sockets(argc > 2 ? argv[2] : "/tmp", argc > 3 && !strcmp(argv[3], "keep"));
    else if (!strcmp(mode, "signals")) signals();
    else if (!strcmp(mode, "graceful")) return graceful();
    else if (!strcmp(mode, "sigpipe")) { int p[2]; pipe(p); close(p[0]); write(p[1], "x", 1); return 3; }
    else if (!strcmp(mode, "sigpipe-ignored")) {
        signal(SIGPIPE, SIG_IGN);
        int p[2]; pipe(p); close(p[0]);
        CHECK(write(p[1], "x", 1) == -1 && errno == EPIPE, "EPIPE");
    }
    else { printf("unknown mode %s\n", mode); return 2; }
    if (failures) return 1;
    printf("ok %s\n", mode);
    return 0;
}
