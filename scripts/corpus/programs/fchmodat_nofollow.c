/* fchmodat(AT_SYMLINK_NOFOLLOW): glibc 2.36 opens the file O_PATH and
 * changes the mode through /proc/self/fd/N. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void) {
    int fd = open("/case/f", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    close(fd);
    if (fchmodat(AT_FDCWD, "/case/f", 0600, AT_SYMLINK_NOFOLLOW) != 0) { perror("fchmodat"); return 1; }
    struct stat st;
    stat("/case/f", &st);
    printf("mode %o\n", st.st_mode & 07777);
    return 0;
}
