/* Spins without system calls until a signal ends it (default action). */
#include <stdio.h>

int main(void) {
    puts("spinning");
    fflush(stdout);
    volatile unsigned long n = 0;
    for (;;)
        n++;
}
