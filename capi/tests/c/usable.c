/* malloc_usable_size(p) >= the requested size, and every usable byte is
 * really usable: each block is filled up to its usable size while its
 * neighbours (the last WINDOW blocks) stay live, and all of them are checked
 * before they are freed, so a usable size that overlaps another block or
 * metadata shows up as corruption. Sizes: every size 0..4096, then
 * geometrically (x1.125) up to 8 MiB, with the sizes just around each step;
 * through malloc, calloc, realloc, posix_memalign and aligned_alloc.
 */
#include "common.h"

#define WINDOW 64
/* At most this many bytes stay live in the window (big blocks evict older
 * ones early), to keep the test's memory use modest. */
#define WINDOW_BYTES ((size_t)48 << 20)

static struct {
    uint8_t *ptr;
    size_t usable;
    uint64_t seed;
} window[WINDOW];
static size_t next_slot;
static size_t live_bytes;
static uint64_t rng = 99;
static unsigned long checked;

static void retire(size_t slot) {
    if (window[slot].ptr == NULL) return;
    CHECK_PATTERN(window[slot].ptr, window[slot].usable, window[slot].seed, "usable bytes");
    free(window[slot].ptr);
    window[slot].ptr = NULL;
    live_bytes -= window[slot].usable;
}

static void check_block(uint8_t *p, size_t size, const char *what) {
    CHECK(p != NULL, "%s(%zu) returned NULL", what, size);
    size_t usable = malloc_usable_size(p);
    CHECK(usable >= size, "%s(%zu): malloc_usable_size = %zu", what, size, usable);
    size_t slot = next_slot++ % WINDOW;
    retire(slot);
    /* Evict the oldest blocks while over budget. */
    for (size_t older = 1; older < WINDOW && live_bytes + usable > WINDOW_BYTES; older++)
        retire((slot + older) % WINDOW);
    live_bytes += usable;
    window[slot].ptr = p;
    window[slot].usable = usable;
    window[slot].seed = rng_next(&rng);
    fill_pattern(p, usable, window[slot].seed);
    checked++;
}

static void try_size(size_t size) {
    check_block(malloc(size), size, "malloc");
    if (size <= (1u << 20) || size % 7 == 0) {
        check_block(calloc(1, size), size, "calloc");
        void *q = NULL;
        CHECK(posix_memalign(&q, 64, size) == 0, "posix_memalign(64, %zu)", size);
        check_block(q, size, "posix_memalign");
        check_block(aligned_alloc(4096, size), size, "aligned_alloc");
    }
    /* realloc a block to its own usable size: must keep the contents. */
    uint8_t *p = malloc(size);
    CHECK(p != NULL, "malloc(%zu)", size);
    size_t usable = malloc_usable_size(p);
    fill_pattern(p, usable, size);
    uint8_t *q = realloc(p, usable == 0 ? 1 : usable);
    CHECK(q != NULL, "realloc(%zu -> usable %zu)", size, usable);
    CHECK_PATTERN(q, usable, size, "realloc to usable size");
    check_block(q, usable, "realloc");
}

int main(void) {
    require_rulloc();
    for (size_t size = 0; size <= 4096; size++) try_size(size);
    for (size_t size = 4096; size <= (8u << 20); size = size + size / 8) {
        try_size(size - 1);
        try_size(size);
        try_size(size + 1);
    }
    for (size_t slot = 0; slot < WINDOW; slot++) retire(slot);
    printf("usable: ok, %lu blocks\n", checked);
    return 0;
}
