/* Shared by the bench/c workloads (bench/ldpreload.sh): a deterministic
 * PRNG and a checked malloc. Every workload prints a checksum that depends
 * only on its inputs, never on addresses or timing, so that its output can
 * be compared across allocators.
 */
#ifndef RULLOC_BENCH_H
#define RULLOC_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: one state per thread. */
static inline uint64_t rnd(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t rnd_below(uint64_t *state, uint64_t n) { return rnd(state) % n; }

static inline void die(const char *what, size_t n) {
    fprintf(stderr, "%s(%zu) failed\n", what, n);
    exit(1);
}

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (p == NULL) die("malloc", n);
    return p;
}

static inline void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (q == NULL) die("realloc", n);
    return q;
}

/* Scale factor for the amount of work: argv[1] if given (a float). */
static inline double scale_arg(int argc, char **argv) {
    double s = argc > 1 ? atof(argv[1]) : 1.0;
    return s > 0 ? s : 1.0;
}

#endif
