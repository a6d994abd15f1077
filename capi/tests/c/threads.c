/* Content integrity across threads, with cross-thread frees.
 *
 * PRODUCERS threads allocate blocks of mixed sizes (1 B .. 4 MiB, through
 * malloc, calloc, realloc growth, aligned_alloc and posix_memalign), fill
 * each with a pattern derived from a per-block seed and hand it to CONSUMERS
 * threads through a bounded queue. Consumers verify every byte, sometimes
 * realloc (checking the kept prefix), and free: nearly every free is a
 * cross-thread free. Producers also keep a private stash of blocks that they
 * verify and free themselves, so same-thread and cross-thread frees mix in
 * the same regions.
 *
 * Usage: threads [blocks_per_producer]
 */
#include "common.h"

#include <pthread.h>

#define PRODUCERS 2
#define CONSUMERS 2
#define QUEUE_CAP 256
#define STASH 64
#define MAX_BLOCK (4u << 20)

struct item {
    uint8_t *ptr;
    size_t size;
    uint64_t seed;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    struct item items[QUEUE_CAP];
    size_t head, count;
} queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0}}, 0, 0};

static size_t blocks_per_producer = 20000;

static void push(struct item it) {
    pthread_mutex_lock(&queue.lock);
    while (queue.count == QUEUE_CAP) pthread_cond_wait(&queue.not_full, &queue.lock);
    queue.items[(queue.head + queue.count) % QUEUE_CAP] = it;
    queue.count++;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
}

static struct item pop(void) {
    pthread_mutex_lock(&queue.lock);
    while (queue.count == 0) pthread_cond_wait(&queue.not_empty, &queue.lock);
    struct item it = queue.items[queue.head];
    queue.head = (queue.head + 1) % QUEUE_CAP;
    queue.count--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return it;
}

/* Mostly small, some medium, a few large and a very few up to 4 MiB. */
static size_t random_size(uint64_t *rng) {
    uint64_t r = rng_below(rng, 1000);
    if (r < 700) return 1 + rng_below(rng, 256);
    if (r < 950) return 257 + rng_below(rng, 16 * 1024);
    if (r < 996) return 16 * 1024 + rng_below(rng, 256 * 1024);
    return 256 * 1024 + rng_below(rng, MAX_BLOCK - 256 * 1024 + 1);
}

/* Allocates `size` bytes one of several ways, checks what it can, and
 * fills the block with the pattern of `seed`. */
static uint8_t *make_block(size_t size, uint64_t seed, uint64_t *rng) {
    uint8_t *p = NULL;
    switch (rng_below(rng, 8)) {
    case 0: {
        p = calloc(1, size);
        CHECK(p != NULL, "calloc(1, %zu)", size);
        for (size_t i = 0; i < size; i++) CHECK(p[i] == 0, "calloc(%zu) byte %zu not zero", size, i);
        break;
    }
    case 1: {
        /* Grow a smaller block and check its contents moved along. */
        size_t small = 1 + size / 3;
        p = malloc(small);
        CHECK(p != NULL, "malloc(%zu)", small);
        fill_pattern(p, small, seed ^ 0xABCDEF);
        p = realloc(p, size);
        CHECK(p != NULL, "realloc to %zu", size);
        CHECK_PATTERN(p, small < size ? small : size, seed ^ 0xABCDEF, "realloc grow");
        break;
    }
    case 2: {
        size_t align = (size_t)64 << rng_below(rng, 6);
        p = aligned_alloc(align, size);
        CHECK(p != NULL && is_aligned(p, align), "aligned_alloc(%zu, %zu) = %p", align, size, (void *)p);
        break;
    }
    case 3: {
        void *q = NULL;
        int rc = posix_memalign(&q, 32, size);
        CHECK(rc == 0 && is_aligned(q, 32), "posix_memalign(32, %zu) = %d", size, rc);
        p = q;
        break;
    }
    default:
        p = malloc(size);
        CHECK(p != NULL, "malloc(%zu)", size);
        CHECK(is_aligned(p, malloc_alignment(size)), "malloc(%zu) = %p misaligned", size, (void *)p);
    }
    CHECK(malloc_usable_size(p) >= size, "usable %zu < %zu", malloc_usable_size(p), size);
    fill_pattern(p, size, seed);
    return p;
}

static void *producer(void *arg) {
    uint64_t id = (uintptr_t)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ULL * (id + 1);
    struct item stash[STASH] = {{0}};
    for (size_t n = 0; n < blocks_per_producer; n++) {
        size_t size = random_size(&rng);
        uint64_t seed = rng_next(&rng);
        uint8_t *p = make_block(size, seed, &rng);
        struct item it = {p, size, seed};
        if (rng_below(&rng, 4) == 0) {
            /* Keep it for a while and free it on this thread. */
            struct item *slot = &stash[rng_below(&rng, STASH)];
            if (slot->ptr != NULL) {
                CHECK_PATTERN(slot->ptr, slot->size, slot->seed, "producer stash");
                free(slot->ptr);
            }
            *slot = it;
        } else {
            push(it);
        }
    }
    for (size_t i = 0; i < STASH; i++) {
        if (stash[i].ptr != NULL) {
            CHECK_PATTERN(stash[i].ptr, stash[i].size, stash[i].seed, "producer stash at end");
            free(stash[i].ptr);
        }
    }
    return NULL;
}

static unsigned long consumed[CONSUMERS];

static void *consumer(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    uint64_t rng = 0xD1B54A32D192ED03ULL * (id + 7);
    for (;;) {
        struct item it = pop();
        if (it.ptr == NULL) break;
        CHECK_PATTERN(it.ptr, it.size, it.seed, "consumer");
        uint64_t r = rng_below(&rng, 10);
        if (r == 0) {
            /* Shrink or grow the block, on another thread than the one that
             * allocated it; the common prefix must survive. */
            size_t new_size = rng_below(&rng, 2) ? 1 + it.size / 2 : it.size + 1 + rng_below(&rng, 4096);
            uint8_t *q = realloc(it.ptr, new_size);
            CHECK(q != NULL, "realloc(%zu -> %zu)", it.size, new_size);
            CHECK_PATTERN(q, new_size < it.size ? new_size : it.size, it.seed, "consumer realloc");
            free(q);
        } else if (r == 1) {
            cfree(it.ptr);
        } else {
            free(it.ptr);
        }
        consumed[id]++;
    }
    return NULL;
}

int main(int argc, char **argv) {
    require_rulloc();
    if (argc > 1) blocks_per_producer = strtoul(argv[1], NULL, 10);

    pthread_t producers[PRODUCERS], consumers[CONSUMERS];
    for (uintptr_t i = 0; i < CONSUMERS; i++)
        CHECK(pthread_create(&consumers[i], NULL, consumer, (void *)i) == 0, "pthread_create");
    for (uintptr_t i = 0; i < PRODUCERS; i++)
        CHECK(pthread_create(&producers[i], NULL, producer, (void *)i) == 0, "pthread_create");
    for (int i = 0; i < PRODUCERS; i++) pthread_join(producers[i], NULL);
    for (int i = 0; i < CONSUMERS; i++) push((struct item){NULL, 0, 0});
    unsigned long total = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(consumers[i], NULL);
        total += consumed[i];
    }
    CHECK(total > 0, "nothing was consumed");
    printf("threads: ok, %lu blocks crossed threads\n", total);
    return 0;
}
