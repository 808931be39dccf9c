/* A SIGALRM ends a busy loop that makes no system call (openssl speed). */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static void on_alarm(int s) { (void)s; done = 1; }

int main(void) {
    signal(SIGALRM, on_alarm);
    alarm(1);
    volatile unsigned long n = 0;
    while (!done)
        n++;
    puts("alarm ended the loop");
    return 0;
}
