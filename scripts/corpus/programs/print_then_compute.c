/* Prints a line, computes for a while without system calls, prints again:
 * the first line should reach the reader before the computation ends. */
#include <unistd.h>

int main(void) {
    if (write(1, "first\n", 6) != 6) return 1;
    volatile unsigned long n = 0;
    for (unsigned long i = 0; i < 1500000000UL; i++)
        n++;
    if (write(1, "second\n", 7) != 7) return 1;
    return 0;
}
