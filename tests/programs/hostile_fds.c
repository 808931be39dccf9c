/* A hostile program against the host files behind its inherited
 * descriptors (stdin here: the test gives it a host file outside the
 * root) and against stdout: each attack's result goes to stdout last, so an
 * ftruncate of stdout that worked would show. Mode:
 *   attack DIR   DIR is a directory of the root to link into */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static char out[4096];
static size_t used;

static void result(const char *what, int r) {
    used += snprintf(out + used, sizeof out - used, "%s=%s\n", what, r == 0 ? "ok" : strerror(errno));
}

int main(int argc, char **argv) {
    if (argc < 3 || strcmp(argv[1], "attack")) {
        fprintf(stderr, "usage: hostile_fds attack DIR\n");
        return 2;
    }
    char link[512];
    snprintf(link, sizeof link, "%s/stolen", argv[2]);
    for (int fd = 0; fd < 2; fd++) {
        char name[64];
#define TRY(what, call) do { snprintf(name, sizeof name, "fd%d %s", fd, what); result(name, call); } while (0)
        TRY("fchmod", fchmod(fd, 04777));
        TRY("fchown", fchown(fd, 1234, 1234));
        TRY("fchownat", fchownat(fd, "", 1234, 1234, AT_EMPTY_PATH));
        TRY("futimens", futimens(fd, NULL));
        TRY("ftruncate", ftruncate(fd, 0));
        TRY("fallocate", fallocate(fd, 0, 0, 1 << 20));
        TRY("flock", flock(fd, LOCK_EX | LOCK_NB));
        struct flock fl = { .l_type = fd ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET };
        TRY("fcntl lock", fcntl(fd, F_SETLK, &fl));
        TRY("linkat", linkat(fd, "", AT_FDCWD, link, AT_EMPTY_PATH));
        struct termios t = {0};
        TRY("tcsetattr", ioctl(fd, TCSETS, &t));
    }
    struct stat st;
    result("fstat stdin", fstat(0, &st));
    fputs(out, stdout);
    return 0;
}
