/* What programs expect of /proc: their own executable, maps, descriptors,
 * and the system's memory and CPU count. Prints facts that are the same in
 * every run. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    (void)argc;
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("exe matches argv[0]: %s\n", n > 0 && !strcmp(buf, argv[0]) ? "yes" : "no");
    FILE *f = fopen("/proc/self/maps", "r");
    int lines = 0;
    while (f && fgets(buf, sizeof buf, f))
        lines++;
    printf("maps has lines: %s\n", lines > 3 ? "yes" : "no");
    f = fopen("/proc/meminfo", "r");
    printf("meminfo starts: %s\n", f && fgets(buf, sizeof buf, f) && !strncmp(buf, "MemTotal:", 9) ? "MemTotal" : "?");
    DIR *d = opendir("/proc/self/fd");
    int fds = 0;
    while (d && readdir(d))
        fds++;
    printf("self/fd readable: %s\n", fds > 2 ? "yes" : "no");
    f = fopen("/proc/self/status", "r");
    int found = 0;
    while (f && fgets(buf, sizeof buf, f))
        found |= !strncmp(buf, "Name:", 5);
    printf("status has Name: %s\n", found ? "yes" : "no");
    return 0;
}
