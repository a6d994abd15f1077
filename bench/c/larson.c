/* Larson-like server churn with cross-thread frees.
 *
 * THREADS threads each own an array of SLOTS blocks (sizes 16..1024 bytes,
 * skewed small). Each round, a thread replaces random slots: it checks and
 * frees the old block and allocates a new one of a random size, writing a
 * tag into its first and last words. Between rounds the threads pass their
 * arrays on (thread i takes thread i-1's), as Larson's threads hand their
 * blocks to their successor, so that most frees are of blocks another
 * thread allocated. Everything a thread does depends only on its seed and
 * the round, so the printed checksum is the same on every allocator.
 *
 * Usage: larson [scale]
 */
#include "bench.h"

#include <pthread.h>

#define THREADS 2
#define SLOTS 20000
#define ROUNDS 30

struct block {
    uint64_t *ptr;
    size_t words;
};

static struct block *arrays[THREADS];
static size_t ops_per_round;
static pthread_barrier_t barrier;
static uint64_t checksums[THREADS];

static size_t random_size(uint64_t *rng) {
    uint64_t r = rnd_below(rng, 100);
    if (r < 60) return 16 + rnd_below(rng, 49);   /* 16..64 */
    if (r < 90) return 65 + rnd_below(rng, 192);  /* 65..256 */
    return 257 + rnd_below(rng, 768);             /* 257..1024 */
}

static void fill(struct block *b, size_t size, uint64_t tag) {
    b->words = size / 8;
    b->ptr = xmalloc(size);
    b->ptr[0] = tag;
    b->ptr[b->words - 1] = ~tag;
}

static uint64_t retire(struct block *b) {
    if (b->ptr == NULL) return 0;
    uint64_t tag = b->ptr[0];
    if (b->ptr[b->words - 1] != ~tag) {
        fprintf(stderr, "larson: block of %zu words corrupted\n", b->words);
        exit(1);
    }
    free(b->ptr);
    b->ptr = NULL;
    return tag;
}

static void *worker(void *arg) {
    size_t id = (size_t)(uintptr_t)arg;
    uint64_t sum = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        /* This round's array: the one the previous thread used last round. */
        struct block *slots = arrays[(id + round) % THREADS];
        uint64_t rng = (uint64_t)id * 1000003u + round;
        for (size_t n = 0; n < ops_per_round; n++) {
            struct block *b = &slots[rnd_below(&rng, SLOTS)];
            sum += retire(b);
            fill(b, random_size(&rng), rnd(&rng));
        }
        pthread_barrier_wait(&barrier);
    }
    checksums[id] = sum;
    return NULL;
}

int main(int argc, char **argv) {
    ops_per_round = (size_t)(100000 * scale_arg(argc, argv));
    uint64_t rng = 42;
    for (size_t t = 0; t < THREADS; t++) {
        arrays[t] = calloc(SLOTS, sizeof(struct block));
        if (arrays[t] == NULL) die("calloc", SLOTS);
        for (size_t i = 0; i < SLOTS; i++) fill(&arrays[t][i], random_size(&rng), rnd(&rng));
    }
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t threads[THREADS];
    for (size_t t = 0; t < THREADS; t++)
        if (pthread_create(&threads[t], NULL, worker, (void *)(uintptr_t)t) != 0) die("pthread_create", t);
    uint64_t sum = 0;
    for (size_t t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        sum ^= checksums[t];
    }
    for (size_t t = 0; t < THREADS; t++) {
        for (size_t i = 0; i < SLOTS; i++) sum += retire(&arrays[t][i]);
        free(arrays[t]);
    }
    printf("larson: %d threads x %d rounds x %zu ops, checksum %016llx\n", THREADS, ROUNDS, ops_per_round,
           (unsigned long long)sum);
    return 0;
}
