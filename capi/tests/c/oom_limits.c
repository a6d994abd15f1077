/* Out of memory under setrlimit(RLIMIT_AS) at a given headroom, through
 * every entry point of the C API.
 *
 * Usage: oom_limits HEADROOM_MIB
 *
 * The program caps its address space at what it uses now plus the headroom
 * (0 MiB: not one more segment; 256 MiB: hundreds of 1 MiB blocks), then
 * exhausts it with malloc (1 MiB first, then in turn with 64 KiB, 64 B), calloc (24 B, 200 KiB),
 * posix_memalign (64 B aligned to 4 KiB) and aligned_alloc (4 KiB aligned to
 * 64 KiB), and checks:
 *  - each exhausting loop ends with NULL and errno == ENOMEM (no crash);
 *  - then every function fails cleanly for what cannot fit: malloc small,
 *    large and huge, calloc, aligned_alloc, memalign, posix_memalign (returns
 *    ENOMEM, *memptr untouched), valloc, pvalloc, realloc growing a small, a
 *    large and a huge block, reallocarray — and every old block is intact;
 *  - a thread created before the limit, whose first allocation comes now,
 *    gets NULL/ENOMEM or a valid block;
 *  - after everything is freed, allocation works again: small blocks always,
 *    and from 16 MiB of headroom on (below it, a new 4 MiB segment may need
 *    up to 8 MiB of address space while it is aligned) 1 MiB blocks, a grown
 *    realloc, the thread, and at least half as many 1 MiB blocks as the first
 *    time.
 * Blocks are chained through their first word: the bookkeeping needs no
 * memory of its own.
 */
#include "common.h"

#include <pthread.h>
#include <sys/resource.h>

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)
#define ROOMY (16 * MIB)

enum how { MALLOC, CALLOC, POSIX_MEMALIGN, ALIGNED_ALLOC };

static void *alloc(enum how how, size_t size, size_t align) {
    switch (how) {
    case MALLOC:
        return malloc(size);
    case CALLOC:
        return calloc(1, size);
    case POSIX_MEMALIGN: {
        void *sentinel = (void *)0x99, *p = sentinel;
        int rc = posix_memalign(&p, align, size);
        if (rc != 0) {
            CHECK(rc == ENOMEM && p == sentinel, "posix_memalign(%zu, %zu) = %d", align, size, rc);
            errno = ENOMEM; /* glibc sets it too */
            return NULL;
        }
        return p;
    }
    case ALIGNED_ALLOC:
        return aligned_alloc(align, size);
    }
    return NULL;
}

/* One way to allocate, for the exhausting loop. */
struct kind {
    enum how how;
    size_t size, align;
    const char *what;
    size_t count;
    int done;
};

/* Allocates round-robin with every kind until each has failed (so each gets
 * a share of the memory), chaining the blocks onto *list. */
static void exhaust_all(void **list, struct kind *kinds, size_t n) {
    for (size_t left = n, round = 0; left > 0; round++) {
        CHECK(round < ((size_t)1 << 28), "allocation never failed under RLIMIT_AS");
        for (size_t i = 0; i < n; i++) {
            struct kind *k = &kinds[i];
            if (k->done) continue;
            errno = 0;
            void **p = alloc(k->how, k->size, k->align);
            if (p == NULL) {
                CHECK(errno == ENOMEM, "%s(%zu) failed with errno %d, want ENOMEM", k->what, k->size, errno);
                k->done = 1;
                left--;
                continue;
            }
            CHECK(is_aligned(p, k->align), "%s(%zu) = %p, not aligned to %zu", k->what, k->size, (void *)p, k->align);
            if (k->how == CALLOC) CHECK(((uint8_t *)p)[k->size - 1] == 0, "calloc memory not zero");
            ((uint8_t *)p)[k->size - 1] = 1;
            *p = *list;
            *list = p;
            k->count++;
        }
    }
}

/* Allocates 1 MiB blocks until failure; returns the count. */
static size_t exhaust_mib(void **list) {
    struct kind k = {MALLOC, MIB, 16, "malloc", 0, 0};
    exhaust_all(list, &k, 1);
    return k.count;
}

static void release(void **list) {
    while (*list != NULL) {
        void **p = *list;
        *list = *p;
        free(p);
    }
}

static size_t address_space_in_use(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f != NULL, "open /proc/self/statm");
    unsigned long pages = 0;
    CHECK(fscanf(f, "%lu", &pages) == 1, "read /proc/self/statm");
    fclose(f);
    return pages * (size_t)sysconf(_SC_PAGESIZE);
}

#define EXPECT_ENOMEM(expr)                                                                             \
    do {                                                                                               \
        errno = 0;                                                                                     \
        void *r_ = (expr);                                                                             \
        CHECK(r_ == NULL && errno == ENOMEM, "%s = %p, errno %d: want NULL/ENOMEM", #expr, r_, errno); \
    } while (0)

/* The late thread: waits, allocates under OOM, waits, allocates again. */
static volatile int step;
static volatile int thread_under_oom; /* 1 NULL/ENOMEM, 2 valid block, -1 wrong */
static volatile int thread_after;     /* 1 ok, -1 failed */

static void wait_step(int s) {
    while (__atomic_load_n(&step, __ATOMIC_ACQUIRE) < s) sched_yield();
}

static void *late_thread(void *arg) {
    (void)arg;
    wait_step(1);
    errno = 0;
    void *p = malloc(48);
    if (p == NULL) {
        thread_under_oom = errno == ENOMEM ? 1 : -1;
    } else {
        thread_under_oom = is_aligned(p, 16) ? 2 : -1;
        memset(p, 1, 48);
        free(p);
    }
    __atomic_store_n(&step, 2, __ATOMIC_RELEASE);
    wait_step(3);
    int ok = 1;
    size_t sizes[] = {48, 5000, 300 * KIB};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *q = malloc(sizes[i]);
        if (q == NULL) {
            ok = 0;
            continue;
        }
        fill_pattern(q, sizes[i], i);
        ok &= find_corruption(q, sizes[i], i) == SIZE_MAX;
        free(q);
    }
    thread_after = ok ? 1 : -1;
    return NULL;
}

int main(int argc, char **argv) {
    require_rulloc();
    CHECK(argc == 2, "usage: oom_limits HEADROOM_MIB");
    size_t headroom = (size_t)strtoul(argv[1], NULL, 10) * MIB;
    printf("oom_limits: start, headroom %zu MiB\n", headroom / MIB);
    fflush(stdout);

    /* Blocks that must survive failed reallocations. */
    uint8_t *small = malloc(64), *large = malloc(MIB), *huge = malloc(3 * MIB);
    CHECK(small && large && huge, "setup allocations");
    fill_pattern(small, 64, 1);
    fill_pattern(large, MIB, 2);
    fill_pattern(huge, 3 * MIB, 3);

    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, late_thread, NULL) == 0, "pthread_create");

    size_t in_use = address_space_in_use();
    struct rlimit limit = {in_use + headroom, in_use + headroom};
    CHECK(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit: %s", strerror(errno));

    void *list = NULL;
    /* 1 MiB blocks first (so that their count measures the headroom), then
     * every kind in turn. */
    size_t mibs = exhaust_mib(&list);
    struct kind kinds[] = {
        {MALLOC, 64 * KIB, 16, "malloc", 0, 0},
        {CALLOC, 24, 16, "calloc", 0, 0},
        {POSIX_MEMALIGN, 64, 4096, "posix_memalign", 0, 0},
        {ALIGNED_ALLOC, 4096, 64 * KIB, "aligned_alloc", 0, 0},
        {CALLOC, 200 * KIB, 16, "calloc", 0, 0},
        {MALLOC, 64, 16, "malloc", 0, 0},
    };
    size_t nkinds = sizeof kinds / sizeof kinds[0];
    exhaust_all(&list, kinds, nkinds);
    CHECK(mibs >= headroom / MIB / 2, "only %zu MiB under a %zu MiB headroom", mibs, headroom / MIB);

    /* Exhausted: everything that needs new memory fails cleanly. */
    EXPECT_ENOMEM(malloc(64));
    EXPECT_ENOMEM(malloc(MIB + MIB / 2));
    EXPECT_ENOMEM(malloc(64 * MIB));
    EXPECT_ENOMEM(calloc(1, 24));
    EXPECT_ENOMEM(calloc(16, 4 * MIB));
    EXPECT_ENOMEM(aligned_alloc(4096, 64));
    EXPECT_ENOMEM(aligned_alloc(2 * MIB, 4 * MIB));
    EXPECT_ENOMEM(memalign(GIB, 64));
    EXPECT_ENOMEM(valloc(64 * MIB));
    EXPECT_ENOMEM(pvalloc(64 * MIB));
    {
        void *sentinel = (void *)0x77, *p = sentinel;
        errno = 0;
        int rc = posix_memalign(&p, 2 * MIB, 4 * MIB);
        CHECK(rc == ENOMEM && p == sentinel, "posix_memalign under OOM = %d", rc);
    }
    /* Failed growth keeps every old block. */
    EXPECT_ENOMEM(realloc(small, MIB));
    EXPECT_ENOMEM(realloc(small, 64 * MIB));
    EXPECT_ENOMEM(realloc(large, 64 * MIB));
    EXPECT_ENOMEM(realloc(huge, GIB));
    EXPECT_ENOMEM(reallocarray(large, 16, 4 * MIB));
    CHECK_PATTERN(small, 64, 1, "small block after failed reallocs");
    CHECK_PATTERN(large, MIB, 2, "large block after failed reallocs");
    CHECK_PATTERN(huge, 3 * MIB, 3, "huge block after failed reallocs");

    /* The late thread's first allocation. */
    __atomic_store_n(&step, 1, __ATOMIC_RELEASE);
    wait_step(2);
    CHECK(thread_under_oom == 1 || thread_under_oom == 2, "thread under OOM: %d", thread_under_oom);

    /* Free everything: allocation works again. */
    release(&list);
    malloc_trim(0);
    void *probe = malloc(64);
    CHECK(probe != NULL, "malloc(64) after freeing everything");
    free(probe);
    uint8_t *grown = realloc(large, 2 * MIB);
    if (grown != NULL) {
        large = grown;
        fill_pattern(large + MIB, MIB, 4);
    } else {
        CHECK(headroom < ROOMY, "realloc grow after freeing: errno %d", errno);
    }
    CHECK_PATTERN(large, MIB, 2, "grown block's prefix");
    free(small);
    free(large);
    free(huge);
    malloc_trim(0);
    __atomic_store_n(&step, 3, __ATOMIC_RELEASE);
    CHECK(pthread_join(thread, NULL) == 0, "pthread_join");
    CHECK(thread_after == 1 || headroom < ROOMY, "the thread could not allocate after memory was freed");

    size_t again = exhaust_mib(&list);
    if (headroom >= ROOMY) {
        CHECK(again * 2 >= mibs, "only %zu MiB the second time, %zu the first: memory was not reused", again, mibs);
    }
    release(&list);
    void *last = malloc(100);
    CHECK(last != NULL, "malloc(100) at the end");
    free(last);

    printf("oom_limits: ok, headroom %zu MiB: %zu x 1 MiB, then", headroom / MIB, mibs);
    for (size_t i = 0; i < nkinds; i++) printf(" %zu x %s(%zu)", kinds[i].count, kinds[i].what, kinds[i].size);
    printf("; %zu x 1 MiB again; thread under OOM: %s\n", again, thread_under_oom == 1 ? "NULL/ENOMEM" : "a block");
    return 0;
}
