/* Every alignment function: posix_memalign, aligned_alloc, memalign, valloc,
 * pvalloc (plus malloc's own alignment), for alignments 8 .. 1 MiB and a
 * 1 GiB one. Blocks must be aligned, fully writable, not overlap (all blocks
 * of one round stay live and are checked before being freed), and invalid
 * alignments must fail the way glibc fails.
 */
#include "common.h"

#define MAX_LIVE 512

static struct {
    uint8_t *ptr;
    size_t size;
    uint64_t seed;
} live[MAX_LIVE];
static size_t live_count;
static uint64_t rng = 12345;

static void keep(void *p, size_t size, size_t align, const char *what) {
    CHECK(p != NULL, "%s(align %zu, size %zu) returned NULL", what, align, size);
    CHECK(is_aligned(p, align), "%s(align %zu, size %zu) = %p is misaligned", what, align, size, p);
    CHECK(malloc_usable_size(p) >= size, "%s(align %zu, size %zu): usable size %zu", what, align, size,
          malloc_usable_size(p));
    CHECK(live_count < MAX_LIVE, "too many live blocks");
    uint64_t seed = rng_next(&rng);
    fill_pattern(p, size, seed);
    live[live_count].ptr = p;
    live[live_count].size = size;
    live[live_count].seed = seed;
    live_count++;
}

/* Verifies every live block, then frees them in a shuffled order. */
static void release_all(const char *what) {
    for (size_t i = 0; i < live_count; i++) CHECK_PATTERN(live[i].ptr, live[i].size, live[i].seed, what);
    for (size_t i = live_count; i > 1; i--) {
        size_t j = rng_below(&rng, i);
        uint8_t *p = live[i - 1].ptr;
        live[i - 1].ptr = live[j].ptr;
        live[j].ptr = p;
    }
    for (size_t i = 0; i < live_count; i++) free(live[i].ptr);
    live_count = 0;
}

int main(void) {
    require_rulloc();
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned long checked = 0;

    /* posix_memalign, aligned_alloc, memalign: alignments 8 .. 1 MiB. */
    for (size_t align = 8; align <= (1u << 20); align *= 2) {
        const size_t sizes[] = {0, 1, 8, 24, 100, 4096, align - 1, align, align + 1, align * 3 / 2};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t size = sizes[s];
            void *p = (void *)0x1;
            int rc = posix_memalign(&p, align, size);
            CHECK(rc == 0, "posix_memalign(%zu, %zu) returned %d", align, size, rc);
            keep(p, size, align, "posix_memalign");
            keep(aligned_alloc(align, size), size, align, "aligned_alloc");
            keep(memalign(align, size), size, align, "memalign");
            checked += 3;
        }
        release_all("aligned blocks");
    }

    /* A huge alignment: only the first and last pages get touched. */
    {
        size_t align = (size_t)1 << 30;
        uint8_t *p = aligned_alloc(align, 2 * page);
        CHECK(p != NULL && is_aligned(p, align), "aligned_alloc(1 GiB, 2 pages) = %p", (void *)p);
        p[0] = 1;
        p[2 * page - 1] = 2;
        free(p);
        checked++;
    }

    /* valloc / pvalloc: page-aligned, pvalloc rounds the size up. */
    {
        const size_t sizes[] = {0, 1, 100, page - 1, page, page + 1, 10 * page + 3, 1u << 20};
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t size = sizes[s];
            keep(valloc(size), size, page, "valloc");
            size_t rounded = (size + page - 1) / page * page;
            void *p = pvalloc(size);
            keep(p, rounded, page, "pvalloc");
            checked += 2;
        }
        release_all("page-aligned blocks");
    }

    /* memalign rounds an alignment that is not a power of two up (glibc). */
    {
        const size_t aligns[] = {0, 1, 3, 24, 100, 1000, 5000, 65537};
        for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
            size_t want = 8;
            while (want < aligns[a]) want *= 2;
            keep(memalign(aligns[a], 40), 40, want < 16 ? 16 : want, "memalign(non-power-of-two)");
            checked++;
        }
        release_all("memalign rounded");
    }

    /* malloc, calloc and realloc give 16 bytes (8 for <= 8-byte blocks). */
    for (size_t size = 0; size <= 600; size++) {
        keep(malloc(size), size, malloc_alignment(size), "malloc");
        uint8_t *z = calloc(size, 1);
        CHECK(z != NULL && is_aligned(z, malloc_alignment(size)), "calloc(%zu)", size);
        for (size_t i = 0; i < size; i++) CHECK(z[i] == 0, "calloc(%zu) byte %zu", size, i);
        keep(z, size, malloc_alignment(size), "calloc");
        if (live_count > MAX_LIVE - 4) release_all("malloc blocks");
        checked += 2;
    }
    release_all("malloc blocks");

    /* Invalid alignments. */
    {
        const size_t bad[] = {0, 1, 2, 4, 12, 24, 40, 48, 1000, 4097, 8 * 3, 8 * 5, SIZE_MAX, SIZE_MAX / 2 + 9};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            void *sentinel = (void *)0x1234;
            void *p = sentinel;
            errno = EDOM;
            int rc = posix_memalign(&p, bad[i], 64);
            CHECK(rc == EINVAL, "posix_memalign(%zu) returned %d, want EINVAL", bad[i], rc);
            CHECK(errno == EDOM, "posix_memalign(%zu) changed errno to %d", bad[i], errno);
            CHECK(p == sentinel, "posix_memalign(%zu) wrote *memptr on failure", bad[i]);
            checked++;
        }
        const size_t bad_aligned[] = {0, 3, 24, 48, 1000, 4097, SIZE_MAX};
        for (size_t i = 0; i < sizeof bad_aligned / sizeof bad_aligned[0]; i++) {
            errno = 0;
            void *p = aligned_alloc(bad_aligned[i], 64);
            CHECK(p == NULL && errno == EINVAL, "aligned_alloc(%zu) = %p errno %d, want NULL/EINVAL", bad_aligned[i], p,
                  errno);
            checked++;
        }
        const size_t bad_memalign[] = {SIZE_MAX / 2 + 2, SIZE_MAX};
        for (size_t i = 0; i < sizeof bad_memalign / sizeof bad_memalign[0]; i++) {
            errno = 0;
            void *p = memalign(bad_memalign[i], 64);
            CHECK(p == NULL && errno == EINVAL, "memalign(%zu) = %p errno %d, want NULL/EINVAL", bad_memalign[i], p, errno);
            checked++;
        }
    }

    printf("align: ok, %lu checks\n", checked);
    return 0;
}
