/* fork() while other threads allocate blocks of every kind: small, large,
 * huge (own mappings, > 2 MiB), and aligned up to 1 MiB (which also get
 * their own mappings) — so that forks land while threads hold the huge
 * blocks' lock as well as heap locks (fork.c only uses sizes up to ~1 MiB).
 *
 * Usage: fork_sizes [forks [workers]]
 *
 * Each child, forked at an arbitrary point of the workers' operations,
 * checks and frees blocks the parent allocated before the fork (small,
 * large, huge, aligned), then calls every allocation function with every
 * kind of size (malloc, calloc, realloc growing small -> large -> huge,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, reallocarray),
 * and _exit(0)s. A child still running after CHILD_SECONDS is killed and
 * fails the test (the child arms alarm() too, as a backstop).
 */
#include "common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define MIB ((size_t)1 << 20)
#define MAX_WORKERS 8
#define SLOTS 32
#define CHILD_SECONDS 10

struct block {
    uint8_t *ptr;
    size_t size;
    uint64_t seed;
};

static volatile int stop;
static struct block *exchange[16];

static size_t random_size(uint64_t *rng) {
    uint64_t r = rng_below(rng, 100);
    if (r < 60) return 2 + rng_below(rng, 1024); /* >= 2: two end bytes */
    if (r < 85) return 1024 + rng_below(rng, 256 * 1024);
    if (r < 93) return MIB + rng_below(rng, MIB); /* large */
    return 2 * MIB + rng_below(rng, 6 * MIB);      /* huge */
}

static struct block *new_block(uint64_t *rng) {
    struct block *b = malloc(sizeof *b);
    CHECK(b != NULL, "malloc(block)");
    b->size = random_size(rng);
    b->seed = rng_next(rng);
    switch (rng_below(rng, 4)) {
    case 0:
        b->ptr = malloc(b->size);
        break;
    case 1:
        b->ptr = calloc(1, b->size);
        break;
    case 2: {
        size_t align = (size_t)1 << (3 + rng_below(rng, 18)); /* 8 B .. 1 MiB */
        void *p = NULL;
        CHECK(posix_memalign(&p, align, b->size) == 0, "posix_memalign(%zu, %zu)", align, b->size);
        CHECK(is_aligned(p, align), "posix_memalign alignment");
        b->ptr = p;
        break;
    }
    default: {
        /* Grow by realloc from a small start. */
        uint8_t *p = malloc(16);
        CHECK(p != NULL, "malloc(16)");
        b->ptr = realloc(p, b->size);
        break;
    }
    }
    CHECK(b->ptr != NULL, "allocation of %zu", b->size);
    /* Only the ends and one byte per page: huge blocks stay cheap. */
    b->ptr[0] = (uint8_t)b->seed;
    b->ptr[b->size - 1] = (uint8_t)(b->seed >> 8);
    for (size_t i = 4096; i + 1 < b->size; i += 4096) b->ptr[i] = (uint8_t)(b->seed + i);
    return b;
}

static void drop_block(struct block *b, const char *what) {
    CHECK(b->ptr[0] == (uint8_t)b->seed && b->ptr[b->size - 1] == (uint8_t)(b->seed >> 8),
          "%s: block of %zu bytes corrupted", what, b->size);
    for (size_t i = 4096; i + 1 < b->size; i += 4096)
        CHECK(b->ptr[i] == (uint8_t)(b->seed + i), "%s: block corrupted at %zu", what, i);
    free(b->ptr);
    free(b);
}

static void *worker(void *arg) {
    uint64_t rng = 0x9E3779B97F4A7C15ULL * ((uintptr_t)arg + 1);
    struct block *mine[SLOTS] = {0};
    while (!stop) {
        size_t slot = rng_below(&rng, SLOTS);
        if (mine[slot] != NULL) drop_block(mine[slot], "worker");
        mine[slot] = new_block(&rng);
        if (rng_below(&rng, 4) == 0) {
            struct block *b = new_block(&rng);
            struct block *old = __atomic_exchange_n(&exchange[rng_below(&rng, 16)], b, __ATOMIC_ACQ_REL);
            if (old != NULL) drop_block(old, "exchanged");
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (mine[i] != NULL) drop_block(mine[i], "worker at exit");
    return NULL;
}

static void child(struct block **inherited, size_t n, uint64_t seed) {
    alarm(CHILD_SECONDS + 20);
    for (size_t i = 0; i < n; i++) drop_block(inherited[i], "inherited");
    uint64_t rng = seed;
    struct block *mine[16];
    for (size_t i = 0; i < 16; i++) mine[i] = new_block(&rng);
    /* Every function, every kind of size. */
    size_t sizes[] = {24, 5000, 300 * 1024, 3 * MIB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t s = sizes[i];
        void *a = malloc(s), *c = calloc(1, s), *v = valloc(s), *pv = pvalloc(s);
        void *al = aligned_alloc(1 << 20, s), *m = memalign(4096, s), *pm = NULL;
        CHECK(posix_memalign(&pm, 1 << 16, s) == 0, "child posix_memalign");
        CHECK(a && c && v && pv && al && m && pm, "child allocation of %zu", s);
        CHECK(((uint8_t *)c)[s - 1] == 0, "child calloc not zero");
        a = realloc(a, s * 2);
        CHECK(a != NULL, "child realloc");
        a = reallocarray(a, 3, s);
        CHECK(a != NULL, "child reallocarray");
        free(a), free(c), free(v), free(pv), free(al), free(m), free(pm);
    }
    for (size_t i = 0; i < 16; i++) drop_block(mine[i], "child");
    _exit(0);
}

int main(int argc, char **argv) {
    require_rulloc();
    unsigned forks = argc > 1 ? (unsigned)atoi(argv[1]) : 200;
    unsigned workers = argc > 2 ? (unsigned)atoi(argv[2]) : 3;
    CHECK(workers >= 1 && workers <= MAX_WORKERS, "1..%d workers", MAX_WORKERS);
    pthread_t threads[MAX_WORKERS];
    for (uintptr_t i = 0; i < workers; i++)
        CHECK(pthread_create(&threads[i], NULL, worker, (void *)i) == 0, "pthread_create");

    uint64_t rng = 12345;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned f = 0; f < forks; f++) {
        struct block *inherited[4];
        for (size_t i = 0; i < 4; i++) inherited[i] = new_block(&rng);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) child(inherited, 4, rng_next(&rng) | 1);
        for (size_t i = 0; i < 4; i++) drop_block(inherited[i], "parent");
        int status = 0;
        for (int waited_ms = 0;; waited_ms++) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            CHECK(r >= 0, "waitpid: %s", strerror(errno));
            if (r == pid) break;
            if (waited_ms > CHILD_SECONDS * 1000) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                FAIL("fork %u: the child hung (killed after %d s)", f, CHILD_SECONDS);
            }
            usleep(1000);
        }
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %u: child status %#x (signal %d)", f, status,
              WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    }
    stop = 1;
    for (unsigned i = 0; i < workers; i++) pthread_join(threads[i], NULL);
    for (size_t i = 0; i < 16; i++)
        if (exchange[i] != NULL) drop_block(exchange[i], "exchange at exit");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("fork_sizes: ok, %u forks with %u workers in %.2f s\n", forks, workers, secs);
    return 0;
}
