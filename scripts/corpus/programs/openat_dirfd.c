/* Opens a subdirectory relative to a directory descriptor with the flags
 * fts (find, du) and gzip use, then lists it: a read-only operation. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    const char *sub = argc > 2 ? argv[2] : "d0";
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) { perror("open dir"); return 1; }
    int fd = openat(dfd, sub, O_RDONLY | O_NONBLOCK | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) { perror("openat"); return 1; }
    DIR *d = fdopendir(fd);
    if (!d) { perror("fdopendir"); return 1; }
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        names[n++] = strdup(e->d_name);
    qsort(names, n, sizeof *names, cmp);
    for (int i = 0; i < n; i++)
        printf("%s\n", names[i]);
    return 0;
}
