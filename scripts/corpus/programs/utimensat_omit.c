/* Sets a file's mtime and leaves its atime alone with UTIME_OMIT, with
 * tv_sec of the omitted entry left as whatever the stack held (as tar x
 * does): Linux ignores tv_sec when tv_nsec is UTIME_OMIT. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    int fd = open("/case/file", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    close(fd);
    struct timespec ts[2];
    ts[0].tv_sec = (time_t)(uintptr_t)&ts; /* an address: differs per variant layout */
    ts[0].tv_nsec = UTIME_OMIT;
    ts[1].tv_sec = 1000000000;
    ts[1].tv_nsec = 0;
    if (utimensat(AT_FDCWD, "/case/file", ts, 0) != 0) { perror("utimensat"); return 1; }
    struct stat st;
    if (stat("/case/file", &st) != 0) { perror("stat"); return 1; }
    printf("mtime %ld\n", (long)st.st_mtime);
    return 0;
}
