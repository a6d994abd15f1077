/* Out of memory under setrlimit(RLIMIT_AS).
 *
 * The program caps its own address space at what it uses now plus HEADROOM,
 * then allocates 1 MiB blocks, then 4 KiB, then 64 B blocks until each
 * fails: every failure must be NULL with errno == ENOMEM (never a crash).
 * While memory is exhausted, big requests through every function must fail
 * the same way and realloc must keep the old block. After everything is
 * freed, allocation must work again, and about as much memory must be
 * available as the first time (the allocator reuses or returns what it got).
 *
 * Blocks are chained through their first word, so that the bookkeeping needs
 * no memory of its own.
 */
#include "common.h"

#include <sys/resource.h>

#define HEADROOM ((size_t)256 << 20)
#define MIB ((size_t)1 << 20)
#define BIG ((size_t)64 << 20)

/* Allocates blocks of `size` until malloc fails, chaining them onto *list.
 * Returns how many it got. */
static size_t exhaust(void **list, size_t size, size_t limit) {
    size_t count = 0;
    for (; count < limit; count++) {
        errno = 0;
        void **p = malloc(size);
        if (p == NULL) {
            CHECK(errno == ENOMEM, "malloc(%zu) failed with errno %d, want ENOMEM", size, errno);
            return count;
        }
        /* Touch the block's first and last byte. */
        ((uint8_t *)p)[size - 1] = 1;
        *p = *list;
        *list = p;
    }
    FAIL("malloc(%zu) never failed in %zu calls under RLIMIT_AS", size, limit);
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

int main(void) {
    require_rulloc();
    /* Allocate stdout's buffer now, not when memory is exhausted. */
    printf("oom: start\n");
    fflush(stdout);

    size_t in_use = address_space_in_use();
    struct rlimit limit = {in_use + HEADROOM, in_use + HEADROOM};
    CHECK(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit: %s", strerror(errno));

    void *list = NULL;
    size_t first_mib = exhaust(&list, MIB, 100000);
    CHECK(first_mib >= 16, "only %zu MiB could be allocated under a %zu MiB headroom", first_mib, HEADROOM >> 20);
    size_t pages = exhaust(&list, 4096, 10000000);
    size_t smalls = exhaust(&list, 64, 100000000);

    /* Exhausted: everything big fails cleanly. */
    uint8_t *kept = list; /* the most recent block: 64 bytes, first word is the chain */
    uint8_t saved[64];
    memcpy(saved, kept, 64);
#define EXPECT_ENOMEM(expr)                                                                   \
    do {                                                                                     \
        errno = 0;                                                                           \
        void *r_ = (expr);                                                                   \
        CHECK(r_ == NULL && errno == ENOMEM, "%s = %p, errno %d: want NULL/ENOMEM", #expr, r_, errno); \
    } while (0)
    EXPECT_ENOMEM(malloc(BIG));
    EXPECT_ENOMEM(calloc(1, BIG));
    EXPECT_ENOMEM(calloc(BIG / 8, 8));
    EXPECT_ENOMEM(aligned_alloc(MIB, BIG));
    EXPECT_ENOMEM(memalign(4096, BIG));
    EXPECT_ENOMEM(valloc(BIG));
    EXPECT_ENOMEM(pvalloc(BIG));
    EXPECT_ENOMEM(realloc(kept, BIG));
    EXPECT_ENOMEM(reallocarray(kept, BIG / 8, 8));
    CHECK(memcmp(saved, kept, 64) == 0, "failed realloc changed the old block");
    {
        void *sentinel = (void *)0x77, *p = sentinel;
        int rc = posix_memalign(&p, 4096, BIG);
        CHECK(rc == ENOMEM && p == sentinel, "posix_memalign under OOM = %d", rc);
    }

    /* Free everything: the allocator must be fully usable again. */
    release(&list);
    void *probe = malloc(MIB);
    CHECK(probe != NULL, "malloc(1 MiB) after freeing everything: errno %d", errno);
    free(probe);
    size_t second_mib = exhaust(&list, MIB, 100000);
    CHECK(second_mib * 2 >= first_mib, "only %zu MiB the second time, %zu the first: memory was not reused",
          second_mib, first_mib);
    release(&list);
    void *small = malloc(64);
    CHECK(small != NULL, "malloc(64) at the end");
    free(small);

    printf("oom: ok, %zu MiB + %zu pages + %zu small blocks, then %zu MiB again\n", first_mib, pages, smalls,
           second_mib);
    return 0;
}
