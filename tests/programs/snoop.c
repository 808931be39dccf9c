/* A guest that hunts for the cluster's secrets as a hostile program would:
 * every file under each DIR given (to a depth of 4), and every process's
 * command line in /proc, whose `--cluster PATH` (or `--private-key PATH`)
 * it then tries to read if PATH lies under a DIR (other runs on the same
 * machine are not this test's business). A file that holds a cluster configuration or a
 * key is reported as "FOUND path: what". The last line is a summary:
 *   scanned N files in M directories; proc: P processes, C command lines read; found K
 * With --sleep it then sleeps for a minute (for a test to kill the run).
 * Usage: snoop [--sleep] DIR... */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static long files, dirs, procs, cmdlines, found;
static char **roots;
static int nroots;

static int under_a_root(const char *path) {
    for (int i = 0; i < nroots; i++)
        if (!strncmp(path, roots[i], strlen(roots[i]))) return 1;
    return 0;
}

static const char *const MARKS[] = { "[cluster]", "key = \"", "key_file", "public_key", "private_key",
                                     "dmvx private key" };

/* Reports `path` if its first 64 KiB hold a mark of the cluster's files. */
static void inspect(const char *path) {
    static char buf[65536];
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    files++;
    if (n <= 0) return;
    buf[n] = 0;
    for (size_t i = 0; i < sizeof MARKS / sizeof MARKS[0]; i++) {
        if (memmem(buf, n, MARKS[i], strlen(MARKS[i]))) {
            printf("FOUND %s: %s\n", path, MARKS[i]);
            found++;
            return;
        }
    }
}

static void walk(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    dirs++;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode) && depth < 4) walk(path, depth + 1);
        else if (S_ISREG(st.st_mode)) inspect(path);
    }
    closedir(d);
}

/* Reads the files that processes' command lines name as cluster files or keys. */
static void scan_proc(void) {
    DIR *d = opendir("/proc");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        procs++;
        char path[300];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        static char cmd[65536];
        ssize_t n = read(fd, cmd, sizeof cmd - 1);
        close(fd);
        if (n <= 0) continue;
        cmdlines++;
        cmd[n] = 0;
        for (char *arg = cmd; arg < cmd + n; arg += strlen(arg) + 1) {
            if (!strcmp(arg, "--cluster") || !strcmp(arg, "--private-key")) {
                char *next = arg + strlen(arg) + 1;
                if (next < cmd + n && under_a_root(next)) inspect(next);
            }
        }
    }
    closedir(d);
}

int main(int argc, char **argv) {
    int sleep_after = 0;
    roots = calloc(argc, sizeof *roots);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sleep")) sleep_after = 1;
        else roots[nroots++] = argv[i];
    }
    for (int i = 0; i < nroots; i++) walk(roots[i], 0);
    scan_proc();
    printf("scanned %ld files in %ld directories; proc: %ld processes, %ld command lines read; found %ld\n", files,
           dirs, procs, cmdlines, found);
    fflush(stdout);
    if (sleep_after) sleep(60);
    return 0;
}
