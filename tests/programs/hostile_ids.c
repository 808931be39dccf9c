/* A hostile program against the host's identity: it asks for set-id files,
 * host ownership and device nodes in a writable root, and drops privileges
 * as servers do. Every result goes to stdout as "name=value" lines; the
 * test checks the host afterwards. Modes:
 *   files DIR   set-id modes by open/chmod/fchmod/fchmodat, chown/fchown/
 *               lchown/fchownat to other users, mknod of devices, in DIR
 *   drop DIR    root inside drops to nobody as servers do; getting root
 *               back, and chown of DIR/mine to another user, are refused */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char path[512];

static const char *in(const char *dir, const char *name) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void result(const char *what, int r) {
    printf("%s=%s\n", what, r == 0 ? "ok" : strerror(errno));
}

static void show(const char *dir, const char *name) {
    struct stat st;
    if (stat(in(dir, name), &st)) {
        printf("stat %s=%s\n", name, strerror(errno));
        return;
    }
    printf("stat %s=%o %u:%u\n", name, st.st_mode & 07777, st.st_uid, st.st_gid);
}

static int files(const char *dir) {
    umask(0);
    int fd = open(in(dir, "created-suid"), O_CREAT | O_WRONLY | O_EXCL, 04755);
    result("open 04755", fd < 0 ? -1 : 0);
    close(fd);
    fd = open(in(dir, "chmod-suid"), O_CREAT | O_WRONLY, 0755);
    close(fd);
    result("chmod 06755", chmod(in(dir, "chmod-suid"), 06755));
    fd = open(in(dir, "fchmod-suid"), O_CREAT | O_RDWR, 0755);
    result("fchmod 04777", fchmod(fd, 04777));
    close(fd);
    fd = open(in(dir, "fchmodat-suid"), O_CREAT | O_RDWR, 0755);
    close(fd);
    result("fchmodat 02755", fchmodat(AT_FDCWD, in(dir, "fchmodat-suid"), 02755, 0));
    fd = open(in(dir, "chowned"), O_CREAT | O_RDWR, 0644);
    close(fd);
    result("chown 1234:1234", chown(in(dir, "chowned"), 1234, 1234));
    fd = open(in(dir, "fchowned"), O_CREAT | O_RDWR, 0644);
    result("fchown 0:4321", fchown(fd, 0, 4321));
    result("fchownat empty path 77:77", fchownat(fd, "", 77, 77, AT_EMPTY_PATH));
    close(fd);
    symlink("chowned", in(dir, "link"));
    result("lchown 99:99", lchown(in(dir, "link"), 99, 99));
    result("mknod char 1:1", mknod(in(dir, "mem"), S_IFCHR | 0666, makedev(1, 1)));
    result("mknod block 8:0", mknodat(AT_FDCWD, in(dir, "disk"), S_IFBLK | 0666, makedev(8, 0)));
    result("mknod fifo", mknod(in(dir, "fifo"), S_IFIFO | 04666, 0));
    /* The program sees what it set. */
    show(dir, "created-suid");
    show(dir, "chmod-suid");
    show(dir, "fchmod-suid");
    show(dir, "fchmodat-suid");
    show(dir, "chowned");
    show(dir, "fchowned");
    show(dir, "fifo");
    /* chown clears set-user-id, as on Linux. */
    result("chown suid file", chown(in(dir, "chmod-suid"), 5, 5));
    show(dir, "chmod-suid");
    return 0;
}

/* The effective capabilities' low word, or -1. */
static long caps(void) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d)) return -1;
    return d[0].effective;
}

static int drop(const char *dir) {
    printf("start uid=%d euid=%d\n", getuid(), geteuid());
    if (geteuid() != 0) {
        printf("not root inside\n");
        return 1;
    }
    close(open(in(dir, "control"), O_CREAT | O_RDWR, 0644));
    printf("caps before=%lx\n", caps());
    gid_t g = 65534;
    result("setgroups", setgroups(1, &g));
    result("setgid 65534", setgid(65534));
    result("setuid 65534", setuid(65534));
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    printf("resuid=%u,%u,%u gid=%u\n", r, e, s, getgid());
    printf("caps after=%lx\n", caps());
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2] = { { 1, 1, 0 }, { 0, 0, 0 } };
    result("capset CAP_CHOWN back", syscall(SYS_capset, &h, d));
    result("setuid 0 again", setuid(0));
    result("setresuid 0", setresuid(0, 0, 0));
    result("setgroups again", setgroups(1, &g));
    int fd = open(in(dir, "mine"), O_CREAT | O_RDWR, 0644);
    result("chown own file to nobody", fchown(fd, 65534, 65534));
    result("chown as nobody", chown(in(dir, "mine"), 0, 0));
    close(fd);
    show(dir, "mine");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "files") && argc > 2) return files(argv[2]);
    if (!strcmp(mode, "drop") && argc > 2) return drop(argv[2]);
    fprintf(stderr, "usage: hostile_ids files DIR | drop DIR\n");
    return 2;
}
