/* errno on every failure, and the edge-case semantics of the C API.
 *
 * Impossible requests (more than PTRDIFF_MAX bytes, calloc/reallocarray
 * overflow) must return NULL with errno == ENOMEM without crashing, realloc
 * failure must leave the old block intact, and the allocator must work
 * normally afterwards.
 */
#include "common.h"

/* volatile: the compiler must not see the sizes (no folding, no warnings). */
static volatile size_t size_max = SIZE_MAX;
static volatile size_t ptrdiff_max = PTRDIFF_MAX;

#define EXPECT_ENOMEM(expr)                                                   \
    do {                                                                     \
        errno = 0;                                                           \
        void *r_ = (expr);                                                   \
        CHECK(r_ == NULL, "%s returned %p, want NULL", #expr, r_);           \
        CHECK(errno == ENOMEM, "%s: errno %d, want ENOMEM", #expr, errno);   \
        checked++;                                                           \
    } while (0)

int main(void) {
    require_rulloc();
    unsigned long checked = 0;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);

    /* Impossible sizes. */
    EXPECT_ENOMEM(malloc(size_max));
    EXPECT_ENOMEM(malloc(size_max - 15));
    EXPECT_ENOMEM(malloc(ptrdiff_max));
    EXPECT_ENOMEM(malloc(ptrdiff_max + 1));
    EXPECT_ENOMEM(calloc(1, size_max));
    EXPECT_ENOMEM(calloc(size_max, 1));
    EXPECT_ENOMEM(calloc(size_max / 2 + 1, 2)); /* overflows */
    EXPECT_ENOMEM(calloc(size_max / 3, 4)); /* overflows */
    EXPECT_ENOMEM(aligned_alloc(16, size_max));
    EXPECT_ENOMEM(aligned_alloc((size_t)1 << 62, (size_t)1 << 62));
    EXPECT_ENOMEM(memalign(64, size_max));
    EXPECT_ENOMEM(valloc(size_max));
    EXPECT_ENOMEM(pvalloc(size_max)); /* rounding up overflows */
    EXPECT_ENOMEM(pvalloc(size_max - page / 2));
    EXPECT_ENOMEM(realloc(NULL, size_max));
    EXPECT_ENOMEM(reallocarray(NULL, size_max, 2));

    /* realloc / reallocarray failure keeps the old block. */
    {
        uint8_t *p = malloc(1000);
        CHECK(p != NULL, "malloc(1000)");
        fill_pattern(p, 1000, 77);
        EXPECT_ENOMEM(realloc(p, size_max));
        EXPECT_ENOMEM(realloc(p, ptrdiff_max));
        EXPECT_ENOMEM(reallocarray(p, size_max / 2, 3)); /* overflows */
        EXPECT_ENOMEM(reallocarray(p, ptrdiff_max, 1));
        CHECK_PATTERN(p, 1000, 77, "block after failed realloc");
        CHECK(malloc_usable_size(p) >= 1000, "usable size after failed realloc");
        p = reallocarray(p, 500, 4);
        CHECK(p != NULL, "reallocarray(500, 4)");
        CHECK_PATTERN(p, 1000, 77, "block after reallocarray");
        free(p);
        checked++;
    }

    /* posix_memalign: returns the error, leaves *memptr alone. */
    {
        void *sentinel = (void *)0x5678, *p = sentinel;
        int rc = posix_memalign(&p, 64, size_max);
        CHECK(rc == ENOMEM && p == sentinel, "posix_memalign(64, SIZE_MAX) = %d, p %p", rc, p);
        errno = EDOM;
        rc = posix_memalign(&p, 24, 64);
        CHECK(rc == EINVAL && p == sentinel && errno == EDOM, "posix_memalign(24) = %d errno %d", rc, errno);
        rc = posix_memalign(&p, 0, 64);
        CHECK(rc == EINVAL && p == sentinel && errno == EDOM, "posix_memalign(0) = %d errno %d", rc, errno);
        checked += 3;
    }

    /* Edge cases that are not failures. */
    {
        void *a = malloc(0), *b = malloc(0);
        CHECK(a != NULL && b != NULL && a != b, "malloc(0) must return unique pointers: %p %p", a, b);
        free(a);
        free(b);
        free(NULL);
        cfree(NULL);
        CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));

        uint8_t *p = realloc(NULL, 100); /* = malloc(100) */
        CHECK(p != NULL, "realloc(NULL, 100)");
        fill_pattern(p, 100, 5);
        errno = 0;
        CHECK(realloc(p, 0) == NULL, "realloc(p, 0) must free and return NULL (glibc)");
        CHECK(errno == 0, "realloc(p, 0) set errno %d", errno);

        p = reallocarray(NULL, 10, 10);
        CHECK(p != NULL, "reallocarray(NULL, 10, 10)");
        CHECK(reallocarray(p, 0, 10) == NULL, "reallocarray(p, 0, n) frees and returns NULL");

        void *z = realloc(NULL, 0);
        CHECK(z != NULL, "realloc(NULL, 0) = malloc(0) must not be NULL");
        cfree(z);

        void *c = calloc(0, 5);
        CHECK(c != NULL, "calloc(0, 5)");
        free(c);

        /* calloc zeroes memory that was dirty before. */
        for (size_t size = 1; size <= (8u << 20); size = size * 3 + 1) {
            uint8_t *dirty = malloc(size);
            CHECK(dirty != NULL, "malloc(%zu)", size);
            memset(dirty, 0xFF, size);
            free(dirty);
            uint8_t *clean = calloc(size, 1);
            CHECK(clean != NULL, "calloc(%zu)", size);
            for (size_t i = 0; i < size; i++) CHECK(clean[i] == 0, "calloc(%zu) byte %zu is %u", size, i, clean[i]);
            free(clean);
        }

        int trimmed = malloc_trim(0);
        CHECK(trimmed == 0 || trimmed == 1, "malloc_trim returned %d", trimmed);
        checked += 10;
    }

    /* Still works after all those failures. */
    for (size_t size = 1; size < (1u << 22); size *= 2) {
        uint8_t *p = malloc(size);
        CHECK(p != NULL, "malloc(%zu) after failures", size);
        fill_pattern(p, size, size);
        CHECK_PATTERN(p, size, size, "after failures");
        free(p);
    }

    printf("errno: ok, %lu checks\n", checked);
    return 0;
}
