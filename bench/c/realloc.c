/* realloc growth: BUFFERS buffers grow side by side (so a neighbour is often
 * in the way of growing in place) by appending small chunks, the way strings
 * and vectors are built. Half grow with realloc on every append (exact
 * size), half double their capacity. A finished buffer (target length
 * mostly under 4 KiB, sometimes up to 1 MiB) is checked, shrunk to fit,
 * checked again and freed, and a new one starts in its place.
 *
 * Usage: realloc [scale]
 */
#include "bench.h"

#define BUFFERS 512

struct buffer {
    uint8_t *data;
    size_t len, cap, target;
    uint64_t seed;
    int doubling;
};

static struct buffer bufs[BUFFERS];

static uint8_t byte_at(uint64_t seed, size_t i) { return (uint8_t)(seed ^ (i * 0x9Du) ^ (i >> 8)); }

static void start(struct buffer *b, uint64_t *rng, size_t index) {
    uint64_t r = rnd_below(rng, 1000);
    b->target = r < 900 ? 16 + rnd_below(rng, 4096) : r < 995 ? 4096 + rnd_below(rng, 64 * 1024)
                                                               : 64 * 1024 + rnd_below(rng, 1 << 20);
    b->seed = rnd(rng);
    b->doubling = (int)(index % 2);
    b->len = 0;
    b->cap = 0;
    b->data = NULL;
}

static uint64_t finish(struct buffer *b) {
    uint64_t sum = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] != byte_at(b->seed, i)) {
            fprintf(stderr, "realloc: buffer of %zu bytes corrupted at %zu\n", b->len, i);
            exit(1);
        }
    }
    if (b->cap != b->len) b->data = xrealloc(b->data, b->len); /* shrink to fit */
    for (size_t i = 0; i < b->len; i += 61) sum += (uint64_t)b->data[i] * (i + 1);
    free(b->data);
    return sum + b->len;
}

int main(int argc, char **argv) {
    size_t appends = (size_t)(4000000 * scale_arg(argc, argv));
    uint64_t rng = 3, sum = 0, finished = 0;
    for (size_t i = 0; i < BUFFERS; i++) start(&bufs[i], &rng, i);
    for (size_t n = 0; n < appends; n++) {
        size_t index = rnd_below(&rng, BUFFERS);
        struct buffer *b = &bufs[index];
        size_t chunk = 1 + rnd_below(&rng, rnd_below(&rng, 8) == 0 ? 512 : 24);
        size_t need = b->len + chunk;
        if (need > b->cap) {
            size_t cap = b->doubling ? (b->cap < 16 ? 16 : b->cap * 2) : need;
            while (cap < need) cap *= 2;
            b->data = xrealloc(b->data, cap);
            b->cap = cap;
        }
        for (size_t i = b->len; i < need; i++) b->data[i] = byte_at(b->seed, i);
        b->len = need;
        if (b->len >= b->target) {
            sum += finish(b);
            finished++;
            start(b, &rng, index);
        }
    }
    for (size_t i = 0; i < BUFFERS; i++) {
        if (bufs[i].data != NULL) sum += finish(&bufs[i]);
    }
    printf("realloc: %zu appends, %llu buffers finished, checksum %016llx\n", appends,
           (unsigned long long)finished, (unsigned long long)sum);
    return 0;
}
