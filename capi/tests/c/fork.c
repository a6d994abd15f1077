/* fork() from a multi-threaded parent whose threads keep allocating.
 *
 * `workers` threads (default 2) allocate, fill, verify and free blocks (also exchanging
 * blocks through shared slots so that frees cross threads) for the whole
 * run, while the main thread forks FORKS children. Each child, forked at an
 * arbitrary point of the workers' allocations, must find a working
 * allocator: it verifies and frees a block the parent allocated before the
 * fork, allocates/frees blocks of many sizes, sometimes starts a thread that
 * allocates too, and _exit(0)s.
 *
 * Hangs fail instead of blocking: each child arms alarm(CHILD_SECONDS) as
 * soon as fork returns, and the parent polls waitpid and SIGKILLs a child
 * that is still there after CHILD_SECONDS + 5 seconds (in case it hung
 * before it could arm the alarm, e.g. inside a fork handler). The parent arms
 * a global alarm too.
 *
 * Usage: fork [forks [workers]]
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define MAX_WORKERS 8
#define WORKER_SLOTS 128
#define EXCHANGE_SLOTS 64
#define CHILD_SECONDS 10
#define PARENT_SECONDS 170

struct block {
    uint8_t *ptr;
    size_t size;
    uint64_t seed;
};

static volatile int stop;
static struct block *exchange[EXCHANGE_SLOTS];
static unsigned long worker_ops[MAX_WORKERS];
static unsigned workers_count = 2;

static size_t random_size(uint64_t *rng) {
    uint64_t r = rng_below(rng, 100);
    if (r < 80) return 1 + rng_below(rng, 512);
    if (r < 99) return 512 + rng_below(rng, 64 * 1024);
    return 64 * 1024 + rng_below(rng, 1u << 20);
}

static struct block *new_block(uint64_t *rng) {
    struct block *b = malloc(sizeof *b);
    CHECK(b != NULL, "malloc(block)");
    b->size = random_size(rng);
    b->seed = rng_next(rng);
    b->ptr = malloc(b->size);
    CHECK(b->ptr != NULL, "malloc(%zu)", b->size);
    fill_pattern(b->ptr, b->size, b->seed);
    return b;
}

static void drop_block(struct block *b, const char *what) {
    CHECK_PATTERN(b->ptr, b->size, b->seed, what);
    free(b->ptr);
    free(b);
}

static void *worker(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 0x243F6A8885A308D3ULL * (id + 1);
    struct block *mine[WORKER_SLOTS] = {0};
    while (!stop) {
        size_t slot = rng_below(&rng, WORKER_SLOTS);
        if (mine[slot] != NULL) drop_block(mine[slot], "worker");
        mine[slot] = new_block(&rng);
        if (rng_below(&rng, 4) == 0) {
            /* Swap a block with whatever another thread left in a shared
             * slot, and free that one here. */
            struct block *b = new_block(&rng);
            struct block *old = __atomic_exchange_n(&exchange[rng_below(&rng, EXCHANGE_SLOTS)], b, __ATOMIC_ACQ_REL);
            if (old != NULL) drop_block(old, "exchanged");
        }
        worker_ops[id]++;
    }
    for (size_t i = 0; i < WORKER_SLOTS; i++)
        if (mine[i] != NULL) drop_block(mine[i], "worker at end");
    return NULL;
}

static void *child_thread(void *arg) {
    uint64_t rng = (uintptr_t)arg;
    for (int i = 0; i < 200; i++) drop_block(new_block(&rng), "child thread");
    return NULL;
}

/* Everything a child does; returns only if all went well. */
static void child_work(struct block *inherited, unsigned n) {
    uint64_t rng = 0xC0FFEE + n;
    drop_block(inherited, "inherited from parent");
    struct block *blocks[32];
    for (int i = 0; i < 32; i++) blocks[i] = new_block(&rng);
    for (int i = 0; i < 32; i++) drop_block(blocks[i], "child");
    void *big = calloc(1, 2u << 20);
    CHECK(big != NULL, "child calloc(2 MiB)");
    free(big);
    if (n % 50 == 0) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)(n + 1)) == 0, "child pthread_create");
        pthread_join(t, NULL);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    require_rulloc();
    unsigned forks = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 1000;
    if (argc > 2) workers_count = (unsigned)strtoul(argv[2], NULL, 10);
    CHECK(workers_count >= 1 && workers_count <= MAX_WORKERS, "1 to %d workers", MAX_WORKERS);
    alarm(PARENT_SECONDS);

    pthread_t workers[MAX_WORKERS];
    for (uintptr_t i = 0; i < workers_count; i++)
        CHECK(pthread_create(&workers[i], NULL, worker, (void *)i) == 0, "pthread_create");

    uint64_t rng = 42;
    unsigned failures = 0;
    double slowest = 0;
    for (unsigned n = 0; n < forks; n++) {
        struct block *inherited = new_block(&rng);
        fflush(stdout);
        double start = now();
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            alarm(CHILD_SECONDS);
            child_work(inherited, n);
            _exit(0);
        }
        drop_block(inherited, "parent copy of inherited");

        int status = 0;
        for (;;) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            CHECK(r >= 0, "waitpid: %s", strerror(errno));
            if (r == pid) break;
            if (now() - start > CHILD_SECONDS + 5) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                fprintf(stderr, "child %u (pid %d) hung for %d s before it could arm its alarm; killed\n", n, pid,
                        CHILD_SECONDS + 5);
                failures++;
                status = 0;
                goto next;
            }
            struct timespec pause = {0, 50 * 1000};
            nanosleep(&pause, NULL);
        }
        if (WIFSIGNALED(status)) {
            fprintf(stderr, "child %u (pid %d) killed by signal %d%s\n", n, pid, WTERMSIG(status),
                    WTERMSIG(status) == SIGALRM ? " (SIGALRM: it hung)" : "");
            failures++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %u (pid %d) exited with status %d\n", n, pid, WEXITSTATUS(status));
            failures++;
        }
    next:
        if (now() - start > slowest) slowest = now() - start;
        if (failures >= 5) break;
    }

    stop = 1;
    unsigned long ops = 0;
    for (unsigned i = 0; i < workers_count; i++) {
        pthread_join(workers[i], NULL);
        ops += worker_ops[i];
    }
    for (size_t i = 0; i < EXCHANGE_SLOTS; i++)
        if (exchange[i] != NULL) drop_block(exchange[i], "exchange at end");

    CHECK(failures == 0, "%u children failed", failures);
    CHECK(ops > 0, "the workers did not run");
    printf("fork: ok, %u children, %lu worker operations, slowest child %.3f s\n", forks, ops, slowest);
    return 0;
}
