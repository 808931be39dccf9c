/* fchdir into a directory, then open a file by a relative name (what
 * programs that walk trees with fchdir do). */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int d = open(argc > 1 ? argv[1] : ".", O_RDONLY | O_DIRECTORY);
    if (d < 0 || fchdir(d) != 0) { perror("fchdir"); return 1; }
    char buf[256];
    int fd = open(argc > 2 ? argv[2] : "f", O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("read %zd: %s", n, buf);
    if (getcwd(buf, sizeof buf))
        printf("cwd %s\n", buf);
    return 0;
}
