/* A library for LD_PRELOAD: ld.so maps it like any other shared object. */
#include <unistd.h>

__attribute__((constructor)) static void hello(void) {
    static const char msg[] = "preload constructor ran\n";
    if (write(1, msg, sizeof msg - 1) < 0)
        _exit(1);
}
