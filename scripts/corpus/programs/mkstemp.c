/* Creates a temporary file with mkstemp, writes to it, renames it into
 * place: what git, gcc and sort -T do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    char name[] = "/case/tmp.XXXXXX";
    int fd = mkstemp(name);
    if (fd < 0) { perror("mkstemp"); return 1; }
    const char msg[] = "written through a temporary name\n";
    if (write(fd, msg, sizeof msg - 1) != (ssize_t)(sizeof msg - 1)) { perror("write"); return 1; }
    close(fd);
    if (rename(name, "/case/result.txt") != 0) { perror("rename"); return 1; }
    puts("ok");
    return 0;
}
