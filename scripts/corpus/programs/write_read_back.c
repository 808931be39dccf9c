/* Writes a new file, closes it, opens it again read-only and reads it back:
 * the file did not exist before the run. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/case/new.txt";
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("create"); return 1; }
    const char msg[] = "written during the run\n";
    if (write(fd, msg, strlen(msg)) != (ssize_t)strlen(msg)) { perror("write"); return 1; }
    close(fd);
    char buf[64] = {0};
    fd = open(path, O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    printf("read back %zd: %s", n, buf);
    return 0;
}
