/* Prints where its parts were put, for the layout-entropy benchmark
 * (scripts/bench-layout.py): program base, interpreter base, a fresh
 * anonymous mapping, a stack variable, the heap's start. Built PIE and
 * dynamically linked. */
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

extern const char __ehdr_start;

int main(void) {
    int local;
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("program=%p interpreter=%p mmap=%p stack=%p heap=%p\n", (const void *)&__ehdr_start,
           (void *)getauxval(AT_BASE), m, (void *)&local, sbrk(0));
    return 0;
}
