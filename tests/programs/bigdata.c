/* A program whose initialised data (12 MiB, loaded eagerly) does not fit
 * small guest memory. Touches all of it. */
static char data[12 << 20] = {1};
int main(void) {
    int sum = 0;
    for (unsigned long i = 0; i < sizeof data; i += 4096) sum += data[i];
    return sum - 1;
}
