/* read() into a buffer that starts below the old program break and ends in
 * a fresh brk extension: Linux fills the whole buffer. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/etc/services";
    char *top = sbrk(0);
    if (sbrk(4096) == (void *)-1) return 1;
    top = sbrk(0);
    if (sbrk(65536) == (void *)-1) return 1;
    char *buf = top - 1000; /* 1000 bytes below the old top, the rest above it */
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    ssize_t n = read(fd, buf, 8000);
    printf("read %zd\n", n);
    return 0;
}
