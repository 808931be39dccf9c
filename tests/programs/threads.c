/* POSIX threads under dmvx: every result it prints is the same however the
 * threads interleave, so native runs and runs in any number of variants
 * print the same. Build: gcc -O1 -Wall -static -pthread. Modes:
 *   all        mutexes, a producer/consumer queue on condition variables,
 *              barriers, rwlocks, thread-local storage, detached threads,
 *              cancellation (in a condition wait, in a sleep, at
 *              pthread_testcancel), signals to threads (pthread_kill; a
 *              process signal routed past the main thread's mask),
 *              affinity, gettid, timed waits
 *   spin       two threads hand a token back and forth by spinning on an
 *              atomic, with no system call in the loop (needs preemption)
 *   exit       the main thread ends with pthread_exit; the workers finish
 *   divergent  a worker thread writes different bytes in one variant (told
 *              apart by where its stack lies: each variant has its own layout)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                                  \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #c);       \
            exit(2);                                                              \
        }                                                                         \
    } while (0)

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

/* Mutexes: counters incremented under a lock. */
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *count_worker(void *arg) {
    long n = (long)arg;
    for (long i = 0; i < n; i++) {
        pthread_mutex_lock(&count_lock);
        counter++;
        if (i % 1000 == 0) sched_yield();
        pthread_mutex_unlock(&count_lock);
    }
    return NULL;
}

static void mutexes(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, count_worker, (void *)20000L) == 0);
    for (int i = 0; i < 4; i++) CHECK(pthread_join(t[i], NULL) == 0);
    printf("mutex: counter %ld\n", counter);
}

/* A bounded queue: two producers, two consumers. */
#define QCAP 8
static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    int buf[QCAP], head, len, done;
} q = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, { 0 }, 0, 0, 0 };

static void *producer(void *arg) {
    int base = (int)(long)arg;
    for (int i = 1; i <= 500; i++) {
        pthread_mutex_lock(&q.lock);
        while (q.len == QCAP) pthread_cond_wait(&q.not_full, &q.lock);
        q.buf[(q.head + q.len++) % QCAP] = base + i;
        pthread_cond_signal(&q.not_empty);
        pthread_mutex_unlock(&q.lock);
    }
    return NULL;
}

static void *consumer(void *arg) {
    long sum = 0, n = 0;
    for (;;) {
        pthread_mutex_lock(&q.lock);
        while (q.len == 0 && !q.done) pthread_cond_wait(&q.not_empty, &q.lock);
        if (q.len == 0 && q.done) {
            pthread_mutex_unlock(&q.lock);
            break;
        }
        sum += q.buf[q.head];
        q.head = (q.head + 1) % QCAP;
        q.len--;
        n++;
        pthread_cond_signal(&q.not_full);
        pthread_mutex_unlock(&q.lock);
    }
    long *out = arg;
    out[0] = sum;
    out[1] = n;
    return NULL;
}

static void queue(void) {
    pthread_t p[2], c[2];
    long res[2][2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&c[i], NULL, consumer, res[i]) == 0);
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&p[i], NULL, producer, (void *)(long)(i * 1000)) == 0);
    for (int i = 0; i < 2; i++) pthread_join(p[i], NULL);
    pthread_mutex_lock(&q.lock);
    q.done = 1;
    pthread_cond_broadcast(&q.not_empty);
    pthread_mutex_unlock(&q.lock);
    for (int i = 0; i < 2; i++) pthread_join(c[i], NULL);
    printf("queue: %ld items, sum %ld\n", res[0][1] + res[1][1], res[0][0] + res[1][0]);
}

/* Barriers: every thread sees every other's round before the next. */
static pthread_barrier_t bar;
static int rounds[4][3];

static void *barrier_worker(void *arg) {
    int me = (int)(long)arg, ok = 1;
    for (int r = 0; r < 3; r++) {
        rounds[me][r] = 1;
        pthread_barrier_wait(&bar);
        for (int i = 0; i < 4; i++) ok &= rounds[i][r];
        pthread_barrier_wait(&bar);
    }
    return (void *)(long)ok;
}

static void barriers(void) {
    pthread_t t[4];
    void *ok;
    int all = 1;
    pthread_barrier_init(&bar, NULL, 4);
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, barrier_worker, (void *)(long)i);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &ok);
        all &= (int)(long)ok;
    }
    pthread_barrier_destroy(&bar);
    printf("barrier: 3 rounds, %s\n", all ? "in step" : "OUT OF STEP");
}

/* Read-write locks: writers add, readers check the invariant a == b. */
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static long rw_a, rw_b;

static void *rw_writer(void *arg) {
    for (int i = 0; i < 2000; i++) {
        pthread_rwlock_wrlock(&rw);
        rw_a++;
        if (i % 500 == 0) sched_yield();
        rw_b++;
        pthread_rwlock_unlock(&rw);
    }
    return arg;
}

static void *rw_reader(void *arg) {
    long bad = 0;
    for (int i = 0; i < 2000; i++) {
        pthread_rwlock_rdlock(&rw);
        bad += rw_a != rw_b;
        pthread_rwlock_unlock(&rw);
    }
    return (void *)bad;
}

static void rwlocks(void) {
    pthread_t t[4];
    void *bad;
    long total = 0;
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, i < 2 ? rw_writer : rw_reader, NULL);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &bad);
        if (i >= 2) total += (long)bad;
    }
    printf("rwlock: a %ld b %ld, %ld torn reads\n", rw_a, rw_b, total);
}

/* Thread-local storage. */
static __thread int tls_value = 7;

static void *tls_worker(void *arg) {
    int before = tls_value;
    tls_value = (int)(long)arg;
    sched_yield();
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
    return (void *)(long)(before * 1000 + tls_value);
}

static void tls(void) {
    pthread_t t[3];
    void *r;
    tls_value = 99;
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, tls_worker, (void *)(long)(i + 1));
    printf("tls:");
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], &r);
        printf(" %ld", (long)r);
    }
    printf(", main %d\n", tls_value);
}

/* Detached threads tell the main thread through a semaphore. */
static sem_t detached_done;

static void *detached_worker(void *arg) {
    struct timespec ts = { 0, 2000000 };
    nanosleep(&ts, NULL);
    sem_post(&detached_done);
    return arg;
}

static void detached(void) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    sem_init(&detached_done, 0, 0);
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, &a, detached_worker, NULL) == 0);
    }
    for (int i = 0; i < 3; i++) sem_wait(&detached_done);
    printf("detached: 3 done\n");
}

/* Cancellation. */
static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cancel_cond = PTHREAD_COND_INITIALIZER;
static int cleanups;
static sem_t started;

static void cleanup(void *arg) {
    (void)arg;
    cleanups++;
}

static void *cancel_in_cond(void *arg) {
    pthread_mutex_lock(&cancel_lock);
    pthread_cleanup_push((void (*)(void *))pthread_mutex_unlock, &cancel_lock);
    pthread_cleanup_push(cleanup, NULL);
    sem_post(&started);
    for (;;) pthread_cond_wait(&cancel_cond, &cancel_lock);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    return arg;
}

static void *cancel_in_sleep(void *arg) {
    pthread_cleanup_push(cleanup, NULL);
    sem_post(&started);
    sleep(100);
    pthread_cleanup_pop(0);
    return arg;
}

static volatile int spin_forever = 1;

static void *cancel_at_test(void *arg) {
    pthread_cleanup_push(cleanup, NULL);
    sem_post(&started);
    while (spin_forever) {
        pthread_testcancel();
        sched_yield();
    }
    pthread_cleanup_pop(0);
    return arg;
}

static void cancellation(void) {
    void *(*fns[3])(void *) = { cancel_in_cond, cancel_in_sleep, cancel_at_test };
    int canceled = 0;
    sem_init(&started, 0, 0);
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        void *r;
        pthread_create(&t, NULL, fns[i], NULL);
        sem_wait(&started);
        CHECK(pthread_cancel(t) == 0);
        pthread_join(t, &r);
        canceled += r == PTHREAD_CANCELED;
    }
    printf("cancel: %d of 3 canceled, %d cleanups\n", canceled, cleanups);
}

/* Signals to threads. */
static volatile pid_t got_usr1, got_usr2;
static sem_t sig_sem;

static void on_usr1(int s) {
    (void)s;
    got_usr1 = gettid_();
    sem_post(&sig_sem);
}

static void on_usr2(int s) {
    (void)s;
    got_usr2 = gettid_();
    sem_post(&sig_sem);
}

static volatile pid_t worker_tid;
static sem_t worker_ready, worker_go;

static void *signal_worker(void *arg) {
    worker_tid = gettid_();
    sem_post(&worker_ready);
    /* Waits (in a futex) until the main thread is done signalling. */
    while (sem_wait(&worker_go) != 0 && errno == EINTR) {
    }
    return arg;
}

static void signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    sem_init(&sig_sem, 0, 0);
    sem_init(&worker_ready, 0, 0);
    sem_init(&worker_go, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, signal_worker, NULL);
    sem_wait(&worker_ready);
    CHECK(pthread_kill(t, SIGUSR1) == 0);
    while (sem_wait(&sig_sem) != 0) {
    }
    /* A process signal the main thread blocks goes to the worker. */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    kill(getpid(), SIGUSR2);
    while (sem_wait(&sig_sem) != 0) {
    }
    pthread_sigmask(SIG_UNBLOCK, &m, NULL);
    sem_post(&worker_go);
    pthread_join(t, NULL);
    printf("signals: pthread_kill %s, routed past the mask %s\n", got_usr1 == worker_tid ? "in the target" : "ELSEWHERE",
           got_usr2 == worker_tid ? "to the worker" : "ELSEWHERE");
}

/* Identity, affinity, timed waits. */
static void *ident_worker(void *arg) {
    pid_t *out = arg;
    out[0] = gettid_();
    out[1] = getpid();
    return NULL;
}

static void identity(void) {
    pid_t ids[2];
    pthread_t t;
    pthread_create(&t, NULL, ident_worker, ids);
    pthread_join(t, NULL);
    printf("gettid: main %s, worker %s, same pid %s\n", gettid_() == getpid() ? "is the pid" : "DIFFERS",
           ids[0] != getpid() && ids[0] > 0 ? "its own" : "WRONG", ids[1] == getpid() ? "yes" : "NO");
    cpu_set_t s;
    CPU_ZERO(&s);
    CHECK(sched_getaffinity(0, sizeof s, &s) == 0);
    int n = CPU_COUNT(&s);
    CPU_ZERO(&s);
    CPU_SET(0, &s);
    int set = sched_setaffinity(0, sizeof s, &s);
    CPU_ZERO(&s);
    sched_getaffinity(0, sizeof s, &s);
    printf("affinity: %s, set to cpu 0 %s\n", n >= 1 ? "some cpus" : "NONE", set == 0 && CPU_ISSET(0, &s) ? "ok" : "FAILED");
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 20000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&m);
    int r = pthread_cond_timedwait(&c, &m, &until);
    pthread_mutex_unlock(&m);
    printf("timedwait: %s\n", r == ETIMEDOUT ? "timed out" : "WRONG");
}

/* spin: a token passed by spinning, no system calls in the loops. */
static volatile int token;

static void *spinner(void *arg) {
    int me = (int)(long)arg;
    for (int i = 0; i < 5; i++) {
        while (__atomic_load_n(&token, __ATOMIC_ACQUIRE) != me) {
        }
        __atomic_store_n(&token, 1 - me, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void spin(void) {
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, spinner, (void *)(long)i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("spin: token passed 10 times\n");
}

/* exit: the main thread leaves first. */
static void *late_worker(void *arg) {
    struct timespec ts = { 0, 5000000 * (long)arg };
    nanosleep(&ts, NULL);
    printf("late worker %ld done\n", (long)arg);
    fflush(stdout);
    return NULL;
}

/* divergent: a worker writes where the main thread's stack lies (arg);
 * variants differ (thread stacks are data, the same in every variant). */
static void *divergent_worker(void *arg) {
    char line[64];
    int n = snprintf(line, sizeof line, "worker says %lx\n", (unsigned long)((uintptr_t)arg >> 12));
    pthread_mutex_lock(&count_lock);
    write(1, line, n);
    pthread_mutex_unlock(&count_lock);
    return arg;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(mode, "all")) {
        mutexes();
        queue();
        barriers();
        rwlocks();
        tls();
        detached();
        cancellation();
        signals();
        identity();
        printf("all done\n");
        return 0;
    }
    if (!strcmp(mode, "spin")) {
        spin();
        return 0;
    }
    if (!strcmp(mode, "exit")) {
        pthread_t t[3];
        for (long i = 0; i < 3; i++) pthread_create(&t[i], NULL, late_worker, (void *)(i + 1));
        printf("main leaves\n");
        fflush(stdout);
        pthread_exit(NULL);
    }
    if (!strcmp(mode, "divergent")) {
        printf("ready\n");
        pthread_t t;
        int on_main_stack;
        pthread_create(&t, NULL, divergent_worker, &on_main_stack);
        pthread_join(t, NULL);
        printf("joined\n");
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
