/* Helpers shared by the C test programs run against librulloc.
 *
 * Every program calls require_rulloc() first: it checks with dladdr() that
 * the allocation functions the process actually uses come from the file named
 * by the RULLOC_EXPECT environment variable (the harness sets it to the path
 * of librulloc.so, or of the executable for the static link), so that no test
 * can pass by silently running on glibc's malloc.
 *
 * Exit codes: 0 success, 1 a check failed, 2 bad setup, 3 not running on
 * rulloc.
 */
#ifndef RULLOC_TEST_COMMON_H
#define RULLOC_TEST_COMMON_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* glibc removed cfree from its API (only a compat symbol is left, which
 * cannot be linked against), so call librulloc's through dlsym. */
static inline void cfree(void *ptr) {
    static void (*fn)(void *);
    if (fn == NULL) fn = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    if (fn == NULL) {
        fprintf(stderr, "cfree not found\n");
        exit(2);
    }
    fn(ptr);
}

#define FAIL(...)                                                            \
    do {                                                                     \
        fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);              \
        fprintf(stderr, __VA_ARGS__);                                        \
        fputc('\n', stderr);                                                 \
        exit(1);                                                             \
    } while (0)

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, \
                    #cond);                                                  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

/* The functions the library must export (and nothing else). */
static const char *const RULLOC_EXPORTS[] = {
    "malloc",   "free",          "calloc",  "realloc",        "reallocarray",
    "posix_memalign", "aligned_alloc", "memalign", "valloc",  "pvalloc",
    "malloc_usable_size", "malloc_trim", "cfree",
};

/* Exits with status 3 unless every allocation function resolves to the file
 * named by $RULLOC_EXPECT. With verbose != 0, prints where each comes from. */
static inline void require_rulloc_verbose(int verbose) {
    const char *expect = getenv("RULLOC_EXPECT");
    if (expect == NULL || *expect == '\0') {
        fprintf(stderr, "RULLOC_EXPECT is not set\n");
        exit(2);
    }
    char expect_real[4096];
    if (realpath(expect, expect_real) == NULL) {
        fprintf(stderr, "RULLOC_EXPECT=%s: %s\n", expect, strerror(errno));
        exit(2);
    }
    int wrong = 0;
    for (size_t i = 0; i < sizeof RULLOC_EXPORTS / sizeof RULLOC_EXPORTS[0]; i++) {
        const char *name = RULLOC_EXPORTS[i];
        void *sym = dlsym(RTLD_DEFAULT, name);
        Dl_info info;
        char real[4096];
        const char *file = "(unresolved)";
        if (sym != NULL && dladdr(sym, &info) != 0 && info.dli_fname != NULL) {
            file = info.dli_fname;
            if (realpath(info.dli_fname, real) != NULL) file = real;
        }
        int ok = strcmp(file, expect_real) == 0;
        if (verbose || !ok) {
            fprintf(ok ? stdout : stderr, "%-20s %s %s\n", name, ok ? "from" : "NOT FROM RULLOC, from", file);
        }
        wrong += !ok;
    }
    if (wrong) {
        fprintf(stderr, "%d allocation functions do not come from %s\n", wrong, expect_real);
        exit(3);
    }
}

static inline void require_rulloc(void) { require_rulloc_verbose(0); }

/* xorshift64*: a small deterministic PRNG, one state per thread. */
static inline uint64_t rng_next(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_below(uint64_t *state, uint64_t n) { return rng_next(state) % n; }

/* The byte stored at offset i of a block tagged `seed`. */
static inline uint8_t pattern_byte(uint64_t seed, size_t i) {
    return (uint8_t)(seed ^ (i * 131u) ^ (i >> 9));
}

static inline void fill_pattern(void *p, size_t size, uint64_t seed) {
    uint8_t *b = p;
    for (size_t i = 0; i < size; i++) b[i] = pattern_byte(seed, i);
}

/* Returns the first offset that does not hold the pattern, or SIZE_MAX. */
static inline size_t find_corruption(const void *p, size_t size, uint64_t seed) {
    const uint8_t *b = p;
    for (size_t i = 0; i < size; i++) {
        if (b[i] != pattern_byte(seed, i)) return i;
    }
    return SIZE_MAX;
}

#define CHECK_PATTERN(p, size, seed, what)                                        \
    do {                                                                         \
        size_t bad_ = find_corruption((p), (size), (seed));                      \
        CHECK(bad_ == SIZE_MAX, "%s: block %p of %zu bytes corrupted at offset %zu " \
              "(0x%02x, expected 0x%02x)", (what), (void *)(p), (size_t)(size), bad_, \
              ((const uint8_t *)(p))[bad_], pattern_byte((seed), bad_));          \
    } while (0)

static inline int is_aligned(const void *p, size_t align) {
    return ((uintptr_t)p & (align - 1)) == 0;
}

/* The alignment librulloc promises for a plain allocation of n bytes. */
static inline size_t malloc_alignment(size_t n) { return n <= 8 ? 8 : 16; }

#endif
