/* Reads the time stamp counter, rdrand or cpuid (argv[1]) without a system
 * call and lets the value reach a write to /dev/null, as openssl's DRBG
 * mixes the TSC into its seed: stdout stays deterministic. */
#include <cpuid.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <x86intrin.h>

__attribute__((target("rdrnd"))) static uint64_t rdrand(void) {
    unsigned long long v = 0;
    for (int i = 0; i < 100 && !_rdrand64_step(&v); i++)
        ;
    return v;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "rdtsc";
    uint64_t v = 0;
    if (!strcmp(what, "rdtsc")) {
        v = __rdtsc();
    } else if (!strcmp(what, "rdrand")) {
        unsigned a, b, c, d;
        __cpuid(1, a, b, c, d);
        if (!(c & (1u << 30))) { puts("no rdrand"); return 0; }
        v = rdrand();
    } else {
        unsigned a, b, c, d;
        __cpuid(0, a, b, c, d);
        v = ((uint64_t)b << 32) ^ c ^ d;
    }
    int fd = open("/dev/null", O_WRONLY);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%llx\n", (unsigned long long)v);
    if (write(fd, buf, n) != n) return 1;
    puts("ok");
    return 0;
}
