/* Single-threaded malloc/free of mixed small sizes around a live set, like
 * cfrac's bignums or espresso's cubes: every step makes a few short-lived
 * temporaries (freed LIFO, the way expression temporaries die) and sometimes
 * replaces a random member of a long-lived set; every PHASE steps half of
 * the live set is dropped at once and refilled with another size mix.
 * Blocks are written and read back into a checksum.
 *
 * Usage: mixed [scale]
 */
#include "bench.h"

#define LIVE 50000
#define PHASE 400000

struct block {
    uint32_t *ptr;
    size_t words;
};

static struct block live[LIVE];

/* Mostly 16..128 bytes; the mix shifts with the phase. */
static size_t random_size(uint64_t *rng, unsigned phase) {
    uint64_t r = rnd_below(rng, 100);
    size_t base = 16 + 8 * (phase % 4);
    if (r < 70) return base + 4 * rnd_below(rng, 24);
    if (r < 95) return 128 + 8 * rnd_below(rng, 48);
    return 512 + 16 * rnd_below(rng, 96);
}

static uint64_t make(struct block *b, size_t size, uint64_t seed) {
    b->words = size / 4;
    b->ptr = xmalloc(size);
    for (size_t i = 0; i < b->words; i++) b->ptr[i] = (uint32_t)(seed + i);
    return seed;
}

static uint64_t drop(struct block *b) {
    if (b->ptr == NULL) return 0;
    uint64_t sum = b->ptr[0] ^ ((uint64_t)b->ptr[b->words - 1] << 32);
    free(b->ptr);
    b->ptr = NULL;
    return sum;
}

int main(int argc, char **argv) {
    size_t steps = (size_t)(3000000 * scale_arg(argc, argv));
    uint64_t rng = 7, sum = 0;
    for (size_t i = 0; i < LIVE; i++) make(&live[i], random_size(&rng, 0), rnd(&rng));
    for (size_t step = 0; step < steps; step++) {
        unsigned phase = (unsigned)(step / PHASE);
        if (step % PHASE == 0 && step > 0) {
            for (size_t i = phase % 2; i < LIVE; i += 2) {
                sum += drop(&live[i]);
                make(&live[i], random_size(&rng, phase), rnd(&rng));
            }
        }
        struct block tmp[4];
        size_t n = 1 + rnd_below(&rng, 4);
        for (size_t i = 0; i < n; i++) make(&tmp[i], random_size(&rng, phase), rnd(&rng));
        for (size_t i = n; i-- > 0;) sum += drop(&tmp[i]);
        if (rnd_below(&rng, 3) == 0) {
            struct block *b = &live[rnd_below(&rng, LIVE)];
            sum += drop(b);
            make(b, random_size(&rng, phase), rnd(&rng));
        }
    }
    for (size_t i = 0; i < LIVE; i++) sum += drop(&live[i]);
    printf("mixed: %zu steps, %d live, checksum %016llx\n", steps, LIVE, (unsigned long long)sum);
    return 0;
}
