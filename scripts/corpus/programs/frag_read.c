/* One read() of 1 MiB from a regular file into a buffer whose pages were
 * first touched alternately with another buffer's (its frames are not
 * contiguous): Linux returns the whole MiB. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t n = 1 << 20;
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 1;
    for (size_t i = 0; i < n; i += 4096) {
        a[i] = 1;
        b[i] = 1;
    }
    int fd = open(argc > 1 ? argv[1] : "big.json", O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    printf("read %zd\n", read(fd, a, n));
    return 0;
}
